"""A GGUF file read once: config, tokenizer and dequantized weights, without ``GGUFReader``.

Why this exists: for most architectures (llama, gemma3, phi3, qwen2, ...) transformers 5.23
reads a GGUF through its legacy loader, which builds a ``gguf.GGUFReader`` -- one numpy view per
vocabulary entry, 27 s for Gemma 3's 262144 tokens on 2 cores -- three times (the tokenizer's
config, the model's config, the weights): about 110 s before a single weight is used. The same
header parses in 0.2 s when string arrays are walked, not materialized. Here the header feeds
transformers' own GGUF mappings (config keys, tokenizer
builder, tensor names and per-architecture tensor fixes) with our own header reader
(``gguf_header``), so the model is the one transformers
would build, at a fraction of the cost.

Architectures whose legacy loading has special cases (MoE expert tensors, t5, stablelm, lfm2,
gpt-oss, mistral-named llama files) are left to transformers' own ``gguf_file=`` loading:
``fast_path_supported`` says which.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .gguf_header import TensorEntry, read_header

__all__ = ["GgufContents", "fast_path_supported", "read_gguf"]

#: Architectures whose metadata or tensors ``load_gguf_checkpoint`` treats specially.
_SPECIAL = frozenset({
    "t5", "t5encoder", "stablelm", "qwen2moe", "qwen3moe", "gpt-oss", "gpt_oss", "minimax-m2",
    "lfm2", "gemma4", "falcon", "bloom", "mamba",
})
#: ``load_gguf_checkpoint`` renames these model types (the GGUF holds only the text model).
_MODEL_TYPE_RENAMES = {"gemma3": "gemma3_text"}


@dataclass
class GgufContents:
    """What a GGUF holds, in transformers' terms."""

    config: Any
    """A ``PreTrainedConfig`` (no ``quantization_config``: the weights here are dense)."""
    tokenizer: Any
    state_dict: dict[str, torch.Tensor]


def fast_path_supported(metadata: dict[str, Any]) -> bool:
    """Whether ``read_gguf`` handles this file (else transformers' ``gguf_file=`` path does)."""
    from transformers.integrations.ggml import GGUF_CONFIG_MAPPING
    from transformers.integrations.gguf.utils import is_gguf_arch_supported

    arch = str(metadata.get("general.architecture", ""))
    name = str(metadata.get("general.name", "")).lower()
    if arch in _SPECIAL or arch not in GGUF_CONFIG_MAPPING or is_gguf_arch_supported(arch):
        return False
    return not ("llama" in arch and "mistral" in name)


def _scalar(value: Any) -> Any:
    return value[0] if isinstance(value, list) and len(value) == 1 else value


def config_dict(metadata: dict[str, Any], tensor_names: tuple[str, ...]) -> dict[str, Any]:
    """The config ``load_gguf_checkpoint`` derives from this metadata (plain architectures)."""
    from transformers.integrations.ggml import GGUF_CONFIG_DEFAULTS_MAPPING, GGUF_CONFIG_MAPPING

    arch = str(metadata["general.architecture"])
    config: dict[str, Any] = {"tie_word_embeddings": "output.weight" not in tensor_names}
    defaults: dict[str, Any] = GGUF_CONFIG_DEFAULTS_MAPPING.get(arch, {})
    for key, value in defaults.items():
        config.setdefault(key, value)
    mappings: Any = GGUF_CONFIG_MAPPING
    for key, value in metadata.items():
        prefix, _, rest = key.partition(".")
        target = mappings.get(prefix, {}).get(rest)
        if target is None or target == -1:
            continue
        config[target] = _scalar(value)
    config["model_type"] = _MODEL_TYPE_RENAMES.get(config["model_type"], config["model_type"])
    if "vocab_size" not in config and isinstance(metadata.get("tokenizer.ggml.tokens"), int):
        config["vocab_size"] = metadata["tokenizer.ggml.tokens"]  # the reader's count
    return config


def _tokenizer(path: Path, model_type: str) -> Any:
    """The tokenizer class ``AutoTokenizer`` picks for ``model_type``, built from the file."""
    from transformers import AutoTokenizer, TokenizersBackend
    from transformers.models.auto.tokenization_auto import TOKENIZER_MAPPING_NAMES

    # `tokenizer_type` skips AutoTokenizer's own (legacy, slow) parse of the file's config.
    if TOKENIZER_MAPPING_NAMES.get(model_type):
        return AutoTokenizer.from_pretrained(
            str(path.parent), gguf_file=path.name, tokenizer_type=model_type
        )
    return TokenizersBackend.from_pretrained(str(path.parent), gguf_file=path.name)


