"""Load over loopback HTTP: ``concurrency`` clients ask one server for OpenAI completions.

A streamed request (SSE) shows the time to its first token; its tokens are the
``usage.completion_tokens`` of the final chunk (both servers send it with
``stream_options.include_usage``). A request that is not streamed counts the ``usage`` of its
answer (what throughput-bound clients see: no per-token events). A request that generated
another count than asked is reported, since the comparison only holds when both do the same
work.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class LoadResult:
    tokens: int = 0
    wall_s: float = 0.0
    ttft_s: list[float] = field(default_factory=list)
    short: list[int] = field(default_factory=list)  # completion_tokens of requests that fell short

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_s if self.wall_s else 0.0

    def ttft_quantile(self, q: float) -> float:
        values = sorted(self.ttft_s)
        return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


async def _one(client: httpx.AsyncClient, url: str, body: dict[str, Any],
               result: LoadResult) -> None:
    start = time.perf_counter()
    first: float | None = None
    usage: dict[str, Any] | None = None
    if not body.get("stream"):
        answer = await client.post(url, json=body)
        if answer.status_code != 200:
            raise RuntimeError(f"{url}: HTTP {answer.status_code}: {answer.text[:300]}")
        usage = answer.json().get("usage")
        _count(result, int(usage["completion_tokens"]) if usage else 0, body)
        return
    async with client.stream("POST", url, json=body) as response:
        if response.status_code != 200:
            detail = (await response.aread()).decode(errors="replace")[:300]
            raise RuntimeError(f"{url}: HTTP {response.status_code}: {detail}")
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if first is None and any(c.get("text") for c in chunk.get("choices", [])):
                first = time.perf_counter() - start
            usage = chunk.get("usage") or usage
    if first is not None:
        result.ttft_s.append(first)
    _count(result, int(usage["completion_tokens"]) if usage else 0, body)


def _count(result: LoadResult, got: int, body: dict[str, Any]) -> None:
    result.tokens += got
    if got != body["max_tokens"]:
        result.short.append(got)


async def run_load(base_url: str, bodies: Callable[[int], dict[str, Any]], requests: int,
                   concurrency: int, timeout: float) -> LoadResult:
    """Send ``requests`` requests (``bodies(i)``), ``concurrency`` at a time; time the whole."""
    result = LoadResult()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:

        async def worker() -> None:
            while not queue.empty():
                await _one(client, f"{base_url}/v1/completions", bodies(queue.get_nowait()), result)

        start = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(concurrency))), timeout)
        result.wall_s = time.perf_counter() - start
    return result
