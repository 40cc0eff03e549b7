"""Per-row token selection for a batch whose rows have different sampling parameters.

Why not transformers' logits processors: they take one configuration per ``generate`` call, while a
continuous batch mixes greedy and sampled requests, different temperatures, top-k/top-p, seeds,
penalties, JSON constraints and logprob requests. Everything is vectorised over the rows that use a
feature (a row that does not ask for one pays nothing for it) except drawing the uniform number,
which uses each request's own ``torch.Generator`` so that a seeded request gives the same tokens
alone or in any batch.

Order of processing, per row: repetition penalty (prompt and completion, as transformers does),
presence/frequency penalties (completion only, as OpenAI defines them), end-of-sequence masking
(``ignore_eos``, ``min_new_tokens``), the constraint's allowed-token mask; then greedy argmax, or
temperature, top-k, top-p and a draw. Logprobs are the log-softmax of the processed logits (divided
by the temperature for sampled rows), before top-k/top-p truncation, like OpenAI reports them.
"""

from __future__ import annotations

import logging
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from .constrained import Constraint, RowMatcher, allowed_tokens

__all__ = ["RowSampler", "SamplingParams", "TokenLogprob", "select_tokens"]

log = logging.getLogger(__name__)

MAX_TOP_LOGPROBS = 20


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
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logprobs: bool = False
    top_logprobs: int = 0
    """How many alternatives each ``TokenLogprob.top`` lists (0 .. ``MAX_TOP_LOGPROBS``)."""
    constraint: Constraint | None = None
    """The output must match this grammar; it also decides when the output ends."""

    @property
    def greedy(self) -> bool:
        return not self.do_sample or self.temperature == 0.0

    @property
    def penalised(self) -> bool:
        return self.presence_penalty != 0.0 or self.frequency_penalty != 0.0


@dataclass(frozen=True)
class TokenLogprob:
    """The chosen token's log-probability and the ``top`` best (token id, logprob), best first."""

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


@dataclass
class RowSampler:
    """Mutable per-request state the selection needs: RNG, tokens seen, grammar position."""

    params: SamplingParams
    history: list[int]
    generated: int = 0
    generator: torch.Generator = field(default_factory=torch.Generator)
    matcher: RowMatcher | None = None
    constraint_done: bool = False
    """The grammar has ended the row: the token chosen for it was end-of-sequence."""
    pending_logprobs: deque[TokenLogprob] = field(default_factory=deque)
    """``select_tokens`` appends one per token for rows with ``params.logprobs``; the scheduler
    takes them in order as it accepts the tokens (a queue, so a pipelined step cannot overwrite
    one the scheduler has not read yet)."""
    completion_counts: torch.Tensor | None = None
    """How often each token id occurs in the completion (rows with presence/frequency penalty)."""

    def __post_init__(self) -> None:
        seed = self.params.seed if self.params.seed is not None else random.getrandbits(63)
        self.generator.manual_seed(seed)
        if self.params.constraint is not None and self.matcher is None:
            self.matcher = self.params.constraint.matcher()


def select_tokens(
    logits: torch.Tensor, rows: Sequence[RowSampler], eos_ids: frozenset[int]
) -> list[int]:
    """Choose the next token for every row of ``logits`` ``[rows, vocab]`` (see module doc)."""
    logits = logits.float()
    device = logits.device
    penalised, no_eos, constrained, sampled, wants_logprobs = [], [], [], [], []
    for i, row in enumerate(rows):
        params = row.params
        if params.repetition_penalty != 1.0 and row.history:
            _apply_repetition_penalty(logits, i, row)
        if params.penalised:
            penalised.append(i)
        if row.matcher is not None:
            constrained.append(i)  # its grammar decides the end, not ignore_eos/min_new_tokens
        elif params.ignore_eos or row.generated < params.min_new_tokens:
            no_eos.append(i)
        if not params.greedy:
            sampled.append(i)
        if params.logprobs:
            wants_logprobs.append(i)
    if penalised:
        _apply_presence_frequency(logits, penalised, rows)
    if no_eos and eos_ids:
        r_idx = torch.tensor(no_eos, device=device).unsqueeze(1)
        e_idx = torch.tensor(sorted(eos_ids), device=device).unsqueeze(0)
        logits[r_idx, e_idx] = float("-inf")
    if constrained:
        _apply_constraints(logits, constrained, rows, eos_ids)
    tokens = [int(t) for t in logits.argmax(dim=-1).tolist()]
    if sampled:
        drawn = _sample(logits[sampled], [rows[i] for i in sampled])
        for i, token in zip(sampled, drawn, strict=True):
            tokens[i] = token
    if wants_logprobs:
        _record_logprobs(logits, wants_logprobs, rows, tokens)
    for i in penalised:
        _completion_counts(rows[i], logits)[tokens[i]] += 1
    for i in constrained:
        _advance(rows[i], tokens[i], eos_ids)
    return tokens


