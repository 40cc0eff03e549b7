"""A left-padded KV cache for sequences decoded together, which can grow and shrink by rows.

Why this exists: continuous batching needs to (a) add newly prefilled sequences to a batch that is
already decoding and (b) drop sequences that finished or whose client left, without restarting the
others. transformers' ``DynamicCache`` stores per layer ``[batch, heads, time, head_dim]`` tensors;
with *left* padding every row's newest token sits in the last column, so merging two batches is
"pad the shorter one on the left, concatenate on the batch axis", and the 2-D attention mask tells
the model which columns are padding. Positions are computed per row from the mask, so a row's
rotary positions do not depend on how much padding its neighbours force on it, which is what makes
greedy outputs identical batched and alone.

Only ``DynamicLayer``-style caches (full attention, no sliding window) are supported; the engine
falls back to one-at-a-time generation for models that need anything else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache

__all__ = ["KVBatch"]


@dataclass
class KVBatch:
    """``cache`` holds every token but each row's last sampled one; ``mask`` is ``[rows, time]``."""

    cache: Any
    mask: torch.Tensor

    @property
    def rows(self) -> int:
        return int(self.mask.shape[0])

    @property
    def width(self) -> int:
        return int(self.mask.shape[1])

    def _layers(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(layer.keys, layer.values) for layer in self.cache.layers]

    @staticmethod
    def _from_layers(
        layers: list[tuple[torch.Tensor, torch.Tensor]], mask: torch.Tensor
    ) -> KVBatch:
        return KVBatch(DynamicCache(ddp_cache_data=layers), mask)

    def select(self, keep: list[int]) -> KVBatch:
        """Keep only the rows ``keep`` (in that order), then drop all-padding columns."""
        idx = torch.tensor(keep, dtype=torch.long, device=self.mask.device)
        layers = [(k.index_select(0, idx), v.index_select(0, idx)) for k, v in self._layers()]
        return KVBatch._from_layers(layers, self.mask.index_select(0, idx)).trimmed()

    def trimmed(self) -> KVBatch:
        """Drop leading columns that are padding for every row (left by finished long rows)."""
        used = self.mask.any(dim=0)
        if bool(used[0]) or not bool(used.any()):
            return self
        first = int(torch.nonzero(used)[0])
        layers = [(k[:, :, first:], v[:, :, first:]) for k, v in self._layers()]
        return KVBatch._from_layers(layers, self.mask[:, first:])

    def merge(self, other: KVBatch) -> KVBatch:
        """Rows of ``self`` followed by rows of ``other``, left-padded to a common width."""
        width = max(self.width, other.width)
        layers = []
        for (k1, v1), (k2, v2) in zip(self._layers(), other._layers(), strict=True):
            layers.append(
                (
                    torch.cat([_left_pad(k1, width), _left_pad(k2, width)], dim=0),
                    torch.cat([_left_pad(v1, width), _left_pad(v2, width)], dim=0),
                )
            )
        mask = torch.cat([_left_pad_mask(self.mask, width), _left_pad_mask(other.mask, width)])
        return KVBatch._from_layers(layers, mask)


def _left_pad(t: torch.Tensor, width: int) -> torch.Tensor:
    missing = width - t.shape[-2]
    if missing == 0:
        return t
    pad = t.new_zeros((*t.shape[:-2], missing, t.shape[-1]))
    return torch.cat([pad, t], dim=-2)


def _left_pad_mask(mask: torch.Tensor, width: int) -> torch.Tensor:
    missing = width - mask.shape[1]
    if missing == 0:
        return mask
    return torch.cat([mask.new_zeros((mask.shape[0], missing)), mask], dim=1)


@torch.inference_mode()
def prefill(model: Any, prompts: list[list[int]], pad_id: int) -> tuple[KVBatch, torch.Tensor]:
    """Run the prompts (left-padded) through the model; return the cache and last-token logits."""
    device = model.device
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
        mask[row, width - len(prompt):] = 1
    ids, mask = ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=positions,
        past_key_values=DynamicCache(),
        use_cache=True,
        logits_to_keep=1,
    )
    return KVBatch(out.past_key_values, mask), out.logits[:, -1, :].float()


@torch.inference_mode()
def decode_step(model: Any, batch: KVBatch, tokens: torch.Tensor) -> tuple[KVBatch, torch.Tensor]:
    """Feed each row's last sampled token; return the grown batch and next-token logits."""
    mask = torch.cat([batch.mask, batch.mask.new_ones((batch.rows, 1))], dim=1)
    positions = mask.sum(-1, keepdim=True) - 1
    out = model(
        input_ids=tokens.view(-1, 1).to(batch.mask.device),
        attention_mask=mask,
        position_ids=positions,
        past_key_values=batch.cache,
        use_cache=True,
    )
    return KVBatch(out.past_key_values, mask), out.logits[:, -1, :].float()
