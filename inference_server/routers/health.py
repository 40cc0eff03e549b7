"""``/health`` and ``/healthz``: 503 until the model is loaded, then 200 (readiness probe)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from ..state import RuntimeDep

router = APIRouter(tags=["health"])


@router.get("/health")
@router.get("/healthz")
async def health(runtime: RuntimeDep) -> JSONResponse:
    if runtime.ready:
        return JSONResponse({"status": "ok"})
    if runtime.load_error:
        return JSONResponse({"status": "failed", "detail": runtime.load_error}, status_code=503)
    return JSONResponse({"status": "loading"}, status_code=503)