def _apply_repetition_penalty(logits: torch.Tensor, i: int, row: RowSampler) -> None:
    """transformers' rule over prompt and completion: divide positive logits, multiply negative."""
    penalty = row.params.repetition_penalty
    idx = torch.tensor(sorted(set(row.history)), dtype=torch.long, device=logits.device)
    seen = logits[i, idx]
    logits[i, idx] = torch.where(seen < 0, seen * penalty, seen / penalty)


def _apply_presence_frequency(
    logits: torch.Tensor, indices: list[int], rows: Sequence[RowSampler]
) -> None:
    """OpenAI's ``logit -= presence * (count > 0) + frequency * count`` over completion tokens."""
    device = logits.device
    counts = torch.stack([_completion_counts(rows[i], logits) for i in indices])
    presence = torch.tensor([rows[i].params.presence_penalty for i in indices], device=device)
    frequency = torch.tensor([rows[i].params.frequency_penalty for i in indices], device=device)
    penalty = torch.addcmul(frequency.unsqueeze(1) * counts, presence.unsqueeze(1),
                            counts.clamp(max=1.0))  # counts are whole numbers: clamp = (c > 0)
    idx = torch.tensor(indices, device=device)
    logits[idx] = logits[idx] - penalty


def _completion_counts(row: RowSampler, logits: torch.Tensor) -> torch.Tensor:
    if row.completion_counts is None:
        row.completion_counts = torch.zeros(logits.shape[-1], device=logits.device)
    return row.completion_counts


def _apply_constraints(
    logits: torch.Tensor, indices: list[int], rows: Sequence[RowSampler], eos_ids: frozenset[int]
) -> None:
    """Mask what each constrained row's grammar forbids; a finished or stuck row gets EOS only."""
    device, vocab = logits.device, logits.shape[-1]
    matchers = [_matcher(rows[i]) for i in indices]
    allowed = allowed_tokens(matchers, vocab, device)
    eos = min(eos_ids, default=0)
    only_eos = torch.zeros(vocab, dtype=torch.bool, device=device)
    only_eos[eos] = True
    dead_ends = (~allowed.any(dim=-1)).tolist()
    for k, (i, matcher, dead_end) in enumerate(zip(indices, matchers, dead_ends, strict=True)):
        if matcher.complete or dead_end:
            if not matcher.complete:
                log.warning("No token fits the grammar (%s); ending the row",
                            matcher.failed or "dead end")
            allowed[k] = only_eos
            logits[i, eos] = 0.0
            rows[i].constraint_done = True
    idx = torch.tensor(indices, device=device)
    logits[idx] = torch.where(allowed, logits[idx], float("-inf"))


def _matcher(row: RowSampler) -> RowMatcher:
    assert row.matcher is not None, "only constrained rows are passed here"
    return row.matcher


def _advance(row: RowSampler, token: int, eos_ids: frozenset[int]) -> None:
    matcher = _matcher(row)
    if row.constraint_done:
        return
    if token in eos_ids:  # the grammar allowed the end here and the row took it
        row.constraint_done = True
    elif not matcher.advance(token):
        log.warning("The grammar rejected token %d (%s); ending the row", token, matcher.failed)
        row.constraint_done = True


