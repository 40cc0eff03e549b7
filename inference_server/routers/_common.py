"""Helpers shared by the generation routers: waiting for results while watching the client.

Why watch: a client that goes away must free its batch slots at once instead of occupying the
model until ``max_tokens``. After FastAPI has read the body, the next ASGI ``receive`` returns
``http.disconnect`` when the connection closes; one small task per request waits for it and
cancels every handle of the request (``n`` choices are ``n`` handles).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from fastapi import Request

from ..errors import ServerError
from ..request_handle import RequestHandle, StreamEvent
from ..sampling import TokenLogprob

__all__ = ["Collected", "collect", "collect_all", "log_ignored", "stream_merged"]

log = logging.getLogger("inference_server.routers")


async def _watch_disconnect(request: Request, handles: Sequence[RequestHandle]) -> None:
    while not all(h.done for h in handles):
        message = await request.receive()
        if message.get("type") == "http.disconnect":
            for handle in handles:
                handle.cancel()
            return
        await asyncio.sleep(0.05)  # an unexpected message: do not spin


@contextlib.asynccontextmanager
async def _watching(request: Request, handles: Sequence[RequestHandle]) -> AsyncIterator[None]:
    watcher = asyncio.create_task(_watch_disconnect(request, handles))
    try:
        yield
    finally:
        watcher.cancel()
        for handle in handles:
            handle.cancel()  # no-op when finished; frees the slot when we leave early


@dataclass
class Collected:
    """One finished choice: its text, the logprobs of its tokens, why it ended."""

    text: str = ""
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str = "stop"


async def collect(request: Request, handle: RequestHandle) -> Collected:
    return (await collect_all(request, [handle]))[0]


async def collect_all(request: Request, handles: Sequence[RequestHandle]) -> list[Collected]:
    """Wait for every handle; a ``ServerError`` of any of them is raised."""
    results = [Collected() for _ in handles]
    parts: list[list[str]] = [[] for _ in handles]
    async for index, event in stream_merged(request, handles):
        parts[index].append(event.text)
        results[index].logprobs.extend(event.logprobs)
        if event.finish_reason is not None:
            results[index].finish_reason = event.finish_reason
    for result, pieces in zip(results, parts, strict=True):
        result.text = "".join(pieces)
    return results


async def stream_merged(
    request: Request, handles: Sequence[RequestHandle]
) -> AsyncIterator[tuple[int, StreamEvent]]:
    """(choice index, event) from all handles in arrival order, until every one has finished."""
    async with _watching(request, handles):
        if len(handles) == 1:
            async for event in handles[0].stream():
                yield 0, event
            return
        queue: asyncio.Queue[tuple[int, StreamEvent | ServerError | None]] = asyncio.Queue()

        async def pump(index: int, handle: RequestHandle) -> None:
            try:
                async for event in handle.stream():
                    queue.put_nowait((index, event))
            except ServerError as exc:
                queue.put_nowait((index, exc))
            queue.put_nowait((index, None))

        pumps = [asyncio.create_task(pump(i, h)) for i, h in enumerate(handles)]
        try:
            remaining = len(handles)
            while remaining:
                index, item = await queue.get()
                if item is None:
                    remaining -= 1
                elif isinstance(item, ServerError):
                    raise item
                else:
                    yield index, item
        finally:
            for task in pumps:
                task.cancel()


def log_ignored(endpoint: str, fields: list[str]) -> None:
    """Log the first few ignored field names (shortened), so a hostile body cannot flood logs."""
    if fields:
        shown = ", ".join(repr(name[:40]) for name in fields[:10])
        more = f" and {len(fields) - 10} more" if len(fields) > 10 else ""
        log.info("%s: ignoring unsupported field(s): %s%s", endpoint, shown, more)
