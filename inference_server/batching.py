"""The scheduler: continuous batching of concurrent requests onto one model.

How it works. Requests wait in a bounded queue (full → ``QueueFullError`` → 429). One asyncio
task runs the loop; every iteration is one *step* executed in a worker thread so the event loop
keeps serving HTTP while the model computes:

1. rows whose request finished or whose client left are dropped from the KV batch;
2. the running rows get one decode step (their last sampled token goes in, logits come out);
3. waiting requests are admitted into free slots: prefilled together (left-padded) and merged
   into the running batch, so a new request never waits for the batch to drain;
4. a token is chosen per row with that row's own sampling parameters and RNG.

Back on the event loop each token is detokenized per request, checked against EOS, the token
limit and stop strings, and pushed to the request's event queue, which the router streams or
collects. Requests the batch loop cannot express (beam search, typical-p, other generation keys of
``/chat``) run alone through ``model.generate`` between steps, once the running rows are done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import torch

from .detok import IncrementalText
from .engine import Engine
from .errors import InvalidRequestError, QueueFullError, ServerError
from .kvbatch import KVBatch
from .metrics import ServerMetrics
from .sampling import RowSampler, SamplingParams, select_tokens

__all__ = ["GenerationResult", "RequestHandle", "Scheduler", "StreamEvent"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamEvent:
    """A piece of text; ``finish_reason`` is set on the last event (stop, length, cancelled)."""

    text: str
    finish_reason: str | None = None


@dataclass(frozen=True)
class GenerationResult:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


@dataclass(eq=False)
class RequestHandle:
    """One request's view of the scheduler: its events, its counts, and ``cancel``."""

    prompt_ids: list[int]
    params: SamplingParams
    exclusive: dict[str, Any] | None
    text: IncrementalText
    submitted: float = field(default_factory=time.perf_counter)
    events: asyncio.Queue[StreamEvent | ServerError] = field(default_factory=asyncio.Queue)
    sampler: RowSampler | None = None
    completion_tokens: int = 0
    finish_reason: str | None = None
    cancelled: bool = False
    _wake: asyncio.Event | None = None

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    def cancel(self) -> None:
        """The client left: free the slot at the next step boundary."""
        if not self.done and not self.cancelled:
            self.cancelled = True
            if self._wake is not None:
                self._wake.set()

    async def stream(self) -> AsyncIterator[StreamEvent]:
        while True:
            event = await self.events.get()
            if isinstance(event, ServerError):
                raise event
            yield event
            if event.finish_reason is not None:
                return

    async def result(self) -> GenerationResult:
        parts = [event.text async for event in self.stream()]
        return GenerationResult(
            "".join(parts), len(self.prompt_ids), self.completion_tokens,
            self.finish_reason or "stop",
        )


