"""Server settings: one pydantic model, filled from command-line flags by ``parse_args``.

Why flags and not env: the workspace controller renders the container command line, as KAITO does,
so what a pod runs is visible in ``kubectl get pod -o yaml``. Parsing happens only when
``parse_args`` is called (from ``__main__``); importing this module does nothing.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["ServerSettings", "build_parser", "parse_args", "parse_strengths"]

CombinationType = Literal["svd", "linear", "cat"]
DType = Literal["auto", "float32", "float16", "bfloat16"]


class ServerSettings(BaseModel):
    """Everything the server needs to start; immutable once built."""

    model_config = ConfigDict(frozen=True, protected_namespaces=())

    model_dir: Path | None = None
    """Local model directory (weights baked into the image or a volume)."""
    gguf_file: str | None = None
    """A GGUF file (relative to the model folder, or absolute) to serve, dequantized."""
    model_id: str | None = None
    """Hugging Face repo id to download at start when ``model_dir`` is not given."""
    revision: str | None = None
    """Revision (branch, tag or commit) of ``model_id``."""
    cache_dir: Path | None = None
    """Where ``model_id`` is downloaded (a volume, so restarts do not download again)."""
    served_model_name: str | None = None
    """Name in ``/v1/models`` and responses; defaults to the directory name or the repo id."""
    dtype: DType = "auto"
    device_map: str | None = None
    """Passed to ``from_pretrained``; ``auto`` spreads over GPUs, ``None`` keeps one device."""
    chat_template: str | None = None
    """A Jinja file path or an inline template; overrides the tokenizer's template."""
    trust_remote_code: bool = False
    adapters_dir: Path = Path("/mnt/adapter")
    adapter_strengths: dict[str, float] | list[float] = Field(default_factory=dict)
    """``name=strength`` per adapter, or a list matched to adapter names in sorted order."""
    adapter_combination: CombinationType = "svd"
    max_batch_size: int = Field(16, ge=1, le=1024)
    """Sequences decoded together in one forward pass."""
    queue_size: int = Field(128, ge=0)
    """Requests allowed to wait for a batch slot; beyond it the server answers 429."""
    max_new_tokens_cap: int = Field(1024, ge=1)
    """Upper bound on tokens generated per request (``max_tokens`` above it is a 400)."""
    max_n: int = Field(8, ge=1, le=128)
    """Most choices (OpenAI's ``n``) one request may ask for; each is a batch row."""
    max_body_bytes: int = Field(1024 * 1024, ge=1024, le=1024**3)
    """Largest request body accepted; a larger one is answered 413 without being read."""
    body_timeout_s: float = Field(30.0, gt=0.0, le=3600.0)
    """Time allowed to receive a request body once its reading starts (408 after it)."""
    tokenizer_threads: int = Field(2, ge=1, le=64)
    """Threads that tokenize prompts and render chat templates, off the event loop."""
    tokenizer_queue_size: int = Field(64, ge=1, le=65536)
    """Prompts allowed in (or waiting for) tokenization at once; beyond it the answer is 429."""
    host: str = "0.0.0.0"
    port: int = Field(5000, ge=0, le=65535)
    log_level: str = "info"

    @model_validator(mode="after")
    def _one_model_source(self) -> ServerSettings:
        if (self.model_dir is None) == (self.model_id is None):
            raise ValueError("exactly one of --model-dir or --model-id is required")
        return self

    @property
    def model_name(self) -> str:
        """The name clients use for the served model."""
        if self.served_model_name:
            return self.served_model_name
        if self.model_id:
            return self.model_id
        assert self.model_dir is not None  # guaranteed by the validator
        return self.model_dir.resolve().name or "model"


def parse_strengths(text: str) -> dict[str, float] | list[float]:
    """Parse ``a=0.5,b=1`` or ``0.5,1`` (matched to sorted adapter names at load time)."""
    text = text.strip()
    if not text:
        return {}
    items = [item.strip() for item in text.split(",") if item.strip()]
    if all("=" in item for item in items):
        out: dict[str, float] = {}
        for item in items:
            name, _, value = item.partition("=")
            out[name.strip()] = _strength(value)
        return out
    if any("=" in item for item in items):
        raise ValueError("mix of name=value and plain values in --adapter-strengths")
    return [_strength(item) for item in items]


def _strength(value: str) -> float:
    try:
        strength = float(value)
    except ValueError as exc:
        raise ValueError(f"adapter strength {value!r} is not a number") from exc
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"adapter strength {strength} is outside [0, 1]")
    return strength


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m inference_server",
        description="KAITO inference server: /chat and the OpenAI API on transformers + peft.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model-dir", type=Path, help="local model directory")
    src.add_argument("--model-id", help="Hugging Face repo id to download at start")
    p.add_argument("--gguf-file", help="serve this GGUF file of the model folder (dequantized); "
                   "default: the folder's only .gguf when it has no config.json")
    p.add_argument("--revision", help="revision of --model-id")
    p.add_argument("--cache-dir", type=Path, help="download cache directory for --model-id")
    p.add_argument("--served-model-name")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"])
    p.add_argument("--device-map", default=None, help="e.g. auto; default: one device")
    p.add_argument("--chat-template", help="Jinja file path or inline template")
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("--adapters-dir", type=Path, default=Path("/mnt/adapter"))
    p.add_argument("--adapter-strengths", default="", help="a=0.5,b=1 or 0.5,1")
    p.add_argument("--adapter-combination", default="svd", choices=["svd", "linear", "cat"])
    p.add_argument("--max-batch-size", type=int, default=16)
    p.add_argument("--queue-size", type=int, default=128)
    p.add_argument("--max-new-tokens-cap", type=int, default=1024)
    p.add_argument("--max-n", type=int, default=8,
                   help="most choices (n) per OpenAI request; each decodes as a batch row")
    p.add_argument("--max-body-bytes", type=int, default=1024 * 1024,
                   help="largest request body accepted (413 above it); default 1 MiB")
    p.add_argument("--body-timeout-s", type=float, default=30.0,
                   help="seconds allowed to receive a request body (408 after it)")
    p.add_argument("--tokenizer-threads", type=int, default=2,
                   help="threads that tokenize prompts off the event loop")
    p.add_argument("--tokenizer-queue-size", type=int, default=64,
                   help="prompts allowed in or waiting for tokenization (429 beyond)")
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--log-level", default="info")
    return p


def parse_args(argv: Sequence[str] | None = None) -> ServerSettings:
    """Flags → validated settings; errors exit with argparse's usage message."""
    parser = build_parser()
    ns = parser.parse_args(argv)
    values = {k: v for k, v in vars(ns).items() if v is not None}
    try:
        values["adapter_strengths"] = parse_strengths(ns.adapter_strengths)
        return ServerSettings(**values)
    except ValueError as exc:  # pydantic.ValidationError is a ValueError
        parser.error(str(exc))
        raise  # unreachable: parser.error exits
