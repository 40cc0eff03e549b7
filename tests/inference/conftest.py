"""Fixtures: a tiny random Phi-3 style model and real LoRA adapters, generated once per session.

Everything runs offline (``HF_HUB_OFFLINE=1``, a temporary ``HF_HOME``). Engines are loaded once
per adapter configuration and shared; every test builds its own app (and so its own metrics
registry and scheduler) around one of them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from inference_server.app import create_app
from inference_server.settings import ServerSettings


@pytest.fixture(scope="session")
def adapter_dirs(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Individual adapters (ranks 4 and 8) in a library folder; tests mount subsets of them."""
    from inference_server.tiny_model import create_tiny_adapter

    lib = tmp_path_factory.mktemp("adapter-lib")
    return {
        "alpha": create_tiny_adapter(tiny_model_dir, lib / "alpha", rank=4, seed=11),
        "beta": create_tiny_adapter(tiny_model_dir, lib / "beta", rank=8, seed=22),
    }


def mount_adapters(root: Path, adapters: dict[str, Path]) -> Path:
    """Lay adapters out as KAITO mounts them: ``<root>/<name>/adapter_config.json``."""
    root.mkdir(parents=True, exist_ok=True)
    for name, src in adapters.items():
        (root / name).symlink_to(src, target_is_directory=True)
    return root


def make_settings(model_dir: Path, adapters_dir: Path, **overrides: Any) -> ServerSettings:
    return ServerSettings(model_dir=model_dir, adapters_dir=adapters_dir, **overrides)


@pytest.fixture(scope="session")
def empty_adapters_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("no-adapters")


@pytest.fixture(scope="session")
def base_settings(tiny_model_dir: Path, empty_adapters_dir: Path) -> ServerSettings:
    return make_settings(tiny_model_dir, empty_adapters_dir, served_model_name="tiny")


@pytest.fixture(scope="session")
def base_engine(base_settings: ServerSettings) -> Any:
    from inference_server.engine import TransformersEngine

    return TransformersEngine.load(base_settings)


@asynccontextmanager
async def serve(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """Run the app's lifespan and give an in-process client (no sockets)."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test",
                                     timeout=60) as client:
            yield client


@pytest.fixture
async def client(base_settings: ServerSettings, base_engine: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(base_settings, base_engine)
    async with serve(app) as c:
        c.app = app  # type: ignore[attr-defined]
        yield c


@pytest.fixture
async def scheduler(base_engine: Any) -> AsyncIterator[Any]:
    """A started scheduler (8 rows, 16 queued) on the tiny model, stopped after the test."""
    from inference_server.batching import Scheduler
    from inference_server.metrics import ServerMetrics

    sched = Scheduler(base_engine, ServerMetrics(), max_batch_size=8, queue_size=16)
    sched.start()
    yield sched
    await sched.stop()
