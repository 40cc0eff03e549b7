"""Loading a model folder's tokenizer and weights: a transformers folder or a GGUF file in it.

Split out of ``engine`` so the engine stays about serving. ``load_weights`` picks the source with
``gguf.find_gguf``'s rules: ``--gguf-file`` wins; else a folder with ``config.json`` loads as
transformers saves it; else its single ``.gguf`` file loads dequantized. Problems a person can
fix (two GGUF files, a broken file) are ``StartupError``s naming the file and the reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .errors import StartupError
from .settings import ServerSettings

__all__ = ["default_stop_strings", "gguf_auto_dtype", "load_weights"]


def default_stop_strings(generation_config: Any) -> tuple[str, ...]:
    """``generation_config.stop_strings`` as a tuple (a single string or a list in the file)."""
    value = getattr(generation_config, "stop_strings", None)
    if isinstance(value, str):
        value = [value]
    return tuple(str(v) for v in value or () if v)


def gguf_auto_dtype() -> torch.dtype:
    """``--dtype auto`` for a GGUF file, which holds no torch dtype of its own.

    On CPU float32: through this server (one intra-op thread, the other core for the event loop)
    Gemma 3 270M decoded 7.2-7.4 tok/s in float32 and 6.7 in bfloat16 on 2 cores, and bfloat16
    training steps are pathologically slow there; the cost is 4 bytes a parameter. On a GPU
    bfloat16 (float16 where bf16 is missing): half the memory, and the kernels are made for it.
    """
    if not torch.cuda.is_available():
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def load_weights(path: Path, settings: ServerSettings, device_map: Any) -> tuple[Any, Any]:
    """``(tokenizer, model)`` from the folder, or from its GGUF file (``find_gguf``'s rules)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .gguf import GgufError, find_gguf, load_gguf

    try:
        gguf = find_gguf(path, settings.gguf_file)
    except (ValueError, OSError) as exc:
        raise StartupError(str(exc)) from None
    if gguf is not None:
        dtype = gguf_auto_dtype() if settings.dtype == "auto" else getattr(torch, settings.dtype)
        try:
            return load_gguf(gguf, dtype=dtype, device_map=device_map)
        except GgufError as exc:
            raise StartupError(str(exc)) from None
    tokenizer = AutoTokenizer.from_pretrained(
        str(path), trust_remote_code=settings.trust_remote_code
    )
    auto: Any = "auto" if settings.dtype == "auto" else getattr(torch, settings.dtype)
    model = AutoModelForCausalLM.from_pretrained(
        str(path), dtype=auto, device_map=device_map,
        trust_remote_code=settings.trust_remote_code,
    ).eval()
    return tokenizer, model
