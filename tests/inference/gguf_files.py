"""Tiny GGUF files for tests: a random llama model written as llama.cpp writes one.

``write_tiny_gguf`` builds a 2-layer llama (hidden 64, grouped-query attention) with the tiny
model's byte-level BPE tokenizer, quantizes some tensors to Q8_0 (``gguf.quants``), and writes:

- ``<dir>/tiny.gguf``: the GGUF (tokenizer metadata, llama.cpp tensor names and its q/k row
  permutation, one Q8_0/F16/F32 mix);
- ``<ref>/``: the *same* weights (the Q8_0 ones dequantized, exactly as a reader gets them) as a
  plain transformers folder, so a test can compare a GGUF load against a normal load.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["TINY_LLAMA_SHAPE", "write_tiny_gguf"]

TINY_LLAMA_SHAPE: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 256,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
}

_HF_TO_GGUF = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
_LAYER = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
#: Which tensors are stored quantized (Q8_0) and which as F16; the rest (norms) stay F32.
_Q8_0 = ("attn_q", "attn_k", "ffn_up", "ffn_down", "output.weight")
_F16 = ("attn_v", "token_embd")


def _gguf_name(hf_name: str) -> str:
    if hf_name in _HF_TO_GGUF:
        return _HF_TO_GGUF[hf_name]
    parts = hf_name.split(".")  # model.layers.N.<module...>.weight
    block, module = parts[2], ".".join(parts[3:-1])
    return f"blk.{block}.{_LAYER[module]}.weight"


def _permute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k row order (``convert_hf_to_gguf.py`` ``permute``)."""
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def _stored(name: str, values: np.ndarray) -> tuple[np.ndarray, Any, np.ndarray]:
    """``(bytes or values to write, ggml type, values a reader gets back)`` for one tensor."""
    from gguf import GGMLQuantizationType, quants

    if any(key in name for key in _Q8_0):
        packed = quants.quantize(values, GGMLQuantizationType.Q8_0)
        return packed, GGMLQuantizationType.Q8_0, quants.dequantize(packed, GGMLQuantizationType.Q8_0)
    if any(key in name for key in _F16):
        half = values.astype(np.float16)
        return half, GGMLQuantizationType.F16, half.astype(np.float32)
    return values, GGMLQuantizationType.F32, values


def _tokenizer_metadata(writer: Any, tokenizer: Any) -> None:
    from gguf import TokenType

    vocab = tokenizer.get_vocab()
    tokens = [token for token, _ in sorted(vocab.items(), key=lambda item: item[1])]
    special = {t.content for t in tokenizer.added_tokens_decoder.values() if t.special}
    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(
        [TokenType.CONTROL if t in special else TokenType.NORMAL for t in tokens]
    )
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    writer.add_bos_token_id(tokenizer.bos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_pad_token_id(tokenizer.pad_token_id)
    writer.add_unk_token_id(tokenizer.unk_token_id)
    writer.add_add_bos_token(False)
    writer.add_chat_template(tokenizer.chat_template)


def write_tiny_gguf(gguf_dir: Path, ref_dir: Path, *, seed: int = 0, name: str = "tiny.gguf") -> Path:
    """Write the tiny GGUF into ``gguf_dir`` and its weights as a plain folder into ``ref_dir``."""
    import torch
    from gguf import GGUFWriter
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    from inference_server.tiny_model import _train_tokenizer

    tokenizer = _train_tokenizer(512)
    shape = TINY_LLAMA_SHAPE
    config = LlamaConfig(
        vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False, initializer_range=0.2, **shape,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    heads, kv_heads = shape["num_attention_heads"], shape["num_key_value_heads"]

    gguf_dir.mkdir(parents=True, exist_ok=True)
    path = gguf_dir / name
    writer = GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama")
    writer.add_context_length(shape["max_position_embeddings"])
    writer.add_embedding_length(shape["hidden_size"])
    writer.add_block_count(shape["num_hidden_layers"])
    writer.add_feed_forward_length(shape["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(shape["hidden_size"] // heads)
    writer.add_rope_freq_base(shape["rope_theta"])
    writer.add_layer_norm_rms_eps(shape["rms_norm_eps"])
    writer.add_vocab_size(len(tokenizer))
    _tokenizer_metadata(writer, tokenizer)

    readback: dict[str, torch.Tensor] = {}
    for hf_name, tensor in model.state_dict().items():
        values = tensor.detach().float().numpy()
        gguf_name = _gguf_name(hf_name)
        if ".attn_q." in gguf_name:
            values = _permute(values, heads)
        elif ".attn_k." in gguf_name:
            values = _permute(values, kv_heads)
        data, ggml_type, back = _stored(gguf_name, values)
        writer.add_tensor(gguf_name, data, raw_dtype=ggml_type)
        if ".attn_q." in gguf_name:  # the permutation is its own inverse only in shape: undo it
            back = _unpermute(back, heads)
        elif ".attn_k." in gguf_name:
            back = _unpermute(back, kv_heads)
        readback[hf_name] = torch.from_numpy(np.ascontiguousarray(back, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    model.load_state_dict(readback)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(ref_dir)
    tokenizer.save_pretrained(ref_dir)
    return path


def _unpermute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """The inverse of ``_permute`` (what transformers' llama GGUF reader applies)."""
    dim = weights.shape[0] // n_head // 2
    w = weights.reshape(n_head, dim, 2, *weights.shape[1:])
    return w.swapaxes(2, 1).reshape(weights.shape)
