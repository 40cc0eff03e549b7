"""A small, bounded thread pool for tokenization and chat-template rendering.

Tokenizing a prompt of a megabyte takes a noticeable fraction of a second; done on the event loop
it would stall every other request, ``/health`` included, and a few such prompts at once would
make the liveness probe fail. Routers therefore hand that work to ``TextPool.run``, which runs it
on a fixed number of worker threads. The number of jobs queued or running is bounded: beyond
``max_pending`` the request is refused with 429 instead of piling up. A job counts until its
thread has finished it, even when the client that asked for it has gone away.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

from .errors import QueueFullError

__all__ = ["TextPool"]

P = ParamSpec("P")
T = TypeVar("T")


class TextPool:
    """``await pool.run(fn, *args)``: ``fn`` on a worker thread, at most ``max_pending`` at once."""

    def __init__(self, threads: int, max_pending: int) -> None:
        if threads < 1 or max_pending < 1:
            raise ValueError("TextPool needs at least one thread and one pending slot")
        self.threads = threads
        self.max_pending = max_pending
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._pending = 0

    @property
    def pending(self) -> int:
        """Jobs queued or running right now."""
        with self._lock:
            return self._pending

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix="kaito-text")
        return self._executor

    def _release(self, _: Future[Any]) -> None:
        with self._lock:
            self._pending -= 1

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        with self._lock:
            if self._pending >= self.max_pending:
                raise QueueFullError(
                    f"server busy: {self._pending} prompts are being tokenized; retry later"
                )
            self._pending += 1
        try:
            future = self._pool().submit(fn, *args, **kwargs)
        except BaseException:
            with self._lock:
                self._pending -= 1
            raise
        future.add_done_callback(self._release)
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        """Stop the threads; queued jobs are cancelled, running ones finish on their own."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
