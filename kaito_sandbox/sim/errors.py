"""API errors with the ``Status`` bodies the real Kubernetes API server sends.

Clients (kopf, the kubernetes client, kubectl) branch on ``code`` and ``reason``: kopf retries a
409/422 patch on the next cycle but gives up on 500, so the codes must be the real ones.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ApiError", "already_exists", "bad_request", "conflict", "invalid", "not_found"]


class ApiError(Exception):
    """An error answered as a ``kind: Status`` body with the given HTTP code and reason."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def _qualified(plural: str, group: str) -> str:
    return f"{plural}.{group}" if group else plural


def _details(plural: str, group: str, name: str) -> dict[str, Any]:
    details: dict[str, Any] = {"name": name, "kind": plural}
    if group:
        details["group"] = group
    return details


def not_found(plural: str, group: str, name: str) -> ApiError:
    return ApiError(
        404,
        "NotFound",
        f'{_qualified(plural, group)} "{name}" not found',
        _details(plural, group, name),
    )


def already_exists(plural: str, group: str, name: str) -> ApiError:
    return ApiError(
        409,
        "AlreadyExists",
        f'{_qualified(plural, group)} "{name}" already exists',
        _details(plural, group, name),
    )


def conflict(plural: str, group: str, name: str, why: str | None = None) -> ApiError:
    why = (
        why
        or "the object has been modified; please apply your changes to the latest version"
        " and try again"
    )
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {_qualified(plural, group)} "{name}": {why}',
        _details(plural, group, name),
    )


def invalid(plural: str, group: str, name: str, why: str) -> ApiError:
    return ApiError(
        422,
        "Invalid",
        f'{_qualified(plural, group)} "{name}" is invalid: {why}',
        _details(plural, group, name),
    )


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)
