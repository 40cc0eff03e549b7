"""What one request sees of the scheduler: its handle, the events it streams, its result.

Why apart from the scheduler: the routers need only these (to stream, collect and cancel), and
the scheduler's loop is long enough on its own. The scheduler fills a handle's events and counts;
a router reads them and calls ``cancel`` when its client leaves.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from .detok import IncrementalText
from .errors import ServerError
from .sampling import RowSampler, SamplingParams, TokenLogprob

__all__ = ["GenerationResult", "RequestHandle", "StreamEvent"]


@dataclass(frozen=True)
class StreamEvent:
    """A piece of text; ``finish_reason`` is set on the last event (stop, length, cancelled).

    ``logprobs``: for requests that asked, one entry per token accepted since the previous event
    (text held back, e.g. a possible stop string, delays them to the event that carries it).
    """

    text: str
    finish_reason: str | None = None
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class GenerationResult:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    logprobs: tuple[TokenLogprob, ...] = ()


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
    completion_ids: list[int] = field(default_factory=list)
    """The generated tokens that make up the text (the end-of-sequence token is not one)."""
    unsent_logprobs: list[TokenLogprob] = field(default_factory=list)
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
        events = [event async for event in self.stream()]
        return GenerationResult(
            "".join(event.text for event in events), len(self.prompt_ids),
            self.completion_tokens, self.finish_reason or "stop",
            tuple(lp for event in events for lp in event.logprobs),
        )
