"""Prometheus metrics, one ``CollectorRegistry`` per app.

Why per app: the default global registry makes a second ``create_app`` in the same process (every
test, the benchmark) fail with "duplicated timeseries", and it leaks counts between tests. The
``ServerMetrics`` object is created by ``create_app`` and handed to whoever records.

GPU memory is read at scrape time by a custom collector, and only when torch is already imported
and CUDA is available, so a CPU pod exports no misleading zero.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["MetricsMiddleware", "ServerMetrics", "TRACKED_ENDPOINTS"]

#: Endpoints labelled by name; anything else is "other" so random paths cannot blow up cardinality.
TRACKED_ENDPOINTS = frozenset(
    {"/chat", "/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/healthz"}
)
_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class _GpuMemoryCollector(Collector):
    def collect(self) -> Iterator[GaugeMetricFamily]:
        torch: Any = sys.modules.get("torch")
        if torch is None or not torch.cuda.is_available():
            return
        fam = GaugeMetricFamily(
            "kaito_inference_gpu_memory_allocated_bytes",
            "GPU memory allocated by tensors of this process",
            labels=["device"],
        )
        for idx in range(torch.cuda.device_count()):
            fam.add_metric([str(idx)], float(torch.cuda.memory_allocated(idx)))
        yield fam


class ServerMetrics:
    """All series the server exports, registered on a private registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "kaito_inference_requests", "HTTP requests by endpoint and status",
            ["endpoint", "status"], registry=r,
        )
        self.prompt_tokens = Counter(
            "kaito_inference_prompt_tokens", "Prompt tokens processed", registry=r
        )
        self.generation_tokens = Counter(
            "kaito_inference_generation_tokens", "Tokens generated", registry=r
        )
        self.ttft = Histogram(
            "kaito_inference_time_to_first_token_seconds",
            "Time from admission to the queue until the first generated token",
            buckets=_TTFT_BUCKETS, registry=r,
        )
        self.latency = Histogram(
            "kaito_inference_request_latency_seconds",
            "Time from request start to the last byte of the response",
            ["endpoint"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.queue_depth = Gauge(
            "kaito_inference_queue_depth", "Requests waiting for a batch slot", registry=r
        )
        self.running = Gauge(
            "kaito_inference_running_requests", "Requests being decoded", registry=r
        )
        self.batch_size = Histogram(
            "kaito_inference_batch_size", "Sequences per forward pass",
            buckets=_BATCH_BUCKETS, registry=r,
        )
        self.cancelled = Counter(
            "kaito_inference_cancelled_requests", "Requests dropped because the client left",
            registry=r,
        )
        self.model_loaded = Gauge(
            "kaito_inference_model_loaded", "1 once the model is loaded", registry=r
        )
        r.register(_GpuMemoryCollector())

    def render(self) -> bytes:
        return generate_latest(self.registry)


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class MetricsMiddleware:
    """Pure ASGI middleware: counts requests by endpoint and status, times them to the last byte.

    Pure ASGI rather than ``BaseHTTPMiddleware`` because the latter buffers nothing but wraps
    streaming responses in extra tasks and hides client disconnects from the endpoint.
    """

    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        endpoint = path if path in TRACKED_ENDPOINTS else "other"
        status = {"code": 500}
        start = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.requests.labels(endpoint, str(status["code"])).inc()
            if endpoint not in ("other", "/health", "/healthz"):
                self.metrics.latency.labels(endpoint).observe(time.perf_counter() - start)
