"""``create_app(settings, engine=None)``: the FastAPI application, built without side effects.

Why the model loads in a background task of the lifespan rather than before ``yield``: the pod's
readiness probe must be able to ask ``/health`` while a multi-GB model loads (503 "loading"), and a
load failure must be visible (503 "failed" with the reason) and, under ``__main__``, end the
process so Kubernetes shows a crash with the error in the log instead of a pod that never gets
ready. When a test or the benchmark passes an ``engine``, it is used at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from fastapi import FastAPI

from .batching import Scheduler
from .engine import Engine
from .errors import install_error_handlers
from .metrics import MetricsMiddleware, ServerMetrics
from .request_guard import RequestGuardMiddleware
from .routers import chat, health, metrics, openai
from .settings import ServerSettings
from .state import Runtime

__all__ = ["create_app"]

log = logging.getLogger(__name__)

EngineFactory = Callable[[ServerSettings], Engine]


def _default_factory(settings: ServerSettings) -> Engine:
    from .engine import TransformersEngine

    return TransformersEngine.load(settings)


def _activate(runtime: Runtime, engine: Engine) -> None:
    scheduler = Scheduler(
        engine,
        runtime.metrics,
        max_batch_size=runtime.settings.max_batch_size,
        queue_size=runtime.settings.queue_size,
    )
    scheduler.start()
    runtime.engine, runtime.scheduler = engine, scheduler
    runtime.metrics.model_loaded.set(1)
    log.info("Model %s is ready", engine.info.model_name)


async def _load(
    runtime: Runtime,
    factory: EngineFactory,
    on_load_failure: Callable[[BaseException], None] | None,
) -> None:
    try:
        engine = await asyncio.to_thread(factory, runtime.settings)
    except Exception as exc:
        runtime.load_error = f"{type(exc).__name__}: {exc}"
        log.error("Model failed to load: %s", runtime.load_error)
        if on_load_failure is not None:
            on_load_failure(exc)
        return
    _activate(runtime, engine)


def create_app(
    settings: ServerSettings,
    engine: Engine | None = None,
    *,
    engine_factory: EngineFactory | None = None,
    on_load_failure: Callable[[BaseException], None] | None = None,
) -> FastAPI:
    """Build the app. ``engine``: ready model (tests); else ``engine_factory`` runs in lifespan."""
    runtime = Runtime(settings=settings, metrics=ServerMetrics())

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loader: asyncio.Task[None] | None = None
        if engine is not None:
            _activate(runtime, engine)
        else:
            loader = asyncio.create_task(
                _load(runtime, engine_factory or _default_factory, on_load_failure)
            )
        try:
            yield
        finally:
            if loader is not None:
                loader.cancel()
            if runtime.scheduler is not None:
                await runtime.scheduler.stop()
            runtime.engine = runtime.scheduler = None
            runtime.metrics.model_loaded.set(0)
            runtime.text.close()

    app = FastAPI(
        title="KAITO inference server",
        summary="KAITO /chat and the OpenAI API on transformers + peft",
        lifespan=lifespan,
        strict_content_type=False,  # a body without Content-Type is read as JSON
    )
    app.state.runtime = runtime
    install_error_handlers(app)
    for module in (health, metrics, chat, openai):
        app.include_router(module.router)
    # the last one added runs first: metrics count what the guard rejects too
    app.add_middleware(RequestGuardMiddleware, max_body_bytes=settings.max_body_bytes,
                       body_timeout_s=settings.body_timeout_s)
    app.add_middleware(MetricsMiddleware, metrics=runtime.metrics)
    return app
