"""A lean decode step for Llama-style decoders (Llama, Mistral, Qwen2, Phi-3) on the slot cache.

Why: on a small model a transformers forward spends most of a decode step in Python rather than
in arithmetic: the model, decoder-layer and attention wrappers, output capturing, configuration
look-ups and mask building cost about 4 ms per step on a 2-core CPU, against about 2 ms of matrix
products for a 3.6M-parameter model at batch 1. This step calls the model's own modules (the
embedding, the norms, the projections, the MLPs, the rotary embedding, the LM head, so merged or
wrapped adapters and quantised layers work as they do in the model) and the model's own rotary
function, and does only the glue itself: one SDPA call per layer over the slot cache's view.

It is exact only for architectures whose decoder layer is ``h + attn(norm(h))`` then
``h + mlp(norm(h))``: the ``model_type`` must be one of ``SUPPORTED`` and the engine compares
its logits with the transformers forward once at load; any difference means the transformers
forward is used for every step.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from . import kvbatch
from .kvbatch import KVBatch

__all__ = ["SUPPORTED", "LeanDecoder"]

log = logging.getLogger(__name__)

SUPPORTED = frozenset({"llama", "mistral", "qwen2", "phi3"})

_Rotary = Callable[..., tuple[torch.Tensor, torch.Tensor]]


class LeanDecoder:
    """``decoder(batch, tokens, mask, positions)`` → next-token logits; see the module doc."""

    def __init__(self, model: Any, apply_rotary: _Rotary) -> None:
        self.model = model
        self.inner = model.model
        self.layers = list(self.inner.layers)
        attention = self.layers[0].self_attn
        self.head_dim = int(attention.head_dim)
        self.heads = int(model.config.num_attention_heads)
        self.kv_heads = int(model.config.num_key_value_heads)
        self.scaling = float(attention.scaling)
        self.fused_qkv = hasattr(attention, "qkv_proj")
        self.apply_rotary = apply_rotary

    @classmethod
    def for_model(cls, model: Any) -> LeanDecoder | None:
        """The lean step for ``model``, or None when its architecture is not one it knows."""
        if getattr(model.config, "model_type", None) not in SUPPORTED:
            return None
        inner = getattr(model, "model", None)
        layers = getattr(inner, "layers", None)
        if not layers or getattr(inner, "rotary_emb", None) is None:
            return None
        attention = layers[0].self_attn
        rotary = getattr(sys.modules[type(attention).__module__], "apply_rotary_pos_emb", None)
        if rotary is None or getattr(attention, "q_norm", None) is not None:
            return None
        return cls(model, rotary)

    @classmethod
    def verified(
        cls, model: Any, new_batch: Callable[[], KVBatch], pad_id: int, vocab: int
    ) -> LeanDecoder | None:
        """The lean step for ``model`` if its logits equal the transformers forward's on a probe.

        The probe decodes two steps of two rows of unequal lengths (so padding and positions
        matter) both ways; a failure or a difference beyond rounding means None.
        """
        prompts = [[1 % vocab, 2 % vocab, 3 % vocab], [4 % vocab]]
        steps = torch.tensor([5 % vocab, 6 % vocab])
        try:
            lean = cls.for_model(model)
            if lean is None:
                return None
            results = []
            for step in (None, lean):
                batch = new_batch()
                kvbatch.prefill(model, batch, prompts, pad_id)
                logits = [kvbatch.decode_step(model, batch, steps, step) for _ in range(2)]
                results.append(torch.stack(logits))
        except Exception:  # pragma: no cover - an architecture the whitelist let through
            log.warning("Lean decode step failed its probe; using the transformers forward",
                        exc_info=True)
            return None
        wide = next(model.parameters()).dtype == torch.float32
        tolerance = 1e-4 if wide else 2e-2  # half-precision rounding differs between kernels
        if not torch.allclose(results[0], results[1], rtol=10 * tolerance, atol=tolerance):
            log.warning("Lean decode step differs from the transformers forward; not using it")
            return None
        return lean

    @torch.inference_mode()
    def __call__(
        self, batch: KVBatch, tokens: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor
    ) -> torch.Tensor:
        hidden = self.inner.embed_tokens(tokens.view(-1, 1))
        cos, sin = self.inner.rotary_emb(hidden, positions)
        for index, layer in enumerate(self.layers):
            attended = self._attention(
                index, layer.self_attn, layer.input_layernorm(hidden), cos, sin, batch, mask
            )
            hidden = hidden + attended
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
        logits: torch.Tensor = self.model.lm_head(self.inner.norm(hidden))[:, -1, :].float()
        return logits

    def _attention(
        self, index: int, attention: Any, hidden: torch.Tensor, cos: torch.Tensor,
        sin: torch.Tensor, batch: KVBatch, mask: torch.Tensor,
    ) -> torch.Tensor:
        rows = hidden.shape[0]
        q_width, kv_width = self.heads * self.head_dim, self.kv_heads * self.head_dim
        if self.fused_qkv:
            qkv = attention.qkv_proj(hidden)
            query = qkv[..., :q_width]
            key = qkv[..., q_width:q_width + kv_width]
            value = qkv[..., q_width + kv_width:]
        else:
            query = attention.q_proj(hidden)
            key = attention.k_proj(hidden)
            value = attention.v_proj(hidden)
        query = query.view(rows, 1, self.heads, self.head_dim).transpose(1, 2)
        key = key.view(rows, 1, self.kv_heads, self.head_dim).transpose(1, 2)
        value = value.view(rows, 1, self.kv_heads, self.head_dim).transpose(1, 2)
        query, key = self.apply_rotary(query, key, cos, sin)
        keys, values = batch.update(key, value, index)
        out = F.scaled_dot_product_attention(
            query, keys, values, attn_mask=mask, scale=self.scaling,
            enable_gqa=self.kv_heads != self.heads,
        )
        result: torch.Tensor = attention.o_proj(out.transpose(1, 2).reshape(rows, 1, q_width))
        return result
