"""Pure ASGI middleware that checks a request's framing before any route sees it.

What it enforces, in this order:

* ``Content-Length`` must be one non-negative decimal number (400 otherwise); a declared length
  above the limit is answered 413 at once, without reading a byte of the body.
* Requests that carry a body (POST, PUT, PATCH) must be JSON when they name a ``Content-Type``
  (``application/json`` or ``application/*+json``); anything else is 415. A request without a
  ``Content-Type`` is read as JSON, as KAITO's clients expect.
* While the route reads the body, the bytes actually received are counted, whatever the headers
  said (a chunked body has no length; a declared length may be a lie): the message that crosses
  the limit ends the read with 413. Nothing is buffered here; the counter is all that is kept.
* The whole body must arrive within ``body_timeout_s`` of the first read (408 otherwise), so a
  client that trickles a body or declares more than it sends cannot hold a request forever.

Errors raised while the route reads the body are ``HTTPException`` subclasses, which FastAPI's
body parsing passes on unchanged to the app's error handlers, so they get the route's usual error
shape. When the rejection happens before the app runs, this middleware answers in the same shape.
A 408 or 413 carries ``Connection: close``: the server stops reading that connection instead of
draining a body that may never end.
"""

from __future__ import annotations

import asyncio
import logging

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import error_response

__all__ = ["BodyTimeoutError", "BodyTooLargeError", "RequestGuardMiddleware"]

log = logging.getLogger(__name__)

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
#: Sent with 408 and 413: the rest of such a body is not worth reading, so the server closes
#: the connection after the answer instead of draining what the client still sends.
_CLOSE = {"Connection": "close"}


class BodyTooLargeError(HTTPException):
    """The request body is larger than the server accepts (413)."""

    code = "request_too_large"

    def __init__(self, limit: int, *, declared: int | None = None) -> None:
        if declared is not None:
            detail = (f"request body of {declared} bytes is larger than this server's limit of "
                      f"{limit} bytes")
        else:
            detail = f"request body is larger than this server's limit of {limit} bytes"
        super().__init__(status_code=413, detail=detail)


class BodyTimeoutError(HTTPException):
    """The request body did not arrive in time (408)."""

    code = "request_timeout"

    def __init__(self, timeout_s: float) -> None:
        super().__init__(status_code=408,
                         detail=f"request body was not received within {timeout_s:g} s")


def _content_length(headers: Headers) -> int | None:
    """The declared body length; ``ValueError`` with a one-line reason when it is malformed."""
    values = {v.strip() for v in headers.getlist("content-length")}
    if not values:
        return None
    if len(values) > 1:
        raise ValueError("conflicting Content-Length headers")
    (value,) = values
    if not value.isascii() or not value.isdigit() or len(value) > 19:
        raise ValueError(f"invalid Content-Length header {value[:40]!r}")
    return int(value)


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    main, _, sub = media.partition("/")
    return main == "application" and (sub == "json" or sub.endswith("+json"))


class _LimitedReceive:
    """Wraps ``receive``: counts body bytes against the limit and bounds the time to read them."""

    def __init__(self, receive: Receive, limit: int, timeout_s: float) -> None:
        self._receive = receive
        self._limit = limit
        self._timeout_s = timeout_s
        self._deadline: float | None = None
        self._received = 0
        self._body_done = False
        self.rejected = False

    async def __call__(self) -> Message:
        if self._body_done:
            return await self._receive()  # after the body: only http.disconnect is left
        loop = asyncio.get_running_loop()
        if self._deadline is None:
            self._deadline = loop.time() + self._timeout_s
        try:
            async with asyncio.timeout_at(self._deadline):
                message = await self._receive()
        except TimeoutError:
            self.rejected = True
            raise BodyTimeoutError(self._timeout_s) from None
        if message["type"] == "http.request":
            self._received += len(message.get("body", b""))
            if self._received > self._limit:
                self.rejected = True
                raise BodyTooLargeError(self._limit)
            if not message.get("more_body", False):
                self._body_done = True
        else:
            self._body_done = True
        return message


class RequestGuardMiddleware:
    """Body size limit, body deadline and JSON content type for every HTTP request."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, body_timeout_s: float) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        rejection = self._check_headers(scope, headers)
        if rejection is not None:
            status, message, code = rejection
            await self._answer(scope, receive, send, status, message, code)
            return
        started = False
        limited = _LimitedReceive(receive, self.max_body_bytes, self.body_timeout_s)

        async def send_watching(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if limited.rejected:  # the route's error handler answered a 408 or 413
                    message = {**message, "headers": [*message.get("headers", []),
                                                      (b"connection", b"close")]}
            await send(message)

        try:
            await self.app(scope, limited, send_watching)
        except (BodyTooLargeError, BodyTimeoutError) as exc:
            if started:
                raise
            await self._answer(scope, receive, send, exc.status_code, str(exc.detail), exc.code)

    def _check_headers(self, scope: Scope, headers: Headers) -> tuple[int, str, str] | None:
        try:
            declared = _content_length(headers)
        except ValueError as exc:
            return 400, str(exc), "invalid_content_length"
        if declared is not None and declared > self.max_body_bytes:
            detail = str(BodyTooLargeError(self.max_body_bytes, declared=declared).detail)
            return 413, detail, "request_too_large"
        content_type = headers.get("content-type")
        if scope.get("method") in _BODY_METHODS and content_type and not _is_json(content_type):
            shown = content_type[:80]
            return 415, (f"unsupported Content-Type {shown!r}: send a JSON object body with "
                         "Content-Type: application/json"), "unsupported_media_type"
        return None

    async def _answer(
        self, scope: Scope, receive: Receive, send: Send, status: int, message: str, code: str
    ) -> None:
        log.info("Rejected %s %s: %s", scope.get("method"), scope.get("path"), message)
        request = Request(scope)
        response = error_response(request, status, message, code=code,
                                  headers=_CLOSE if status in (408, 413) else None)
        await response(scope, receive, send)
