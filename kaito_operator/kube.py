"""The only module that talks to the Kubernetes API server (besides kopf itself).

A small async JSON client on aiohttp: get, list (label selectors), create, merge-patch,
status patch, delete, and Events. Errors come back as `ApiError` with the HTTP status, so
callers can say "404 is gone, 409 is already there" in one place (`ignore_conflict`,
`ignore_not_found`). Connection details come from kopf's login (`ConnectionInfo`), so the
operator and its client authenticate the same way.
"""

from __future__ import annotations

import ssl
import uuid
from collections.abc import Mapping
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
NODES = Kind("", "v1", "nodes", "Node", False)
PODS = Kind("", "v1", "pods", "Pod", True)
SERVICES = Kind("", "v1", "services", "Service", True)
EVENTS = Kind("", "v1", "events", "Event", True)
DEPLOYMENTS = Kind("apps", "v1", "deployments", "Deployment", True)
STATEFULSETS = Kind("apps", "v1", "statefulsets", "StatefulSet", True)
JOBS = Kind("batch", "v1", "jobs", "Job", True)


class ApiError(Exception):
    """A non-2xx answer; `status` is the HTTP code, `reason` the Status reason."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


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
    ) -> Any:
        kwargs: dict[str, Any] = {"params": dict(params or {})}
        if body is not None:
            kwargs["json"] = body
            kwargs["headers"] = {"Content-Type": content_type}
        async with self._session.request(method, self._base + path, **kwargs) as response:
            data = await response.json(content_type=None) if response.content_length != 0 else {}
            if response.status >= 400:
                data = data if isinstance(data, dict) else {}
                raise ApiError(
                    response.status,
                    str(data.get("reason") or response.reason),
                    str(data.get("message") or ""),
                )
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
        try:
            await self.create(kind, body)
        except ApiError as exc:
            if exc.status == 409:
                return False
            raise
        return True

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
        except (ApiError, aiohttp.ClientError):
            pass
