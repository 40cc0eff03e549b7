"""Per-row token selection for a batch whose rows have different sampling parameters.

Why not transformers' logits processors: they take one configuration per ``generate`` call, while a
continuous batch mixes greedy and sampled requests, different temperatures, top-k/top-p and seeds.
Everything is vectorised over rows except drawing the uniform number, which uses each request's own
``torch.Generator`` so that a seeded request gives the same tokens alone or in any batch.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

__all__ = ["RowSampler", "SamplingParams", "select_tokens"]


@dataclass(frozen=True)
class SamplingParams:
    """How to generate for one request (already validated and capped by the router)."""

    max_new_tokens: int
    min_new_tokens: int = 0
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False
    skip_special_tokens: bool = True
    clean_up: bool = False

    @property
    def greedy(self) -> bool:
        return not self.do_sample or self.temperature == 0.0


@dataclass
class RowSampler:
    """Mutable per-request state the selection needs: its RNG and the tokens seen so far."""

    params: SamplingParams
    history: list[int]
    generated: int = 0
    generator: torch.Generator = field(default_factory=torch.Generator)

    def __post_init__(self) -> None:
        seed = self.params.seed if self.params.seed is not None else random.getrandbits(63)
        self.generator.manual_seed(seed)


def select_tokens(
    logits: torch.Tensor, rows: Sequence[RowSampler], eos_ids: frozenset[int]
) -> list[int]:
    """Choose the next token for every row of ``logits`` ``[rows, vocab]``."""
    logits = logits.float()
    device = logits.device
    for i, row in enumerate(rows):
        penalty = row.params.repetition_penalty
        if penalty != 1.0 and row.history:
            idx = torch.tensor(sorted(set(row.history)), dtype=torch.long, device=device)
            seen = logits[i, idx]
            logits[i, idx] = torch.where(seen < 0, seen * penalty, seen / penalty)
    if eos_ids:
        no_eos = [
            i
            for i, r in enumerate(rows)
            if r.params.ignore_eos or r.generated < r.params.min_new_tokens
        ]
        if no_eos:
            r_idx = torch.tensor(no_eos, device=device).unsqueeze(1)
            e_idx = torch.tensor(sorted(eos_ids), device=device).unsqueeze(0)
            logits[r_idx, e_idx] = float("-inf")
    chosen = logits.argmax(dim=-1).tolist()
    sampled = [i for i, r in enumerate(rows) if not r.params.greedy]
    if sampled:
        drawn = _sample(logits[sampled], [rows[i] for i in sampled])
        for i, token in zip(sampled, drawn, strict=True):
            chosen[i] = token
    return [int(t) for t in chosen]


def _sample(logits: torch.Tensor, rows: Sequence[RowSampler]) -> list[int]:
    """Temperature, top-k and top-p on sorted logits, then inverse-CDF with each row's RNG."""
    device = logits.device
    vocab = logits.shape[-1]
    temps = torch.tensor([r.params.temperature for r in rows], device=device).unsqueeze(1)
    sorted_logits, sorted_idx = (logits / temps).sort(dim=-1, descending=True)
    ks = torch.tensor(
        [r.params.top_k if r.params.top_k > 0 else vocab for r in rows], device=device
    ).unsqueeze(1)
    ranks = torch.arange(vocab, device=device).unsqueeze(0)
    sorted_logits = sorted_logits.masked_fill(ranks >= ks, float("-inf"))
    probs = torch.softmax(sorted_logits, dim=-1)
    # nucleus as in transformers: the smallest prefix whose mass reaches top_p (1.0 = off)
    top_ps = torch.tensor(
        [r.params.top_p if r.params.top_p < 1.0 else float("inf") for r in rows], device=device
    ).unsqueeze(1)
    outside = (probs.cumsum(dim=-1) - probs) >= top_ps  # always keeps the most likely token
    probs = probs.masked_fill(outside, 0.0)
    cdf = probs.cumsum(dim=-1)
    cdf = cdf / cdf[:, -1:]
    uniform = torch.cat([torch.rand(1, generator=r.generator) for r in rows]).to(device)
    pick = torch.searchsorted(cdf, uniform.unsqueeze(1)).clamp(max=vocab - 1)
    return [int(t) for t in sorted_idx.gather(1, pick).squeeze(1).tolist()]
