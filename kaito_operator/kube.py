"""The only module that talks to the Kubernetes API server (besides kopf itself).

A small async JSON client on aiohttp: get, list (label selectors), create, merge-patch,
status patch, delete, and Events. Errors come back as `ApiError` with the HTTP status and the
Status reason; the answers that mean "already done" are handled here once: `get_or_none`
(404 is gone), `create_if_missing` (409 is already there), `delete` (404 is already deleted).
`is_unreachable` tells a request that got no answer at all. Connection details come from
kopf's login (`ConnectionInfo`), so the operator and its client authenticate the same way.
"""

from __future__ import annotations

import json
import re
import ssl
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp


@dataclass(frozen=True)
class Kind:
    """Where a resource lives in the API."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool

    def path(self, namespace: str | None = None, name: str | None = None, sub: str = "") -> str:
        root = f"/api/{self.version}" if not self.group else f"/apis/{self.group}/{self.version}"
        if self.namespaced and namespace:
            root += f"/namespaces/{quote(namespace)}"
        root += f"/{self.plural}"
        if name:
            root += f"/{quote(name)}"
        if sub:
            root += f"/{sub}"
        return root


WORKSPACES = Kind("kaito.sh", "v1alpha1", "workspaces", "Workspace", True)
MACHINES = Kind("karpenter.sh", "v1alpha5", "machines", "Machine", False)
NODECLAIMS = Kind("karpenter.sh", "v1", "nodeclaims", "NodeClaim", False)
NODES = Kind("", "v1", "nodes", "Node", False)
PODS = Kind("", "v1", "pods", "Pod", True)
SERVICES = Kind("", "v1", "services", "Service", True)
EVENTS = Kind("", "v1", "events", "Event", True)
DEPLOYMENTS = Kind("apps", "v1", "deployments", "Deployment", True)
STATEFULSETS = Kind("apps", "v1", "statefulsets", "StatefulSet", True)
JOBS = Kind("batch", "v1", "jobs", "Job", True)


#: metav1.StatusReason by HTTP code, for answers whose body names no (usable) reason.
STATUS_REASONS = {
    400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
    405: "MethodNotAllowed", 406: "NotAcceptable", 409: "Conflict", 410: "Expired",
    413: "RequestEntityTooLarge", 415: "UnsupportedMediaType", 422: "Invalid",
    429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout",
}
#: What a Status reason must look like to be reused as a condition reason (CamelCase word).
_REASON_WORD = re.compile(r"[A-Z][A-Za-z0-9]{0,62}")
#: Longest API message kept on an ApiError (a 422 can list hundreds of causes).
MAX_API_MESSAGE = 512
_VERBS = {"GET": "get", "POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}


def one_line(text: str, limit: int = MAX_API_MESSAGE) -> str:
    """`text` with runs of whitespace (newlines included) collapsed, cut to `limit` chars."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def status_reason(status: int, reason: str | None) -> str:
    """The Status reason of an answer: the body's when it is a CamelCase word, else the
    standard one for the HTTP code ("Invalid" for 422, "InternalError" for 500)."""
    if reason and _REASON_WORD.fullmatch(reason):
        return reason
    return STATUS_REASONS.get(status, "InternalError" if status >= 500 else "BadRequest")


def describe_request(method: str, path: str) -> str:
    """`create apps/v1 deployments in ns`, `patch v1 services/web in ns`: what a failed
    request was trying to do, from its method and API path."""
    parts = [p for p in path.split("?")[0].split("/") if p]
    if parts[:1] == ["api"]:
        group_version, rest = "/".join(parts[1:2]), parts[2:]
    else:
        group_version, rest = "/".join(parts[1:3]), parts[3:]
    namespace = ""
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    target = "/".join(rest) or "?"
    where = f" in {namespace}" if namespace else ""
    return f"{_VERBS.get(method.upper(), method.lower())} {group_version} {target}{where}"


class ApiError(Exception):
    """A non-2xx answer; `status` is the HTTP code, `reason` the Status reason, `message` the
    API server's message (one line, bounded), `action` what the request was doing."""

    def __init__(self, status: int, reason: str, message: str, action: str = "") -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.action = action


def is_unreachable(exc: BaseException) -> bool:
    """Did a request fail without an answer from the API server (connection, timeout)?"""
    return isinstance(exc, aiohttp.ClientError | TimeoutError)


@dataclass(frozen=True)
class Connection:
    """How to reach the API server (from kopf's `ConnectionInfo`)."""

    server: str
    token: str | None = None
    ca_path: str | None = None
    ca_data: bytes | None = None
    insecure: bool = False
    certificate_path: str | None = None
    private_key_path: str | None = None

    @classmethod
    def from_kopf(cls, info: Any) -> Connection:
        return cls(
            server=info.server,
            token=info.token,
            ca_path=info.ca_path,
            ca_data=info.ca_data,
            insecure=bool(info.insecure),
            certificate_path=info.certificate_path,
            private_key_path=info.private_key_path,
        )


