"""Continuous batching: equality with single runs, bounded queue, disconnects free slots."""

from __future__ import annotations

import asyncio
import json

import pytest
from prometheus_client.parser import text_string_to_metric_families

from inference_server.app import create_app

from .conftest import serve

PROMPTS = [
    "Hello there",
    "The quick brown fox jumps over the lazy dog",
    "A",
    "def main():",
    "LoRA adapters change a few weights; strength scales how much",
    "0123",
]


def metric(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    raise KeyError(name)


def body(prompt: str, **extra) -> dict:
    return {"prompt": prompt, "max_tokens": 24, "temperature": 0, **extra}


async def until(predicate, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


@pytest.mark.parametrize("extra", [{}, {"temperature": 1.3, "top_p": 0.9, "seed": 5}],
                         ids=["greedy", "seeded-sampling"])
async def test_batched_equals_alone(client, extra):
    alone = []
    for p in PROMPTS:
        r = await client.post("/v1/completions", json=body(p, **extra))
        alone.append(r.json()["choices"][0]["text"])
    together = await asyncio.gather(
        *[client.post("/v1/completions", json=body(p, **extra)) for p in PROMPTS]
    )
    assert [r.json()["choices"][0]["text"] for r in together] == alone
    scrape = (await client.get("/metrics")).text
    # the concurrent wave really shared forward passes
    count = metric(scrape, "kaito_inference_batch_size_count")
    single = metric(scrape, "kaito_inference_batch_size_bucket", le="1.0")
    assert count - single >= 5


async def test_late_joiner_does_not_disturb_running_request(client):
    """A request admitted mid-decode (cache merge) leaves the running one's output unchanged."""
    long = body("Hello there", max_tokens=120, ignore_eos=True)
    solo = (await client.post("/v1/completions", json=long)).json()["choices"][0]["text"]
    sched = client.app.state.runtime.scheduler
    first = asyncio.create_task(client.post("/v1/completions", json=long))
    await until(lambda: sched.running and sched.running[0].completion_tokens >= 20)
    late = await client.post("/v1/completions", json=body("0123", max_tokens=10))
    assert late.status_code == 200
    assert (await first).json()["choices"][0]["text"] == solo
    scrape = (await client.get("/metrics")).text
    shared = metric(scrape, "kaito_inference_batch_size_count") - metric(
        scrape, "kaito_inference_batch_size_bucket", le="1.0")
    assert shared >= 9  # the late request really decoded inside the running batch


async def test_queue_full_answers_429(base_settings, base_engine):
    settings = base_settings.model_copy(update={"max_batch_size": 1, "queue_size": 1})
    app = create_app(settings, base_engine)
    async with serve(app) as c:
        sched = app.state.runtime.scheduler
        long = body("Hello", max_tokens=300, ignore_eos=True)
        running = asyncio.create_task(c.post("/v1/completions", json=long))
        await until(lambda: len(sched.running) == 1)
        queued = asyncio.create_task(c.post("/v1/completions", json=body("A", max_tokens=2)))
        await until(lambda: len(sched.waiting) == 1)
        refused = await c.post("/v1/completions", json=body("B"))
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["type"] == "rate_limit_error"
        chat = await c.post("/chat", json={"prompt": "x"})
        assert chat.status_code == 429 and "busy" in chat.json()["detail"]
        assert (await running).status_code == 200
        assert (await queued).status_code == 200
        # with the slot free again, requests are accepted
        assert (await c.post("/v1/completions", json=body("B"))).status_code == 200


async def _asgi_request(app, path: str, payload: dict, spec: str, leave_after_body: bool):
    """Drive the ASGI app directly so the test controls exactly when the client vanishes."""
    gone = asyncio.Event()
    sent: list[dict] = []
    raw = json.dumps(payload).encode()
    calls = 0

    async def receive():
        nonlocal calls
        calls += 1
        if calls == 1:
            return {"type": "http.request", "body": raw, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)
        if leave_after_body and message["type"] == "http.response.body" and message.get("body"):
            gone.set()

    scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": spec}, "http_version": "1.1",
        "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(),
        "query_string": b"", "root_path": "", "headers": [(b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1234), "server": ("test", 80),
    }
    task = asyncio.create_task(app(scope, receive, send))
    if not leave_after_body:
        sched = app.state.runtime.scheduler
        await until(lambda: sched.running and sched.running[0].completion_tokens >= 5)
        gone.set()
    await asyncio.wait_for(task, timeout=20)
    return sent


@pytest.mark.parametrize(
    ("stream", "spec"), [(True, "2.3"), (True, "2.4"), (False, "2.4")],
    ids=["stream-listening", "stream-asgi-2.4", "non-stream"],
)
async def test_disconnect_frees_the_slot(base_settings, base_engine, stream, spec):
    app = create_app(base_settings, base_engine)
    async with serve(app) as c:
        sched = app.state.runtime.scheduler
        payload = body("Hello", max_tokens=500, ignore_eos=True, stream=stream)
        await _asgi_request(app, "/v1/completions", payload, spec, leave_after_body=stream)
        await until(lambda: not sched.running and not sched.waiting)
        scrape = (await c.get("/metrics")).text
        assert metric(scrape, "kaito_inference_cancelled_requests_total") == 1
        assert metric(scrape, "kaito_inference_generation_tokens_total") < 200
        assert metric(scrape, "kaito_inference_running_requests") == 0
        # and the server still serves
        assert (await c.post("/v1/completions", json=body("Hi"))).status_code == 200


async def test_streams_interleave(client):
    """Two streams progress together: each gets its first chunk before either finishes."""
    order: list[str] = []

    async def consume(tag: str) -> None:
        req = body("Hello", max_tokens=80, ignore_eos=True, stream=True)
        async with client.stream("POST", "/v1/completions", json=req) as r:
            async for line in r.aiter_lines():
                if line.startswith("data: {"):
                    order.append(tag)

    # ASGITransport buffers whole responses, so interleaving is checked on scheduler events
    sched = client.app.state.runtime.scheduler
    seen: list[int] = []

    async def watch() -> None:
        while True:
            seen.append(len(sched.running))
            await asyncio.sleep(0.002)

    watcher = asyncio.create_task(watch())
    await asyncio.gather(consume("a"), consume("b"))
    watcher.cancel()
    assert order.count("a") > 10 and order.count("b") > 10
    assert max(seen) == 2
