"""Readiness follows the model load; metrics are present and count what happened."""

from __future__ import annotations

import asyncio
import threading

from inference_server.app import create_app
from inference_server.errors import AdapterError

from .conftest import serve
from .test_batching import metric, until


async def test_health_is_503_until_loaded_then_200(base_settings, base_engine):
    release = threading.Event()
    calls: list[object] = []

    def slow_factory(settings):
        calls.append(settings)
        assert release.wait(20)
        return base_engine

    app = create_app(base_settings, engine_factory=slow_factory)
    async with serve(app) as c:
        for path in ("/health", "/healthz"):
            r = await c.get(path)
            assert r.status_code == 503 and r.json()["status"] == "loading"
        r = await c.post("/v1/completions", json={"prompt": "x"})
        assert r.status_code == 503 and r.json()["error"]["type"] == "service_unavailable"
        r = await c.post("/chat", json={"prompt": "x"})
        assert r.status_code == 503 and "loading" in r.json()["detail"]
        assert metric((await c.get("/metrics")).text, "kaito_inference_model_loaded") == 0
        release.set()
        await until(lambda: app.state.runtime.ready)
        for path in ("/health", "/healthz"):
            assert (await c.get(path)).status_code == 200
        assert calls == [base_settings]
        r = await c.post("/v1/completions", json={"prompt": "x", "max_tokens": 2})
        assert r.status_code == 200
        assert metric((await c.get("/metrics")).text, "kaito_inference_model_loaded") == 1


async def test_failed_load_stays_unready_with_reason(base_settings):
    failures: list[BaseException] = []

    def broken(settings):
        raise AdapterError("adapter 'x' at /mnt/adapter/x failed to load: bad file")

    app = create_app(base_settings, engine_factory=broken, on_load_failure=failures.append)
    async with serve(app) as c:
        await until(lambda: bool(failures))
        r = await c.get("/health")
        assert r.status_code == 503
        assert r.json()["status"] == "failed" and "adapter 'x'" in r.json()["detail"]
        r = await c.post("/v1/chat/completions",
                         json={"messages": [{"role": "user", "content": "x"}]})
        assert r.status_code == 503 and "failed to load" in r.json()["error"]["message"]


async def test_metrics_count_requests_and_tokens(client):
    ok = []
    for prompt in ("Hello", "Kubernetes"):
        r = await client.post("/v1/completions",
                              json={"prompt": prompt, "max_tokens": 7, "temperature": 0})
        ok.append(r.json()["usage"])
    assert (await client.post("/v1/completions", json={"prompt": 3})).status_code == 400
    assert (await client.post("/chat", json={"prompt": "Hi", "generate_kwargs": {
        "do_sample": False, "max_new_tokens": 4}})).status_code == 200
    r = await client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert metric(text, "kaito_inference_requests_total",
                  endpoint="/v1/completions", status="200") == 2
    assert metric(text, "kaito_inference_requests_total",
                  endpoint="/v1/completions", status="400") == 1
    assert metric(text, "kaito_inference_requests_total", endpoint="/chat", status="200") == 1
    chat_prompt = len(client.app.state.runtime.engine.encode_prompt("Hi"))
    assert metric(text, "kaito_inference_prompt_tokens_total") == (
        sum(u["prompt_tokens"] for u in ok) + chat_prompt
    )
    generated = metric(text, "kaito_inference_generation_tokens_total")
    assert sum(u["completion_tokens"] for u in ok) < generated <= sum(
        u["completion_tokens"] for u in ok) + 4
    assert metric(text, "kaito_inference_time_to_first_token_seconds_count") == 3
    assert metric(text, "kaito_inference_request_latency_seconds_count",
                  endpoint="/v1/completions") == 3
    assert metric(text, "kaito_inference_queue_depth") == 0
    assert "kaito_inference_gpu_memory_allocated_bytes" not in text  # CPU: no fake zero


async def test_each_app_has_its_own_registry(base_settings, base_engine):
    a, b = create_app(base_settings, base_engine), create_app(base_settings, base_engine)
    async with serve(a) as ca, serve(b) as cb:
        await ca.post("/v1/completions", json={"prompt": "x", "max_tokens": 1})
        await asyncio.sleep(0)
        text_b = (await cb.get("/metrics")).text
        assert metric((await ca.get("/metrics")).text, "kaito_inference_requests_total",
                      endpoint="/v1/completions", status="200") == 1
        try:
            metric(text_b, "kaito_inference_requests_total", endpoint="/v1/completions",
                   status="200")
        except KeyError:
            pass
        else:
            raise AssertionError("second app saw the first app's requests")
