"""Exceptions of the inference server and the one place that turns them into HTTP responses.

Exception tree::

    ServerError                    -- anything with an HTTP status; never raised itself
    ├── InvalidRequestError        -- 400: the request cannot be served as written
    │   └── ContextLengthError     -- 400: prompt (+ max tokens) does not fit the context window
    ├── ModelNotFoundError         -- 404: ``model`` names neither the served model nor an adapter
    ├── QueueFullError             -- 429: the bounded waiting queue is full; retry later
    └── NotReadyError              -- 503: the model is still loading (or failed to load)
    StartupError                   -- not HTTP: the server cannot start (bad adapter, bad template)
    └── AdapterError

Why one map: routers raise typed errors and never build error bodies themselves, so every error
has the same shape. OpenAI clients parse ``{"error": {"message", "type", "param", "code"}}`` on the
``/v1`` routes; KAITO's classic ``/chat`` is a plain FastAPI app whose clients read ``{"detail"}``.
Malformed bodies are ``RequestValidationError``s: they get a readable one-line message and a 4xx
(400 on ``/v1`` like OpenAI, FastAPI's 422 on ``/chat``), never a 500. A body that is not a JSON
object at all (empty, an array, a string, ``null``, not JSON) is a 400 on every route whose
message says what to send (``body_shape_message``). A path no route serves (404) or a method a
route does not take (405) is answered with what the server serves (``routing_message``).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

__all__ = [
    "AdapterError",
    "ContextLengthError",
    "InvalidRequestError",
    "ModelNotFoundError",
    "NotReadyError",
    "QueueFullError",
    "ServerError",
    "StartupError",
    "body_shape_message",
    "error_response",
    "http_error_message",
    "install_error_handlers",
    "routing_message",
]

log = logging.getLogger(__name__)


class ServerError(Exception):
    """Base of errors that map to an HTTP response."""

    status_code = 500
    error_type = "internal_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


class InvalidRequestError(ServerError):
    status_code = 400
    error_type = "invalid_request_error"


class ContextLengthError(InvalidRequestError):
    def __init__(self, message: str, *, param: str | None = None):
        super().__init__(message, param=param, code="context_length_exceeded")


class ModelNotFoundError(ServerError):
    status_code = 404
    error_type = "not_found_error"

    def __init__(self, message: str):
        super().__init__(message, param="model", code="model_not_found")


class QueueFullError(ServerError):
    status_code = 429
    error_type = "rate_limit_error"


class NotReadyError(ServerError):
    status_code = 503
    error_type = "service_unavailable"


class StartupError(Exception):
    """The server cannot serve at all; the process should exit so the pod shows the reason."""


class AdapterError(StartupError):
    """An adapter under the adapters directory cannot be loaded or combined."""


def _is_openai_route(request: Request) -> bool:
    return request.url.path.startswith("/v1")


def error_response(
    request: Request,
    status: int,
    message: str,
    *,
    error_type: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """Build the error body in the shape the route's clients expect."""
    body: dict[str, Any]
    if _is_openai_route(request):
        body = {"error": {"message": message, "type": error_type, "param": param, "code": code}}
    else:
        body = {"detail": message}
    return JSONResponse(status_code=status, content=body, headers=headers)


def format_validation_errors(errors: list[Any]) -> tuple[str, str | None]:
    """One readable line from pydantic's error list, plus the first offending field."""
    parts: list[str] = []
    first_param: str | None = None
    for err in errors[:5]:
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        where = ".".join(loc)
        if first_param is None and where:
            first_param = where
        msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        if err.get("type") == "json_invalid":
            ctx = err.get("ctx") or {}
            msg = f"Request body is not valid JSON: {ctx.get('error', msg)}"
            where = ""
        parts.append(f"{where}: {msg}" if where else msg)
    return "; ".join(parts) or "Invalid request", first_param


_SEND = "send a JSON object body with Content-Type: application/json"
_JSON_KINDS = {list: "a JSON array", str: "a JSON string", int: "a JSON number",
               float: "a JSON number", bool: "a JSON boolean", type(None): "JSON null"}


def body_shape_message(errors: list[Any], content_type: str | None) -> str | None:
    """What to send, when the body as a whole is not a JSON object; None for field errors."""
    for err in errors:
        if tuple(err.get("loc", ())) != ("body",):
            continue
        if err.get("type") == "missing":
            return f"{_SEND}; got an empty body"
        if err.get("type") in ("model_attributes_type", "dict_type", "model_type"):
            kind = _JSON_KINDS.get(type(err.get("input")), "a value that is not an object")
            return f"{_SEND}; got {kind}"
    if content_type is None and any(e.get("type") == "json_invalid" for e in errors):
        message, _ = format_validation_errors(errors)
        return f"{message} ({_SEND}; this request had no Content-Type header)"
    return None


def http_error_message(exc: StarletteHTTPException) -> str:
    """The exception's detail, plus the reason when FastAPI could not parse the body.

    FastAPI answers bodies that ``json.loads`` refuses for reasons other than syntax (invalid
    UTF-8, nesting deeper than the decoder's recursion limit, integers with too many digits) with
    a generic "error parsing the body"; the cause it chains says which, in one line.
    """
    message = str(exc.detail)
    cause = exc.__cause__
    if exc.status_code == 400 and cause is not None:
        reason = " ".join(str(cause).split())[:200]
        message = f"{message}: {type(cause).__name__}: {reason}" if reason else message
    return message


def routing_message(request: Request, exc: StarletteHTTPException) -> str | None:
    """For a path no route serves (404) or a method it does not take (405): what is served.

    A client pointed at an endpoint this server lacks (``/v1/embeddings``) learns which ones
    it has instead of a bare "Not Found".
    """
    where = f"{request.method} {request.url.path[:200]}"
    if exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        return f"{where}: method not allowed; this route takes {allowed or 'other methods'}"
    if exc.status_code != 404 or exc.detail != "Not Found":
        return None
    paths = request.app.openapi().get("paths", {})  # built once, then cached by FastAPI
    served = sorted(f"{method.upper()} {path}" for path, ops in paths.items() for method in ops)
    return f"{where}: no such route; this server serves {', '.join(served)}"


def install_error_handlers(app: FastAPI) -> None:
    """Register the exception-to-response map on ``app``."""

    @app.exception_handler(ServerError)
    async def _server_error(request: Request, exc: ServerError) -> JSONResponse:
        headers = {"Retry-After": "1"} if isinstance(exc, QueueFullError) else None
        return error_response(
            request,
            exc.status_code,
            exc.message,
            error_type=exc.error_type,
            param=exc.param,
            code=exc.code,
            headers=headers,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        shape = body_shape_message(errors, request.headers.get("content-type"))
        if shape is not None:
            return error_response(request, 400, shape)
        message, param = format_validation_errors(errors)
        status = 400 if _is_openai_route(request) else 422
        return error_response(request, status, message, param=param)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        error_type = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        message = routing_message(request, exc) or http_error_message(exc)
        return error_response(request, exc.status_code, message, error_type=error_type,
                              code=getattr(exc, "code", None),
                              headers=dict(exc.headers) if exc.headers else None)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("Unhandled error on %s", request.url.path)
        return error_response(
            request, 500, f"Internal error: {type(exc).__name__}", error_type="internal_error"
        )
