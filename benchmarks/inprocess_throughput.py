"""The server against plain ``model.generate``, in one process (``inference_throughput.py
--in-process``): no sockets, no second server, so it isolates the scheduler's own overhead.

Measures (a) ``model.generate`` one request at a time, (b) the server (the real FastAPI app,
scheduler and routers, driven through httpx's ASGI transport) at concurrency 1 and (c) at the
chosen concurrency. Every request generates exactly ``max_tokens`` tokens (greedy, EOS ignored).
Prints tokens/s and the ratios b/a (server overhead; goal >= 0.9) and c/b (batching gain).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from bench_models import PROMPTS, bandwidth_bound


def load_engine(model_dir: Path, dtype: str) -> Any:
    from inference_server.engine import TransformersEngine
    from inference_server.settings import ServerSettings

    return TransformersEngine.load(ServerSettings(model_dir=model_dir, adapters_dir=Path("/none"),
                                                  dtype=dtype))


def bench_generate(engine: Any, n: int, max_tokens: int) -> float:
    import torch

    tok, model = engine.tokenizer, engine.model
    total, start = 0, time.perf_counter()
    for i in range(n):
        ids = tok(PROMPTS[i % len(PROMPTS)], return_tensors="pt").input_ids.to(model.device)
        with torch.inference_mode():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                 max_new_tokens=max_tokens, min_new_tokens=max_tokens,
                                 pad_token_id=tok.pad_token_id)
        total += out.shape[1] - ids.shape[1]
    _sync()
    return total / (time.perf_counter() - start)


async def bench_server(engine: Any, n: int, max_tokens: int, concurrency: int) -> float:
    import httpx

    from inference_server.app import create_app
    from inference_server.settings import ServerSettings

    settings = ServerSettings(model_dir=Path(engine.info.model_path), adapters_dir=Path("/none"),
                              max_batch_size=max(16, concurrency), queue_size=4 * n,
                              max_new_tokens_cap=max_tokens)
    app = create_app(settings, engine)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://b", timeout=600) as c:
            queue: asyncio.Queue[int] = asyncio.Queue()
            for i in range(n):
                queue.put_nowait(i)
            counted = 0

            async def worker() -> None:
                nonlocal counted
                while not queue.empty():
                    i = queue.get_nowait()
                    r = await c.post("/v1/completions", json={
                        "prompt": PROMPTS[i % len(PROMPTS)], "max_tokens": max_tokens,
                        "temperature": 0, "ignore_eos": True})
                    r.raise_for_status()
                    counted += r.json()["usage"]["completion_tokens"]

            start = time.perf_counter()
            await asyncio.gather(*[worker() for _ in range(concurrency)])
            _sync()
            return counted / (time.perf_counter() - start)


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def run(model_dir: Path, dtype: str, max_tokens: int, requests: int, concurrency: int,
        repeat: int) -> None:
    engine = load_engine(model_dir, dtype)
    bench_generate(engine, 2, 8)  # warm-up
    asyncio.run(bench_server(engine, 2, 8, 2))
    n_c = max(requests, 2 * concurrency)
    a = b = c = 0.0
    for _ in range(repeat):  # interleaved, so a load spike hurts all three alike
        a = max(a, bench_generate(engine, requests, max_tokens))
        b = max(b, asyncio.run(bench_server(engine, requests, max_tokens, 1)))
        c = max(c, asyncio.run(bench_server(engine, n_c, max_tokens, concurrency)))
    print(f"best of {repeat}, in one process")
    print(f"(a) model.generate, one at a time : {a:10.1f} tokens/s")
    print(f"(b) server, concurrency 1         : {b:10.1f} tokens/s")
    print(f"(c) server, concurrency {concurrency:<10d}: {c:10.1f} tokens/s")
    print(f"b/a = {b / a:.2f} (goal >= 0.9)   c/b = {c / b:.2f}")
    bound = bandwidth_bound(model_dir)
    if bound is not None:
        name, per_seq = bound
        print(f"{name}: memory-bandwidth bound {per_seq:.1f} tokens/s per sequence "
              f"(b = {100 * b / per_seq:.0f}% of it)")
