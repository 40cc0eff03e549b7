"""GGUF checkpoints: find one in a model folder, check it, load it dequantized, or convert it.

A GGUF file (llama.cpp's format) carries the config, the tokenizer and the weights in one file,
usually block-quantized (Q4_K, Q6_K, Q8_0, ...). transformers reads it with ``gguf_file=``; we
always **dequantize** (``GgufConfig(dequantize=True)``): running on the packed blocks needs the
``kernels`` package, which fetches compiled kernels from the Hugging Face hub at run time, and this
server neither ships it nor reaches the hub. So a GGUF model costs the memory of its dequantized
weights (4 bytes a parameter in float32, 2 in bfloat16), not the size of the file.

``convert_gguf`` writes the same model as a plain transformers folder (config.json,
model.safetensors, tokenizer files), which then loads in seconds instead of re-parsing the file.
Heavy imports happen inside the functions, so importing this module is free.
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = ["GgufError", "GgufSummary", "convert_gguf", "find_gguf", "inspect_gguf", "load_gguf"]

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


class GgufError(ValueError):
    """A .gguf file this server cannot load; the message names the file and the reason."""


@dataclass(frozen=True)
class GgufSummary:
    """What the file's header says, read without touching the tensor data."""

    path: Path
    architecture: str
    file_bytes: int
    quant_types: tuple[str, ...]
    """The ggml storage types of its tensors, most used first (``Q4_K``, ``Q6_K``, ``F32``)."""
    parameters: int
    fast_reader: bool
    """Whether ``gguf_reader`` reads it (else transformers' slower ``gguf_file=`` loading)."""


def find_gguf(model_dir: Path, gguf_file: str | None = None) -> Path | None:
    """The GGUF file to serve from ``model_dir``, or None when it is a plain transformers folder.

    ``gguf_file`` (relative to ``model_dir``, or absolute) wins when given, even over a
    ``config.json``; else the single ``*.gguf`` of a folder that has no ``config.json``.
    """
    model_dir = Path(model_dir)
    if gguf_file is not None:
        path = Path(gguf_file)
        if not path.is_absolute():
            path = model_dir / path
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file {path} does not exist")
        return path
    if (model_dir / "config.json").is_file():
        return None
    found = sorted(p for p in model_dir.glob("*.gguf") if p.is_file())
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise ValueError(
            f"{model_dir} holds {len(found)} GGUF files ({names}); name one with --gguf-file"
        )
    return found[0] if found else None


def inspect_gguf(path: Path) -> GgufSummary:
    """Check ``path`` is a complete GGUF of an architecture transformers loads; summarize it.

    Reads only the header (a fraction of a second even for a large file).
    """
    from gguf import GGMLQuantizationType
    from transformers.integrations.gguf.utils import is_gguf_arch_supported
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    from .gguf_header import read_header
    from .gguf_reader import fast_path_supported

    path = Path(path)
    size = path.stat().st_size
    try:
        header = read_header(path)
    except (ValueError, OSError) as exc:
        raise GgufError(f"{path} is not a usable GGUF file: {_reason(exc)}") from None
    arch = str(header.metadata.get("general.architecture", ""))
    if not arch:
        raise GgufError(f"{path} is not a usable GGUF file: no general.architecture in it")
    if arch not in GGUF_SUPPORTED_ARCHITECTURES and not is_gguf_arch_supported(arch):
        raise GgufError(
            f"{path} holds a {arch!r} model, an architecture transformers cannot load from GGUF "
            f"(it loads: {', '.join(sorted(GGUF_SUPPORTED_ARCHITECTURES))})"
        )
    counts: dict[str, int] = {}
    parameters = 0
    for tensor in header.tensors:
        try:
            name = GGMLQuantizationType(tensor.ggml_type).name
        except ValueError:
            name = f"type{tensor.ggml_type}"
        elements = 1
        for dim in tensor.shape:
            elements *= dim
        counts[name] = counts.get(name, 0) + elements
        parameters += elements
    ordered = tuple(sorted(counts, key=lambda n: -counts[n]))
    return GgufSummary(
        path, arch, size, ordered, parameters, fast_path_supported(header.metadata)
    )


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def describe_load(summary: GgufSummary, model: Any) -> str:
    """The one log line of a GGUF load: source types, file size, target dtype, memory."""
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    return (
        f"GGUF {summary.path.name} ({summary.file_bytes / 2**20:.0f} MiB, "
        f"{'/'.join(summary.quant_types)}) dequantized to {dtype}: "
        f"{weight_bytes / 2**30:.2f} GiB of weights in memory"
    )