def _record_logprobs(
    logits: torch.Tensor, indices: list[int], rows: Sequence[RowSampler], tokens: list[int]
) -> None:
    device = logits.device
    temperatures = [1.0 if rows[i].params.greedy else rows[i].params.temperature for i in indices]
    chosen_logits = logits if len(indices) == logits.shape[0] else logits[indices]
    if any(t != 1.0 for t in temperatures):
        chosen_logits = chosen_logits / torch.tensor(temperatures, device=device).unsqueeze(1)
    # log_softmax(x)[t] = x[t] - logsumexp(x): only the chosen and the top entries are needed
    log_total = torch.logsumexp(chosen_logits, dim=-1, keepdim=True)
    chosen = torch.tensor([tokens[i] for i in indices], device=device).unsqueeze(1)
    chosen_lp = (chosen_logits.gather(1, chosen) - log_total).squeeze(1).tolist()
    k = min(MAX_TOP_LOGPROBS, logits.shape[-1], max(rows[i].params.top_logprobs for i in indices))
    top_values, top_ids = chosen_logits.topk(k, dim=-1) if k else (log_total[:, :0], chosen[:, :0])
    top_lp_rows, top_id_rows = (top_values - log_total).tolist(), top_ids.tolist()
    for n, i in enumerate(indices):
        want = min(rows[i].params.top_logprobs, MAX_TOP_LOGPROBS)
        top = tuple(
            (int(t), float(lp))
            for t, lp in zip(top_id_rows[n][:want], top_lp_rows[n][:want], strict=True)
            if lp != float("-inf")
        )
        rows[i].pending_logprobs.append(TokenLogprob(tokens[i], float(chosen_lp[n]), top))


def _sample(logits: torch.Tensor, rows: Sequence[RowSampler]) -> list[int]:
    """Temperature (and top-k/top-p where asked), then inverse-CDF with each row's own RNG.

    Rows without top-k/top-p draw from the unsorted distribution: sorting the vocabulary is by
    far the dearest part of sampling on a CPU (tens of ms for 16 rows of 32k tokens).
    """
    device = logits.device
    temps = torch.tensor([r.params.temperature for r in rows], device=device).unsqueeze(1)
    uniform = torch.cat([torch.rand(1, generator=r.generator) for r in rows]).to(device)
    scaled = logits / temps
    tokens = [0] * len(rows)
    plain: list[int] = []
    truncated: list[int] = []
    for n, row in enumerate(rows):
        untruncated = row.params.top_k <= 0 and row.params.top_p >= 1.0
        (plain if untruncated else truncated).append(n)
    if plain:
        picked = _draw(torch.softmax(scaled[plain], dim=-1), uniform[plain])
        for n, token in zip(plain, picked.tolist(), strict=True):
            tokens[n] = int(token)
    if truncated:
        picked = _draw_truncated(scaled[truncated], [rows[n] for n in truncated],
                                 uniform[truncated])
        for n, token in zip(truncated, picked.tolist(), strict=True):
            tokens[n] = int(token)
    return tokens


def _draw(probs: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """Inverse CDF; ``right=True`` so that a token of probability 0 is never drawn."""
    cdf = probs.cumsum(dim=-1)
    cdf = cdf / cdf[:, -1:]
    pick = torch.searchsorted(cdf, uniform.unsqueeze(1), right=True)
    return pick.clamp(max=probs.shape[-1] - 1).squeeze(1)


def _draw_truncated(
    scaled: torch.Tensor, rows: Sequence[RowSampler], uniform: torch.Tensor
) -> torch.Tensor:
    """Top-k then top-p (as transformers orders them) on the best candidates, sorted."""
    device = scaled.device
    vocab = scaled.shape[-1]
    top_ks = [r.params.top_k if 0 < r.params.top_k < vocab else vocab for r in rows]
    width = max(top_ks)  # every row's candidates are among the ``width`` best
    if width < vocab:
        sorted_logits, sorted_idx = scaled.topk(width, dim=-1)
    else:
        sorted_logits, sorted_idx = scaled.sort(dim=-1, descending=True)
    ks = torch.tensor(top_ks, device=device).unsqueeze(1)
    ranks = torch.arange(width, device=device).unsqueeze(0)
    sorted_logits = sorted_logits.masked_fill(ranks >= ks, float("-inf"))
    probs = torch.softmax(sorted_logits, dim=-1)
    # nucleus as in transformers: the smallest prefix whose mass reaches top_p (1.0 = off)
    top_ps = torch.tensor(
        [r.params.top_p if r.params.top_p < 1.0 else float("inf") for r in rows], device=device
    ).unsqueeze(1)
    outside = (probs.cumsum(dim=-1) - probs) >= top_ps  # always keeps the most likely token
    probs = probs.masked_fill(outside, 0.0)
    pick = _draw(probs, uniform)
    return sorted_idx.gather(1, pick.unsqueeze(1)).squeeze(1)
