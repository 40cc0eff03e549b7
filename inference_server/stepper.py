"""The model side of the scheduler: batch steps on one thread, over the slot KV cache.

Why a separate object: the scheduler (``batching.py``) decides *who* runs — the queue, admission,
finishing, streaming — on the event loop; this decides *how* a step runs. Every step (and every
exclusive ``model.generate``) runs on one dedicated thread, so the event loop stays free while the
model computes and torch keeps a single intra-op thread team (a pool of changing threads would
create one team per thread and oversubscribe the cores). The stepper owns the running rows' KV
cache and each row's next input token, in slot order.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

import torch

from .engine import Engine
from .kvbatch import KVBatch
from .sampling import RowSampler, select_tokens

__all__ = ["BatchStepper"]

P = ParamSpec("P")
T = TypeVar("T")


class BatchStepper:
    """``await stepper.step(...)`` runs one batch step on the model thread (see module doc)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._batch: KVBatch | None = None
        self._inputs: list[int] = []
        """Each row's last sampled token: the next decode step's input, in slot order."""
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="kaito-model")

    def step(
        self, rows: Sequence[RowSampler], gone: list[int], prompts: list[list[int]],
        admitted: Sequence[RowSampler],
    ) -> asyncio.Future[tuple[list[int], list[int]]]:
        """Free the slots ``gone``, decode the other ``rows``, prefill ``prompts``, sample.

        The step is on the model thread when this returns, so the caller can do other work
        before awaiting it. ``rows`` are the running rows' samplers in slot order. The result is
        the new slot order (the old row index per slot, see ``KVBatch.drop``) and one token per
        row: the remaining rows in that order, then the admitted ones.
        """
        return self.submit(self._compute, list(rows), gone, prompts, list(admitted))

    def submit(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> asyncio.Future[T]:
        """Start ``fn`` on the model thread (exclusive ``generate`` calls go here too)."""
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(self._thread, functools.partial(fn, *args, **kwargs))

    def reset(self) -> None:
        """Forget every row (no step is running): the cache is rebuilt by the next step."""
        self._batch, self._inputs = None, []

    def close(self) -> None:
        self.reset()
        self._thread.shutdown(wait=False, cancel_futures=True)

    @torch.inference_mode()
    def _compute(
        self, rows: list[RowSampler], gone: list[int], prompts: list[list[int]],
        admitted: list[RowSampler],
    ) -> tuple[list[int], list[int]]:
        eos = self.engine.eos_token_ids
        if self._batch is None:
            self._batch = self.engine.new_batch()
        batch = self._batch
        order = batch.drop(gone) if gone else list(range(batch.rows))
        samplers = [rows[i] for i in order]
        tokens: list[int] = []
        if order:
            inputs = torch.tensor([self._inputs[i] for i in order], dtype=torch.long)
            tokens = select_tokens(self.engine.decode_step(batch, inputs), samplers, eos)
        if prompts:
            logits = self.engine.prefill(batch, prompts)
            tokens += select_tokens(logits, admitted, eos)
            samplers += admitted
        for sampler, token in zip(samplers, tokens, strict=True):
            sampler.generated += 1  # here, not when the token is handed out: the next step
            sampler.history.append(token)  # may already be reading them
        self._inputs = tokens
        return order, tokens