def _dequantized(blob: np.ndarray, info: TensorEntry) -> np.ndarray:
    """One tensor's values as float32 numpy, in torch order."""
    from gguf import GGMLQuantizationType, dequantize

    raw = blob[info.offset: info.offset + info.nbytes]
    values = dequantize(raw, GGMLQuantizationType(info.ggml_type))
    return np.asarray(values, dtype=np.float32).reshape(info.shape)


def weights_map(model: Any, processor: Any, arch: str) -> dict[str, str]:
    """``{gguf tensor name: model parameter name}``: transformers' ``get_gguf_hf_weights_map``
    with one ``gguf.TensorNameMap`` instead of one per module (that cost 4 s for Gemma 3).

    Same rule: every module's parameters, outermost first, a name mapped once (``setdefault``,
    as the recursion's "keys already in the map win")."""
    from gguf import MODEL_ARCH_NAMES, get_tensor_name_map

    arch_id = next((key for key, value in MODEL_ARCH_NAMES.items() if value == arch), None)
    if arch_id is None:
        raise ValueError(f"gguf-py knows no architecture {arch!r}")
    name_map = get_tensor_name_map(arch_id, model.config.num_hidden_layers)
    mapping: dict[str, str] = {}
    for qual, module in model.named_modules():
        prefix = f"{qual}." if qual else ""
        local: dict[str, str] = {}
        for hf_name in module.state_dict():
            hf_name = processor.preprocess_name(hf_name)
            name, suffix = hf_name, ""
            if hf_name.endswith((".weight", ".bias")):
                name, suffix = hf_name.rsplit(".", 1)
                suffix = "." + suffix
            gguf_name = name_map.get_name(name)
            if gguf_name is None:
                processor.perform_fallback_tensor_mapping(local, suffix, prefix, hf_name)
                continue
            local[gguf_name + suffix] = prefix + hf_name
        for key, value in local.items():
            mapping.setdefault(key, value)
    return mapping


def _dequantize_all(
    blob: np.ndarray, entries: Sequence[TensorEntry]
) -> Iterator[tuple[TensorEntry, np.ndarray]]:
    """``(entry, float32 values)`` in file order, unpacked on a few threads (numpy releases the
    GIL: 4.3 s alone, 1.1 s on 2 threads for Gemma 3 270M). A window of ``2 * workers`` tensors
    at a time bounds the float32 copies alive at once."""
    workers = max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                         else (os.cpu_count() or 1)))
    window = 2 * workers
    with ThreadPoolExecutor(workers, thread_name_prefix="gguf-dequant") as pool:
        for start in range(0, len(entries), window):
            batch = entries[start:start + window]
            futures = [pool.submit(_dequantized, blob, entry) for entry in batch]
            for entry, future in zip(batch, futures, strict=True):
                yield entry, future.result()


def read_gguf(
    path: Path, dtype: torch.dtype, progress: Callable[[str], None] | None = None
) -> GgufContents:
    """Config, tokenizer and weights (dequantized, then cast to ``dtype`` one tensor at a time)."""
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.modeling_gguf_pytorch_utils import (
        TENSOR_PROCESSORS,
        TensorProcessor,
    )

    header = read_header(path)
    metadata, names = header.metadata, tuple(t.name for t in header.tensors)
    values = config_dict(metadata, names)
    config = AutoConfig.for_model(**values)
    say = progress or (lambda line: None)
    say("reading the tokenizer")
    tokenizer = _tokenizer(path, config.model_type)
    say("dequantizing the weights")
    arch = str(metadata["general.architecture"])
    processor_class: Any = TENSOR_PROCESSORS.get(arch, TensorProcessor)
    processor = processor_class(config=values)
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)
    mapping = weights_map(skeleton, processor, arch)
    blob = np.memmap(str(path), mode="r", dtype=np.uint8)
    tensors: dict[str, torch.Tensor] = {}
    parsed = {"tensors": tensors}
    for info, weights in _dequantize_all(blob, header.tensors):
        result = processor.process(
            weights=weights, name=info.name, tensor_key_mapping=mapping, parsed_parameters=parsed,
        )
        if result.name in mapping:  # fresh, writable memory, not a view of the mapped file
            owned = np.require(result.weights, np.float32, ["C", "W", "O"])
            tensors[mapping[result.name]] = torch.from_numpy(owned).to(dtype)
    state_dict = {name: t.to(dtype) for name, t in tensors.items()}  # a processor's own ones
    return GgufContents(config, tokenizer, state_dict)
