"""The dataset: find the files, read them, tell chat rows from prompt/completion rows, tokenize.

Files are read with pyarrow directly (not `datasets.load_dataset`) so that every failure names
the file and what is wrong with it, and nothing is cached outside the pod's scratch space.
Conversational rows (`messages`: a list of `{role, content}`) are rendered through the model's
own chat template and trained on whole; prompt/completion rows train on the completion only
(the prompt's labels are masked), which is what TRL does for the same format.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuning_job.config import DatasetSettings
from tuning_job.errors import DataError

FORMATS = {".parquet": "parquet", ".json": "json", ".jsonl": "jsonl", ".csv": "csv"}
PAIRS = (("prompt", "completion"), ("Context", "Response"), ("instruction", "output"),
         ("question", "answer"))
IGNORE = -100
DEFAULT_MAX_LEN = 2048


def find_files(path: str) -> list[Path]:
    """The dataset files at `path` (a file, or a directory searched recursively)."""
    root = Path(path)
    if root.is_file():
        if root.suffix.lower() not in FORMATS:
            raise DataError(f"{root.name}: unsupported dataset format; use one of "
                            f"{', '.join(FORMATS)}")
        return [root]
    if not root.is_dir():
        raise DataError(f"dataset path {path} does not exist")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in FORMATS
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not files:
        raise DataError(f"no dataset files ({', '.join(FORMATS)}) in {path}")
    return files


def read_table(file: Path) -> Any:
    """One file as a pyarrow Table; any parse error names the file."""
    import pyarrow as pa
    import pyarrow.csv
    import pyarrow.json
    import pyarrow.parquet

    kind = FORMATS[file.suffix.lower()]
    try:
        if kind == "parquet":
            return pyarrow.parquet.read_table(file)
        if kind == "csv":
            return pyarrow.csv.read_csv(file)
        if kind == "jsonl":
            return pyarrow.json.read_json(file) if file.stat().st_size else pa.table({})
        rows = json.loads(file.read_text() or "[]")
        if isinstance(rows, dict) and isinstance(rows.get("data"), list):
            rows = rows["data"]
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise DataError(f"{file.name}: a .json dataset must be a list of objects "
                            f"(use .jsonl for one object per line)")
        return pa.Table.from_pylist(rows)
    except DataError:
        raise
    except (pa.ArrowException, OSError, ValueError) as err:
        detail = " ".join(str(err).split())[:300]
        raise DataError(f"{file.name}: cannot read as {kind}: {detail}") from err


def load_rows(settings: DatasetSettings) -> Any:
    """All files as one `datasets.Dataset`; refuses an empty dataset."""
    import datasets
    import pyarrow as pa

    files = find_files(settings.path)
    tables = [read_table(f) for f in files]
    try:
        table = pa.concat_tables(tables, promote_options="permissive")
    except pa.ArrowException as err:
        raise DataError(f"dataset files {', '.join(f.name for f in files)} have incompatible "
                        f"columns: {err}") from err
    if table.num_rows == 0:
        raise DataError(f"dataset is empty: {', '.join(f.name for f in files)} hold no rows")
    return datasets.Dataset(table)


@dataclass(frozen=True)
class Layout:
    """Which columns hold the training text: the chat column `messages`, or (when it is None)
    the `prompt` and `completion` columns of text pairs."""

    messages: str | None = None
    prompt: str = ""
    completion: str = ""


def detect_layout(columns: Iterable[str], settings: DatasetSettings) -> Layout:
    names = list(columns)
    if settings.messages_column or (settings.messages_column is None and "messages" in names
                                    and not settings.context_column):
        col = settings.messages_column or "messages"
        if col not in names:
            raise DataError(f"missing column {col!r} (DatasetConfig.messages_column); "
                            f"found: {', '.join(names)}")
        return Layout(messages=col)
    if settings.context_column or settings.response_column:
        pair = (settings.context_column or "prompt", settings.response_column or "completion")
        missing = [c for c in pair if c not in names]
        if missing:
            raise DataError(f"missing column(s) {', '.join(map(repr, missing))}; found: "
                            f"{', '.join(names)}")
        return Layout(prompt=pair[0], completion=pair[1])
    for prompt, completion in PAIRS:
        if prompt in names and completion in names:
            return Layout(prompt=prompt, completion=completion)
    raise DataError(f"missing columns: need 'messages' (chat rows) or 'prompt' and 'completion' "
                    f"(or set DatasetConfig.messages_column / context_column+response_column); "
                    f"found: {', '.join(names) or 'no columns'}")


def _messages(value: Any, row: int) -> list[dict[str, str]]:
    if isinstance(value, str):  # csv cells carry the list as JSON text
        try:
            value = json.loads(value)
        except ValueError as err:
            raise DataError(f"row {row}: messages is not a JSON list: {err}") from err
    if not isinstance(value, list) or not value or not all(
        isinstance(m, dict) and isinstance(m.get("role"), str)
        and isinstance(m.get("content"), str) for m in value
    ):
        raise DataError(f"row {row}: messages must be a non-empty list of "
                        f"{{role, content}} strings")
    return [{"role": m["role"], "content": m["content"]} for m in value]


def encode_row(row: dict[str, Any], index: int, layout: Layout, tokenizer: Any,
               max_len: int) -> dict[str, list[int]]:
    """input_ids / attention_mask / labels of one row (labels -100 where no loss is taken)."""
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    if layout.messages:
        try:
            text = tokenizer.apply_chat_template(_messages(row[layout.messages], index),
                                                 tokenize=False)
        except DataError:
            raise
        except Exception as err:  # jinja raises its own types (e.g. unknown roles)
            raise DataError(f"row {index}: the chat template refused the messages: {err}") from err
        ids = tokenizer(text, add_special_tokens=False)["input_ids"] + eos
        labels = list(ids)
    else:
        prompt = "" if row[layout.prompt] is None else str(row[layout.prompt])
        answer = "" if row[layout.completion] is None else str(row[layout.completion])
        head = tokenizer(prompt, add_special_tokens=True)["input_ids"] if prompt else []
        tail = tokenizer(answer, add_special_tokens=False)["input_ids"] + eos if answer else []
        ids, labels = head + tail, [IGNORE] * len(head) + tail
    ids, labels = ids[:max_len], labels[:max_len]
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}


def max_length(settings: DatasetSettings, tokenizer: Any) -> int:
    if settings.max_seq_length:
        return settings.max_seq_length
    model_max = getattr(tokenizer, "model_max_length", None) or DEFAULT_MAX_LEN
    return int(min(model_max, DEFAULT_MAX_LEN))


def prepare(settings: DatasetSettings, tokenizer: Any) -> tuple[Any, Any | None]:
    """Read, shuffle, split and tokenize: (train, eval or None)."""
    import datasets

    rows = load_rows(settings)
    layout = detect_layout(rows.column_names, settings)
    if layout.messages and not getattr(tokenizer, "chat_template", None):
        raise DataError("messages rows need a chat template and the model's tokenizer has none")
    if settings.shuffle:
        rows = rows.shuffle(seed=settings.seed)
    limit = max_length(settings, tokenizer)
    encoded = [encode_row(r, i, layout, tokenizer, limit) for i, r in enumerate(rows)]
    encoded = [e for e in encoded if any(label != IGNORE for label in e["labels"])]
    if not encoded:
        raise DataError("dataset has no trainable rows: every completion/message is empty "
                        "(or truncated away by max_seq_length)")
    data = datasets.Dataset.from_list(encoded)
    if settings.train_fraction >= 1 or len(data) < 2:
        return data, None
    parts = data.train_test_split(train_size=settings.train_fraction, seed=settings.seed,
                                  shuffle=False)
    return parts["train"], parts["test"]


class Collator:
    """Pads a batch (labels with -100) and counts the real tokens it saw, for tokens/s."""

    def __init__(self, pad_id: int, pad_to_multiple_of: int | None = None) -> None:
        self.pad_id = pad_id
        self.multiple = pad_to_multiple_of
        self.tokens = 0
        self.samples = 0

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        longest = max(len(f["input_ids"]) for f in features)
        if self.multiple:
            longest = -(-longest // self.multiple) * self.multiple
        batch: dict[str, list[list[int]]] = {"input_ids": [], "attention_mask": [], "labels": []}
        for f in features:
            pad = longest - len(f["input_ids"])
            batch["input_ids"].append(list(f["input_ids"]) + [self.pad_id] * pad)
            batch["attention_mask"].append(list(f["attention_mask"]) + [0] * pad)
            batch["labels"].append(list(f["labels"]) + [IGNORE] * pad)
            self.tokens += len(f["input_ids"])
        self.samples += len(features)
        return {k: torch.tensor(v, dtype=torch.long) for k, v in batch.items()}
