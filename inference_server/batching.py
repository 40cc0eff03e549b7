"""The scheduler: continuous batching of concurrent requests onto one model.

How it works. Requests wait in a bounded queue (full → ``QueueFullError`` → 429); requests being
prefilled still count against that bound. One asyncio task runs the loop; every iteration is one
*step*, executed on a single dedicated model thread so the event loop keeps serving HTTP while
the model computes (and torch keeps one intra-op thread team):

1. rows whose request finished or whose client left free their KV slots (``KVBatch.drop``: the
   last rows move into the holes, so ``running`` is reordered the same way);
2. the running rows get one decode step (their last sampled token goes in, logits come out);
3. waiting requests are admitted into free slots: prefilled together (left-padded) and appended
   to the slot cache, so a new request never waits for the batch to drain;
4. a token is chosen per row with that row's own sampling parameters and RNG.

Steps are pipelined: step k+1 is handed to the model thread *before* step k's tokens are handed
out, so detokenizing, checking EOS, the token limit and stop strings, and pushing to each
request's event queue (which the router streams or collects) overlap the next forward. A row
that ends by its token count leaves before that step; one that ends otherwise (EOS, a stop
string) is decoded once more and that token is dropped. Requests the batch loop cannot express
(beam search, typical-p, other generation keys of ``/chat``) run alone through
``model.generate`` between steps, once the running rows are done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import Any

from .detok import IncrementalText
from .engine import Engine
from .errors import InvalidRequestError, QueueFullError, ServerError
from .metrics import ServerMetrics
from .request_handle import RequestHandle, StreamEvent
from .sampling import RowSampler, SamplingParams, TokenLogprob
from .stepper import BatchStepper

__all__ = ["Scheduler"]

log = logging.getLogger(__name__)


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
        self._stepper = BatchStepper(engine)
        self._pending: list[tuple[RequestHandle, int]] = []
        """The last step's tokens, handed to their requests while the next step computes."""
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
        for handle in [*self.running, *self._admitting, *self.waiting]:
            self._finish(handle, "cancelled")
        self.running, self._admitting = [], []
        self.waiting.clear()
        self._stepper.close()

    # ---------------------------------------------------------------- submit

    def submit(
        self, prompt_ids: list[int], params: SamplingParams,
        exclusive: dict[str, Any] | None = None,
    ) -> RequestHandle:
        """Queue a request or raise ``QueueFullError`` (the caller answers 429)."""
        busy = len(self.running) + len(self._admitting)  # rows being prefilled hold slots too
        free_slots = max(0, self.max_batch_size - busy)
        if len(self.waiting) >= self.queue_size + free_slots:
            raise QueueFullError(
                f"server busy: {len(self.waiting)} requests waiting, {busy} running; retry later"
            )
        decode = lambda ids: self.engine.decode(  # noqa: E731
            ids, skip_special_tokens=params.skip_special_tokens, clean_up=params.clean_up
        )
        text = IncrementalText(decode, params.stop, clean_up=params.clean_up)
        handle = RequestHandle(prompt_ids, params, exclusive, text)
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
                self.running, self._admitting, self._pending = [], [], []
                self._stepper.reset()
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
        last = {h for h, _ in self._pending if self._reaches_length(h)}
        gone = [i for i, h in enumerate(self.running) if h.done or h.cancelled or h in last]
        for i in gone:
            if self.running[i].cancelled:
                self._finish(self.running[i], "cancelled")
        staying = len(self.running) - len(gone)
        admitted: list[RequestHandle] = []
        if self.waiting and self._needs_exclusive(self.waiting[0]):
            if not staying:
                self._release(gone)
                self._deliver()
                await self._run_exclusive(self.waiting.popleft())
                return
            # otherwise admit nobody: the batch drains before the exclusive request runs
        else:
            while self.waiting and staying + len(admitted) < self.max_batch_size:
                if self._needs_exclusive(self.waiting[0]):
                    break
                admitted.append(self.waiting.popleft())
        if not staying and not admitted:
            self._release(gone)
            self._deliver()
            return
        for handle in admitted:
            handle.sampler = RowSampler(handle.params, list(handle.prompt_ids))
            self.metrics.prompt_tokens.inc(len(handle.prompt_ids))
        self._admitting = admitted
        step = self._stepper.step(
            [_sampler(h) for h in self.running], gone, [h.prompt_ids for h in admitted],
            [_sampler(h) for h in admitted],
        )
        self._deliver()  # the previous step's tokens, while this step computes
        order, tokens = await step
        self._admitting = []
        self.running = [self.running[i] for i in order] + admitted
        self._pending = list(zip(self.running, tokens, strict=True))
        self.metrics.batch_size.observe(len(self.running))

    def _reaches_length(self, handle: RequestHandle) -> bool:
        """Whether the token not yet handed to ``handle`` is its last by count (no step needed)."""
        produced = handle.completion_tokens + 1
        return (
            produced >= handle.params.max_new_tokens
            or len(handle.prompt_ids) + produced >= self.context_length
        )

    def _deliver(self) -> None:
        """Hand the last step's tokens to their requests (detokenize, check stops, emit).

        This runs while the model computes the next step, so a row that finishes here (EOS, a
        stop string) is decoded once more before its slot is freed; that token is discarded.
        Rows that end by their token count are known in advance and left out of that step.
        """
        pending, self._pending = self._pending, []
        for handle, token in pending:
            if not handle.done and not handle.cancelled:
                self._accept(handle, token)

    def _release(self, gone: list[int]) -> None:
        """Forget the rows ``gone`` when no step follows (an idle or exclusive scheduler)."""
        if gone:
            dropped = set(gone)
            self.running = [h for i, h in enumerate(self.running) if i not in dropped]
            self._stepper.reset()

    def _accept(self, handle: RequestHandle, token: int) -> None:
        """Record one generated token for ``handle`` and decide whether it is finished."""
        sampler = _sampler(handle)
        handle.completion_tokens += 1
        self.metrics.generation_tokens.inc()
        if handle.completion_tokens == 1:
            self.metrics.ttft.observe(time.perf_counter() - handle.submitted)
        logprob = sampler.pending_logprobs.popleft() if sampler.pending_logprobs else None
        if token in self.engine.eos_token_ids and (
            not handle.params.ignore_eos or handle.params.constraint is not None
        ):  # a constrained row's grammar decides its end: EOS comes only when it is complete
            self._finish(handle, "stop")
            return
        handle.completion_ids.append(token)
        if logprob is not None:
            handle.unsent_logprobs.append(logprob)
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
            ids = await self._stepper.submit(self.engine.generate, handle.prompt_ids, options)
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
            handle.events.put_nowait(StreamEvent(text, logprobs=_take_logprobs(handle)))

    def _finish(self, handle: RequestHandle, reason: str) -> None:
        if handle.done:
            return
        if reason == "cancelled":
            self.metrics.cancelled.inc()
        rest = "" if reason == "cancelled" else handle.text.finish()
        handle.finish_reason = reason
        handle.events.put_nowait(StreamEvent(rest, reason, _take_logprobs(handle)))


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


def _take_logprobs(handle: RequestHandle) -> tuple[TokenLogprob, ...]:
    """The logprobs accepted since the last event, for the event about to be sent."""
    taken = tuple(handle.unsent_logprobs)
    handle.unsent_logprobs.clear()
    return taken


def _sampler(handle: RequestHandle) -> RowSampler:
    assert handle.sampler is not None, "admitted requests always have a sampler"
    return handle.sampler