class Scheduler:
    """Owns the model's compute: admits, steps and retires requests (see module docstring)."""

    def __init__(
        self, engine: Engine, metrics: ServerMetrics, *, max_batch_size: int, queue_size: int
    ) -> None:
        self.engine = engine
        self.metrics = metrics
        self.max_batch_size = max_batch_size
        self.queue_size = queue_size
        self.context_length = engine.info.context_length
        self.waiting: deque[RequestHandle] = deque()
        self.running: list[RequestHandle] = []
        self._batch: KVBatch | None = None
        self._admitting: list[RequestHandle] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------- lifecycle

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="kaito-scheduler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for handle in [*self.running, *self.waiting]:
            self._finish(handle, "cancelled")
        self.running, self._batch = [], None
        self.waiting.clear()

    # ---------------------------------------------------------------- submit

    def submit(
        self, prompt_ids: list[int], params: SamplingParams,
        exclusive: dict[str, Any] | None = None,
    ) -> RequestHandle:
        """Queue a request or raise ``QueueFullError`` (the caller answers 429)."""
        free_slots = max(0, self.max_batch_size - len(self.running))
        if len(self.waiting) >= self.queue_size + free_slots:
            raise QueueFullError(
                f"server busy: {len(self.waiting)} requests waiting, {len(self.running)} running; "
                "retry later"
            )
        decode = lambda ids: self.engine.decode(  # noqa: E731
            ids, skip_special_tokens=params.skip_special_tokens, clean_up=params.clean_up
        )
        handle = RequestHandle(prompt_ids, params, exclusive, IncrementalText(decode, params.stop))
        handle._wake = self._wake
        self.waiting.append(handle)
        self.metrics.queue_depth.set(len(self.waiting))
        self._wake.set()
        return handle

    # ------------------------------------------------------------------ loop

    async def _loop(self) -> None:
        while True:
            self._drop_cancelled_waiting()
            if not self.running and not self.waiting:
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                await self._iteration()
            except Exception as exc:  # a failed step must not kill the server
                log.exception("Generation step failed")
                error = ServerError(f"generation failed: {type(exc).__name__}: {exc}")
                for handle in [*self.running, *self._admitting]:
                    if not handle.done:
                        handle.events.put_nowait(error)
                        handle.finish_reason = "error"
                self.running, self._admitting, self._batch = [], [], None
            self.metrics.queue_depth.set(len(self.waiting))
            self.metrics.running.set(len(self.running))

    def _drop_cancelled_waiting(self) -> None:
        if any(h.cancelled for h in self.waiting):
            for handle in [h for h in self.waiting if h.cancelled]:
                self.waiting.remove(handle)
                self._finish(handle, "cancelled")

    def _needs_exclusive(self, handle: RequestHandle) -> bool:
        return handle.exclusive is not None or not self.engine.supports_batching

    async def _iteration(self) -> None:
        if self.waiting and self._needs_exclusive(self.waiting[0]):
            if not self.running:
                await self._run_exclusive(self.waiting.popleft())
                return
            admitted: list[RequestHandle] = []  # let the batch drain first
        else:
            admitted = []
            while self.waiting and len(self.running) + len(admitted) < self.max_batch_size:
                if self._needs_exclusive(self.waiting[0]):
                    break
                admitted.append(self.waiting.popleft())
        keep = [i for i, h in enumerate(self.running) if not h.done and not h.cancelled]
        for handle in self.running:
            if handle.cancelled:
                self._finish(handle, "cancelled")
        previous = self.running
        self.running = [previous[i] for i in keep]
        for handle in admitted:
            handle.sampler = RowSampler(handle.params, list(handle.prompt_ids))
            self.metrics.prompt_tokens.inc(len(handle.prompt_ids))
        if not self.running and not admitted:
            self._batch = None
            return
        self._admitting = admitted
        tokens = await asyncio.to_thread(self._compute, keep, len(previous), admitted)
        self._admitting = []
        self.running.extend(admitted)
        self.metrics.batch_size.observe(len(self.running))
        for handle, token in zip(self.running, tokens, strict=True):
            self._accept(handle, token)

    @torch.inference_mode()
    def _compute(
        self, keep: list[int], previous_rows: int, admitted: list[RequestHandle]
    ) -> list[int]:
        """One step in the worker thread: decode running rows, prefill admitted ones, sample."""
        eos = self.engine.eos_token_ids
        tokens: list[int] = []
        batch = self._batch
        if batch is not None and keep:
            if len(keep) != previous_rows:
                batch = batch.select(keep)
            last = torch.tensor([h.text.ids[-1] for h in self.running], dtype=torch.long)
            batch, logits = self.engine.decode_step(batch, last)
            tokens = select_tokens(logits, [_sampler(h) for h in self.running], eos)
        else:
            batch = None
        if admitted:
            new_batch, logits = self.engine.prefill([h.prompt_ids for h in admitted])
            tokens += select_tokens(logits, [_sampler(h) for h in admitted], eos)
            batch = new_batch if batch is None else batch.merge(new_batch)
        self._batch = batch
        return tokens

    def _accept(self, handle: RequestHandle, token: int) -> None:
        """Record one generated token for ``handle`` and decide whether it is finished."""
        sampler = _sampler(handle)
        sampler.generated += 1
        sampler.history.append(token)
        handle.completion_tokens += 1
        self.metrics.generation_tokens.inc()
        if handle.completion_tokens == 1:
            self.metrics.ttft.observe(time.perf_counter() - handle.submitted)
        if token in self.engine.eos_token_ids and not handle.params.ignore_eos:
            self._finish(handle, "stop")
            return
        delta = handle.text.push(token)
        if handle.text.stopped:
            self._emit(handle, delta)
            self._finish(handle, "stop")
        elif (
            handle.completion_tokens >= handle.params.max_new_tokens
            or len(handle.prompt_ids) + handle.completion_tokens >= self.context_length
        ):
            self._emit(handle, delta)
            self._finish(handle, "length")
        else:
            self._emit(handle, delta)

    async def _run_exclusive(self, handle: RequestHandle) -> None:
        """Beam search and friends: ``model.generate`` alone, then report like a batch row."""
        self.metrics.prompt_tokens.inc(len(handle.prompt_ids))
        self.metrics.running.set(1)
        options = dict(handle.exclusive or _generate_options(handle.params))
        try:
            ids = await asyncio.to_thread(self.engine.generate, handle.prompt_ids, options)
        except (ValueError, TypeError) as exc:  # pass-through generate_kwargs it rejected
            handle.events.put_nowait(InvalidRequestError(f"generate() rejected the options: {exc}"))
            handle.finish_reason = "error"
            return
        except Exception as exc:
            log.exception("generate() failed")
            handle.events.put_nowait(ServerError(f"generation failed: {exc}"))
            handle.finish_reason = "error"
            return
        handle.sampler = RowSampler(handle.params, list(handle.prompt_ids))
        for token in ids:
            if handle.done:
                break
            self._accept(handle, token)
        if not handle.done:
            self._finish(handle, "length" if len(ids) >= options["max_new_tokens"] else "stop")

    def _emit(self, handle: RequestHandle, text: str) -> None:
        if text and not handle.done:
            handle.events.put_nowait(StreamEvent(text))

    def _finish(self, handle: RequestHandle, reason: str) -> None:
        if handle.done:
            return
        if reason == "cancelled":
            self.metrics.cancelled.inc()
        rest = "" if reason == "cancelled" else handle.text.finish()
        handle.finish_reason = reason
        handle.events.put_nowait(StreamEvent(rest, reason))


def _generate_options(params: SamplingParams) -> dict[str, Any]:
    """``model.generate`` options equivalent to ``params`` (for models that cannot batch)."""
    options: dict[str, Any] = {
        "max_new_tokens": params.max_new_tokens,
        "min_new_tokens": params.min_new_tokens,
        "do_sample": not params.greedy,
        "repetition_penalty": params.repetition_penalty,
        "seed": params.seed,
    }
    if not params.greedy:
        options |= {"temperature": params.temperature, "top_k": params.top_k,
                    "top_p": params.top_p}
    return options


def _sampler(handle: RequestHandle) -> RowSampler:
    assert handle.sampler is not None, "admitted requests always have a sampler"
    return handle.sampler
