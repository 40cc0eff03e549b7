"""``/health``, ``/healthz`` and ``/``: readiness (503 until the model is loaded) and liveness.

``/healthz`` answers as KAITO's classic server does (``{"status": "Healthy"}``) and ``/health``
keeps this server's ``{"status": "ok"}``; both are 503 with ``loading`` or ``failed`` (and the
reason) before the model is ready. ``GET /`` is KAITO's "Server is running", always 200.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from ..state import Runtime, RuntimeDep

router = APIRouter(tags=["health"])


def _not_ready(runtime: Runtime) -> JSONResponse:
    if runtime.load_error:
        return JSONResponse({"status": "failed", "detail": runtime.load_error}, status_code=503)
    return JSONResponse({"status": "loading"}, status_code=503)


@router.get("/health")
async def health(runtime: RuntimeDep) -> JSONResponse:
    return JSONResponse({"status": "ok"}) if runtime.ready else _not_ready(runtime)


@router.get("/healthz")
async def healthz(runtime: RuntimeDep) -> JSONResponse:
    return JSONResponse({"status": "Healthy"}) if runtime.ready else _not_ready(runtime)


@router.get("/")
async def root() -> dict[str, str]:
    return {"message": "Server is running"}
