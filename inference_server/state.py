"""The per-app runtime state and the FastAPI dependencies that hand it to routers.

Why: routers must not reach for module globals; ``create_app`` builds one ``Runtime`` and stores it
on ``app.state``, and the lifespan fills in the engine and scheduler once the model is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from .batching import Scheduler
from .engine import Engine
from .errors import NotReadyError
from .metrics import ServerMetrics
from .settings import ServerSettings
from .textpool import TextPool

__all__ = ["Runtime", "RuntimeDep", "get_runtime"]


@dataclass
class Runtime:
    settings: ServerSettings
    metrics: ServerMetrics
    engine: Engine | None = None
    scheduler: Scheduler | None = None
    load_error: str | None = None
    text: TextPool = field(init=False)
    """Worker threads for tokenization and chat templates (sized by the settings)."""

    def __post_init__(self) -> None:
        self.text = TextPool(self.settings.tokenizer_threads, self.settings.tokenizer_queue_size)

    @property
    def ready(self) -> bool:
        return self.engine is not None and self.scheduler is not None

    def require_ready(self) -> tuple[Engine, Scheduler]:
        """The engine and scheduler, or a 503 while loading (or after a failed load)."""
        if self.engine is None or self.scheduler is None:
            if self.load_error:
                raise NotReadyError(f"model failed to load: {self.load_error}")
            raise NotReadyError("model is still loading")
        return self.engine, self.scheduler


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
"""What routers declare to receive the app's ``Runtime``."""
