"""``python -m inference_server`` as a real process: uvicorn on a loopback port, real sockets."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.support.server_process import free_port, start, stop

from .conftest import mount_adapters
from .test_batching import metric

pytestmark = pytest.mark.slow


def test_real_server_end_to_end(tiny_model_dir, adapter_dirs, tmp_path):
    port = free_port()
    adapters = mount_adapters(tmp_path / "mnt", {"alpha": adapter_dirs["alpha"]})
    log = tmp_path / "server.log"
    proc = start(["--model-dir", str(tiny_model_dir), "--adapters-dir", str(adapters),
                  "--adapter-strengths", "alpha=0.8", "--served-model-name", "phi-3-tiny",
                  "--host", "127.0.0.1", "--port", str(port), "--max-batch-size", "4"], log)
    base = f"http://127.0.0.1:{port}"
    try:
        statuses = []
        deadline = time.monotonic() + 90
        with httpx.Client(base_url=base, timeout=30) as c:
            while time.monotonic() < deadline:
                assert proc.poll() is None, log.read_text()
                try:
                    statuses.append(c.get("/health").status_code)
                except httpx.TransportError:
                    time.sleep(0.1)
                    continue
                if statuses[-1] == 200:
                    break
                time.sleep(0.05)
            assert statuses and statuses[-1] == 200, (statuses, log.read_text())
            assert set(statuses) <= {200, 503}

            r = c.post("/chat", json={"prompt": "Hello", "generate_kwargs": {"do_sample": False,
                                                                           "max_new_tokens": 8}})
            assert r.status_code == 200 and r.json()["Result"].startswith("Hello")
            card = c.get("/v1/models").json()["data"][0]
            assert card["id"] == "phi-3-tiny" and card["adapters"][0]["name"] == "alpha"

            chunks = []
            req = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 12,
                   "stream": True, "temperature": 0, "ignore_eos": True}
            with c.stream("POST", "/v1/chat/completions", json=req) as s:
                assert s.headers["content-type"].startswith("text/event-stream")
                for line in s.iter_lines():
                    if line:
                        chunks.append(line)
            assert chunks[-1] == "data: [DONE]"
            assert json.loads(chunks[-2][6:])["choices"][0]["finish_reason"] == "length"

            # a client that leaves mid-stream frees its slot on the real server too
            long = {"prompt": "x", "max_tokens": 450, "stream": True, "ignore_eos": True}
            with c.stream("POST", "/v1/completions", json=long) as s:
                next(s.iter_lines())
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                text = c.get("/metrics").text
                if metric(text, "kaito_inference_cancelled_requests_total") == 1:
                    break
                time.sleep(0.05)
            assert metric(text, "kaito_inference_cancelled_requests_total") == 1
            assert metric(text, "kaito_inference_running_requests") == 0
            assert metric(text, "kaito_inference_generation_tokens_total") < 400
    finally:
        stop(proc)
    assert "Adapter added: alpha" in log.read_text()


def test_broken_adapter_stops_the_process(tiny_model_dir, tmp_path):
    adapters = tmp_path / "mnt"
    (adapters / "bad").mkdir(parents=True)
    (adapters / "bad" / "adapter_config.json").write_text("{ this is not json")
    log = tmp_path / "server.log"
    proc = start(["--model-dir", str(tiny_model_dir), "--adapters-dir", str(adapters),
                  "--host", "127.0.0.1", "--port", str(free_port())], log)
    try:
        code = proc.wait(timeout=90)
    finally:
        stop(proc)
    output = log.read_text()
    assert code == 1, output
    assert "adapter 'bad'" in output and "adapter_config.json" in output
