"""A preallocated slot KV cache for sequences decoded together, which rows join and leave.

Why this exists: continuous batching adds newly prefilled sequences to a batch that is already
decoding and drops sequences that finished, without restarting the others. transformers'
``DynamicCache`` grows every layer with ``torch.cat`` on every step, and merging or dropping rows
copies every layer of every row. Here each layer owns one buffer ``[slots, heads, capacity,
head_dim]`` for keys and one for values:

* rows are slots ``0 .. rows-1``, kept contiguous; a leaving row is replaced by the *last* row, so
  a leave copies one row and a join writes only the new rows;
* all rows share one time axis: every row's newest token sits in column ``end - 1`` and row ``r``
  starts at column ``row_start[r]`` (left padding, masked); a decode step writes column ``end`` of
  every row in one copy per layer and attends over the view ``[:rows, :, start:end + 1]``;
* the buffers grow by doubling (slots and columns) and are compacted when they are reallocated, so
  their copies cost O(1) per token amortised.

The attention mask (4-D, boolean) and the rotary positions are built per step from ``row_start``
in two tensor operations, so a row's positions do not depend on its neighbours' padding: greedy
outputs are identical batched and alone. Prompts are prefilled with transformers' own masking into
a ``DynamicCache`` and then copied into their slots. Only full-attention models (optionally with
one sliding window for every layer, as Mistral-style configs have) use this cache; the engine
serves the others one request at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import Cache, CacheLayerMixin

__all__ = ["KVBatch", "LeanStep", "decode_step", "prefill", "prefill_cache"]

_MIN_COLUMNS = 64


class _SlotLayer(CacheLayerMixin):
    """One layer's view of the shared slot buffers; ``update`` appends the decode step's token."""

    is_sliding = False

    def __init__(self, owner: KVBatch, index: int) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._owner = owner
        self._index = index
        self.is_initialized = True

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        """The buffers are allocated by ``KVBatch.add``, never lazily by the model."""

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self._owner._append(self._index, key_states, value_states)

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self._owner.end - self._owner.start + query_length, 0

    def get_seq_length(self) -> int:
        return self._owner.end - self._owner.start

    def get_max_length(self) -> int:
        return -1


class KVBatch(Cache):
    """The running rows' keys and values in preallocated slots (see the module docstring)."""

    def __init__(self, num_layers: int, sliding_window: int | None = None) -> None:
        super().__init__(layers=[_SlotLayer(self, i) for i in range(num_layers)])
        self.sliding_window = sliding_window
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.rows = 0
        self.start = 0
        self.end = 0
        self.row_start = torch.zeros(0, dtype=torch.long)

    @property
    def slots(self) -> int:
        return int(self.row_start.shape[0])

    @property
    def capacity(self) -> int:
        return int(self.keys[0].shape[2]) if self.keys else 0

    @property
    def width(self) -> int:
        """Columns a decode step attends over (before its own token)."""
        return self.end - self.start

    # ------------------------------------------------------------ rows join and leave

    @torch.inference_mode()
    def add(self, cache: Any, lengths: Sequence[int]) -> None:
        """Append the rows of a left-padded prefill ``cache`` (prompt ``lengths``) as new slots."""
        layers = [(layer.keys, layer.values) for layer in cache.layers]
        joining, width = len(lengths), int(layers[0][0].shape[2])
        if self.rows == 0:
            self.start = self.end = width
        self._reserve(self.rows + joining, left=width, right=1, like=layers[0][0])
        first, last = self.rows, self.rows + joining
        for layer, (keys, values) in enumerate(layers):
            self.keys[layer][first:last, :, self.end - width:self.end] = keys
            self.values[layer][first:last, :, self.end - width:self.end] = values
        self.row_start[first:last] = self.end - torch.tensor(lengths, dtype=torch.long)
        self.rows = last
        self.start = int(self.row_start[:last].min())

    @torch.inference_mode()
    def drop(self, rows: Sequence[int]) -> list[int]:
        """Free the slots ``rows``; return, for each remaining slot, the row it held before.

        The last rows move into the freed slots (one row copy each), so the result is the old
        order with holes filled from the end, e.g. dropping 1 of 0..4 gives ``[0, 4, 2, 3]``.
        """
        gone = set(rows)
        remaining = self.rows - len(gone)
        order = list(range(remaining))
        holes = [r for r in sorted(gone) if r < remaining]
        movers = [r for r in range(remaining, self.rows) if r not in gone]
        if holes:
            dst = torch.tensor(holes, dtype=torch.long)
            src = torch.tensor(movers, dtype=torch.long)
            device = self.keys[0].device
            dst_on, src_on = dst.to(device), src.to(device)
            for buffer in (*self.keys, *self.values):
                used = buffer[:, :, self.start:self.end]
                used.index_copy_(0, dst_on, used.index_select(0, src_on))
            self.row_start.index_copy_(0, dst, self.row_start.index_select(0, src))
            for hole, mover in zip(holes, movers, strict=True):
                order[hole] = mover
        self.rows = remaining
        self.start = int(self.row_start[:remaining].min()) if remaining else self.end
        return order

    # ------------------------------------------------------------------ decoding

    @torch.inference_mode()
    def step_inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The decode step's 4-D boolean attention mask and ``[rows, 1]`` positions."""
        self._reserve(self.rows, left=0, right=1, like=self.keys[0])
        columns = torch.arange(self.start, self.end + 1)
        starts = self.row_start[: self.rows].unsqueeze(1)
        mask = columns.unsqueeze(0) >= starts
        if self.sliding_window is not None:
            mask &= columns.unsqueeze(0) > self.end - self.sliding_window
        device = self.keys[0].device
        positions = self.end - starts
        return mask[:, None, None, :].to(device), positions.to(device)

    def _append(
        self, layer: int, keys: torch.Tensor, values: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the step's token into column ``end``; return the layer's attended view."""
        key_buffer, value_buffer = self.keys[layer], self.values[layer]
        key_buffer[: self.rows, :, self.end] = keys[:, :, -1]
        value_buffer[: self.rows, :, self.end] = values[:, :, -1]
        return (key_buffer[: self.rows, :, self.start:self.end + 1],
                value_buffer[: self.rows, :, self.start:self.end + 1])

    def advance(self) -> None:
        """Every layer has stored the step's token: it becomes part of the cached columns."""
        self.end += 1

    # ------------------------------------------------------------------- storage

    def _reserve(self, rows: int, *, left: int, right: int, like: torch.Tensor) -> None:
        """Make room for ``rows`` slots, ``left`` columns before ``end`` and ``right`` after it.

        The used columns move to the front: inside the same buffers when they have twice the
        room needed, else into new buffers of twice that (slots double too). Either way the
        next move is at least as many steps away as the columns it copies: O(1) per token.
        """
        fits = (
            self.keys and rows <= self.slots and self.end - left >= 0
            and self.end + right <= self.capacity
        )
        if fits:
            return
        used = self.end - self.start if self.rows else 0
        new_end = max(used, left)
        columns = max(_MIN_COLUMNS, _next_power_of_two(2 * (new_end + right)))
        if self.keys and rows <= self.slots and columns <= self.capacity:
            self._compact(used, new_end)  # room enough: no new buffers, no page faults
            return
        slots = max(self.slots, _next_power_of_two(rows))
        shape = (slots, int(like.shape[1]), columns, int(like.shape[3]))
        old = (self.keys, self.values)
        self.keys = [like.new_zeros(shape) for _ in self.layers]
        self.values = [like.new_zeros(shape) for _ in self.layers]
        if self.rows:
            for new, previous in zip((*self.keys, *self.values), (*old[0], *old[1]), strict=True):
                new[: self.rows, :, new_end - used:new_end] = (
                    previous[: self.rows, :, self.start:self.end])
        row_start = torch.zeros(slots, dtype=torch.long)
        row_start[: self.rows] = self.row_start[: self.rows] + (new_end - self.end)
        self.row_start = row_start
        self.start, self.end = new_end - used, new_end

    def _compact(self, used: int, new_end: int) -> None:
        """Move the used columns so that they end at ``new_end``, inside the same buffers."""
        if self.rows:
            for buffer in (*self.keys, *self.values):
                moved = buffer[: self.rows, :, self.start:self.end].clone()
                buffer[: self.rows, :, new_end - used:new_end] = moved
            self.row_start[: self.rows] += new_end - self.end
        self.start, self.end = new_end - used, new_end


def _next_power_of_two(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


@torch.inference_mode()
def prefill_cache(
    model: Any, prompts: list[list[int]], pad_id: int
) -> tuple[DynamicCache, torch.Tensor]:
    """Run the prompts (left-padded) through the model; return its cache and last-token logits."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
        mask[row, width - len(prompt):] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(
        input_ids=ids.to(model.device),
        attention_mask=mask.to(model.device),
        position_ids=positions.to(model.device),
        past_key_values=DynamicCache(),
        use_cache=True,
        logits_to_keep=1,
    )
    return out.past_key_values, out.logits[:, -1, :].float()


@torch.inference_mode()
def prefill(model: Any, batch: KVBatch, prompts: list[list[int]], pad_id: int) -> torch.Tensor:
    """Prefill ``prompts`` into new slots at the end of ``batch``; return next-token logits."""
    cache, logits = prefill_cache(model, prompts, pad_id)
    batch.add(cache, [len(p) for p in prompts])
    return logits


#: A decode step that replaces the transformers forward: (batch, tokens, mask, positions) → logits.
LeanStep = Callable[[KVBatch, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@torch.inference_mode()
def decode_step(
    model: Any, batch: KVBatch, tokens: torch.Tensor, lean: LeanStep | None = None
) -> torch.Tensor:
    """Feed each row's last sampled token; return the next-token logits ``[rows, vocab]``.

    ``lean`` (see ``fastdecode``) computes the same logits without transformers' per-module
    Python; without it the model's own forward runs on the slot cache.
    """
    mask, positions = batch.step_inputs()
    tokens = tokens.view(-1, 1).to(mask.device)
    if lean is not None:
        logits = lean(batch, tokens, mask, positions)
    else:
        out = model(
            input_ids=tokens,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=batch,
            use_cache=True,
        )
        logits = out.logits[:, -1, :].float()
    batch.advance()
    return logits
