"""Request routing: resource URLs, RBAC verbs and the request log record.

kmock 0.8's path parser fails on ``/api/v1/namespaces`` (500) and cannot tell the namespace
``status`` subresource from a namespaced collection; this one follows the API server's layout.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["RequestRecord", "Target", "parse_target", "verb_of"]


@dataclass(frozen=True)
class Target:
    """A resource URL: ``/api/v1/namespaces/ns/pods/name/status`` split into its parts."""

    group: str
    version: str
    plural: str
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None


def parse_target(path: str) -> Target | None:
    """Parse a resource path; None for discovery and non-API paths.

    Unlike kmock 0.8, ``/api/v1/namespaces`` and ``/api/v1/namespaces/x/status`` parse as the
    namespaces resource instead of failing with 500.
    """
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 3 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 4 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    namespace = None
    if (
        rest[0] == "namespaces"
        and len(rest) >= 3
        and not (group == "" and rest[2] in ("status", "finalize"))
    ):
        namespace, rest = rest[1], rest[2:]
    return Target(
        group,
        version,
        rest[0],
        namespace,
        rest[1] if len(rest) > 1 else None,
        "/".join(rest[2:]) or None,
    )


def verb_of(method: str, target: Target, params: dict[str, str]) -> str:
    """The RBAC verb of a request, as the authorizer of a real API server would see it."""
    if method == "GET":
        return "watch" if params.get("watch") in ("true", "1") else "get" if target.name else "list"
    if method == "DELETE":
        return "delete" if target.name else "deletecollection"
    return {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method, method.lower())


@dataclass
class RequestRecord:
    """One API request as an audit log would record it (read by RBAC tests)."""

    method: str
    path: str
    query: dict[str, str]
    verb: str | None = None
    group: str | None = None
    version: str | None = None
    resource: str | None = None
    subresource: str | None = None
    namespace: str | None = None
    name: str | None = None
    status: int | None = None
    user_agent: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
