"""Helpers shared by the generation routers: waiting for a result while watching the client.

Why watch: a client that goes away must free its batch slot at once instead of occupying the
model until ``max_tokens``. After FastAPI has read the body, the next ASGI ``receive`` returns
``http.disconnect`` when the connection closes; a small task waits for it and cancels the request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import Request

from ..batching import GenerationResult, RequestHandle, StreamEvent

__all__ = ["collect", "log_ignored", "stream_events"]

log = logging.getLogger("inference_server.routers")


async def _watch_disconnect(request: Request, handle: RequestHandle) -> None:
    while not handle.done:
        message = await request.receive()
        if message.get("type") == "http.disconnect":
            handle.cancel()
            return
        await asyncio.sleep(0.05)  # an unexpected message: do not spin


@contextlib.asynccontextmanager
async def _watching(request: Request, handle: RequestHandle) -> AsyncIterator[None]:
    watcher = asyncio.create_task(_watch_disconnect(request, handle))
    try:
        yield
    finally:
        watcher.cancel()
        handle.cancel()  # no-op when finished; frees the slot when we leave early


async def collect(request: Request, handle: RequestHandle) -> GenerationResult:
    async with _watching(request, handle):
        return await handle.result()


async def stream_events(request: Request, handle: RequestHandle) -> AsyncIterator[StreamEvent]:
    async with _watching(request, handle):
        async for event in handle.stream():
            yield event


def log_ignored(endpoint: str, fields: list[str]) -> None:
    """Log the first few ignored field names (shortened), so a hostile body cannot flood logs."""
    if fields:
        shown = ", ".join(repr(name[:40]) for name in fields[:10])
        more = f" and {len(fields) - 10} more" if len(fields) > 10 else ""
        log.info("%s: ignoring unsupported field(s): %s%s", endpoint, shown, more)