def _load_tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    except Exception as exc:
        raise GgufError(
            f"{path}: transformers could not read its tokenizer: {_reason(exc)}"
        ) from exc


def _transformers_load(
    path: Path, dtype: torch.dtype, device_map: Any = None, **kwargs: Any
) -> tuple[Any, Any]:
    """transformers' own ``gguf_file=`` loading, for architectures ``gguf_reader`` leaves to it."""
    from transformers import AutoModelForCausalLM, GgufConfig

    tokenizer = _load_tokenizer(path)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(path.parent), gguf_file=path.name, dtype=dtype, device_map=device_map,
            # Dequantize: the packed-block path needs the hub's `kernels` package (not shipped).
            quantization_config=GgufConfig(dequantize=True), **kwargs,
        )
    except Exception as exc:
        raise GgufError(f"{path}: transformers could not load its weights: {_reason(exc)}") from exc
    config = copy.deepcopy(model.config)  # dense now: a saved copy must not claim GGUF blocks
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    return tokenizer, _dense_model(config, model.state_dict(), dtype, device_map, **kwargs)


def _dense_model(
    config: Any, state_dict: dict[str, torch.Tensor], dtype: torch.dtype, device_map: Any = None,
    **kwargs: Any,
) -> Any:
    """A plain transformers model of ``config`` holding ``state_dict`` (no random init)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    model_class: Any = MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]
    return model_class.from_pretrained(
        None, config=config, state_dict=state_dict, dtype=dtype, device_map=device_map, **kwargs
    ).eval()


def _read(path: Path, summary: GgufSummary, dtype: torch.dtype, device_map: Any = None,
          progress: Progress | None = None, **kwargs: Any) -> tuple[Any, Any]:
    from .gguf_reader import read_gguf

    if not summary.fast_reader:
        if progress:
            progress("reading the tokenizer and dequantizing the weights (transformers' loader)")
        return _transformers_load(path, dtype, device_map, **kwargs)
    try:
        contents = read_gguf(path, dtype, progress)
        contents.config.name_or_path = str(path)
        model = _dense_model(contents.config, contents.state_dict, dtype, device_map, **kwargs)
    except GgufError:
        raise
    except Exception as exc:
        raise GgufError(f"{path}: could not load it: {type(exc).__name__}: {_reason(exc)}") from exc
    return contents.tokenizer, model


def load_gguf(
    path: Path, *, dtype: torch.dtype, device_map: Any = None, **kwargs: Any
) -> tuple[Any, Any]:
    """``(tokenizer, model)`` from a GGUF file, its weights dequantized to ``dtype``."""
    path = Path(path)
    summary = inspect_gguf(path)
    tokenizer, model = _read(path, summary, dtype, device_map, **kwargs)
    log.info("%s", describe_load(summary, model))
    return tokenizer, model


def convert_gguf(
    gguf: Path,
    out_dir: Path,
    *,
    dtype: torch.dtype = torch.bfloat16,
    chat_template: str | None = None,
    stop_strings: Sequence[str] = (),
    progress: Progress | None = None,
) -> Path:
    """Write ``gguf`` as a plain transformers folder at ``out_dir``, atomically; return out_dir.

    The folder is built next to ``out_dir`` and renamed into place, so a reader never sees half a
    conversion; an existing ``out_dir`` is replaced.
    """
    say = progress or (lambda line: None)
    gguf, out_dir = Path(gguf), Path(out_dir)
    summary = inspect_gguf(gguf)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    work.chmod(0o755)
    try:
        tokenizer, model = _read(gguf, summary, dtype, progress=say)
        if chat_template is not None:
            tokenizer.chat_template = chat_template
        if stop_strings:
            model.generation_config.stop_strings = list(stop_strings)
        say("writing safetensors")
        model.save_pretrained(str(work))
        tokenizer.save_pretrained(str(work))
        log.info("Converted %s (%s) into %s", gguf.name, "/".join(summary.quant_types), out_dir)
        _swap_into_place(work, out_dir)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return out_dir


def _swap_into_place(work: Path, out_dir: Path) -> None:
    """Rename ``work`` to ``out_dir``; an existing ``out_dir`` is moved aside, then removed."""
    old: Path | None = None
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old.", dir=out_dir.parent))
        os.replace(out_dir, old / out_dir.name)
    os.replace(work, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