def _ssl_context(conn: Connection) -> ssl.SSLContext | bool:
    if not conn.server.startswith("https"):
        return False
    if conn.insecure:
        return False
    context = ssl.create_default_context(cafile=conn.ca_path)
    if conn.ca_data:
        context.load_verify_locations(cadata=conn.ca_data.decode())
    if conn.certificate_path:
        context.load_cert_chain(conn.certificate_path, conn.private_key_path)
    return context


async def _api_error(response: aiohttp.ClientResponse, method: str, path: str) -> ApiError:
    """The ApiError for a non-2xx answer, whatever its body: a Status object, other JSON, an
    HTML page of a proxy, or nothing."""
    text = (await response.content.read(65536)).decode("utf-8", "replace")
    try:
        data = json.loads(text) if text.strip() else {}
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    message = data.get("message")
    message = str(message) if message else text or str(response.reason or "")
    return ApiError(response.status, status_reason(response.status, str(data.get("reason") or "")),
                    one_line(message), describe_request(method, path))


async def create_unless_exists(
    create: Callable[[Kind, dict[str, Any]], Awaitable[dict[str, Any]]],
    kind: Kind,
    body: dict[str, Any],
) -> bool:
    """`create(kind, body)`; False when the object exists already (409 is 'already done')."""
    try:
        await create(kind, body)
    except ApiError as exc:
        if exc.status == 409:
            return False
        raise
    return True


class KubeClient:
    """Async JSON client; create it inside the event loop that will use it."""

    def __init__(
        self, conn: Connection, timeout: float = 30.0, user_agent: str = "kaito-operator"
    ) -> None:
        headers = {"User-Agent": user_agent, "Accept": "application/json"}
        if conn.token:
            headers["Authorization"] = f"Bearer {conn.token}"
        self._base = conn.server.rstrip("/")
        self._session = aiohttp.ClientSession(
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout),
            connector=aiohttp.TCPConnector(ssl=_ssl_context(conn)),
        )

    async def close(self) -> None:
        await self._session.close()

    async def _request(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        """The JSON object the API server answered with (`{}` for an empty body)."""
        kwargs: dict[str, Any] = {"params": dict(params or {})}
        if body is not None:
            kwargs["json"] = body
            kwargs["headers"] = {"Content-Type": content_type}
        async with self._session.request(method, self._base + path, **kwargs) as response:
            if response.status >= 400:
                raise await _api_error(response, method, path)
            data = await response.json(content_type=None) if response.content_length != 0 else {}
        if not isinstance(data, dict):
            raise ApiError(500, "InternalError", f"the answer is a JSON {type(data).__name__}, "
                           "not an object", describe_request(method, path))
        return data

    async def get(self, kind: Kind, name: str, namespace: str | None = None) -> dict[str, Any]:
        return await self._request("GET", kind.path(namespace, name))

    async def get_or_none(
        self, kind: Kind, name: str, namespace: str | None = None
    ) -> dict[str, Any] | None:
        try:
            return await self.get(kind, name, namespace)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def list(
        self,
        kind: Kind,
        namespace: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        params = {}
        if labels:
            params["labelSelector"] = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        data = await self._request("GET", kind.path(namespace), params=params)
        return list(data.get("items") or [])

    async def create(self, kind: Kind, body: dict[str, Any]) -> dict[str, Any]:
        namespace = body.get("metadata", {}).get("namespace")
        return await self._request("POST", kind.path(namespace), body)

    async def patch(
        self,
        kind: Kind,
        name: str,
        patch: dict[str, Any],
        namespace: str | None = None,
        status: bool = False,
    ) -> dict[str, Any]:
        return await self._request(
            "PATCH",
            kind.path(namespace, name, "status" if status else ""),
            patch,
            content_type="application/merge-patch+json",
        )

    async def delete(self, kind: Kind, name: str, namespace: str | None = None) -> bool:
        """Delete; False when it was already gone."""
        try:
            await self._request(
                "DELETE", kind.path(namespace, name), {"propagationPolicy": "Background"}
            )
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def create_if_missing(self, kind: Kind, body: dict[str, Any]) -> bool:
        """Create; False when it exists already (409 is 'already done')."""
        return await create_unless_exists(self.create, kind, body)

    async def event(
        self,
        obj: Mapping[str, Any],
        type_: str,
        reason: str,
        message: str,
        now: str,
        component: str = "kaito-workspace",
    ) -> None:
        """Record an Event on `obj` (best effort: a lost Event must not fail a reconcile)."""
        meta = obj.get("metadata", {})
        namespace = meta.get("namespace") or "default"
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{meta.get('name')}.{uuid.uuid4().hex[:12]}",
                         "namespace": namespace},
            "involvedObject": {
                "apiVersion": obj.get("apiVersion"),
                "kind": obj.get("kind"),
                "name": meta.get("name"),
                "namespace": namespace,
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": component},
            "reportingComponent": component,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            await self.create(EVENTS, body)
        except (ApiError, aiohttp.ClientError, TimeoutError):
            pass
