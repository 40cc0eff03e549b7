"""`CachedClient`: `KubeClient`'s methods, reads from the watch cache, writes through the API.

`get`, `get_or_none` and `list` of a cached kind are answered from the cache once it is synced
and covers the namespace asked for; everything else, and every write, goes to the API, and the
objects the API answers writes with are stored, so a pass right after a create sees what it
created. A read the cache does not cover goes to the API, never answers "not found".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kaito_operator.cache.store import WatchCache
from kaito_operator.kube import ApiError, Kind, KubeClient, create_unless_exists

__all__ = ["CachedClient", "Client"]


class CachedClient:
    """`KubeClient`'s interface: reads of cached kinds from the cache, the rest from the API."""

    def __init__(self, client: KubeClient, cache: WatchCache) -> None:
        self.api = client
        """The client underneath: reads that must see the API server's own answer."""
        self.cache = cache

    async def close(self) -> None:
        await self.api.close()

    async def get(self, kind: Kind, name: str, namespace: str | None = None) -> dict[str, Any]:
        if self.cache.covers(kind, namespace):
            found = self.cache.get(kind, name, namespace)
            if found is None:
                raise ApiError(404, "NotFound", f'{kind.plural} "{name}" not found',
                               f"get {kind.plural}/{name} (from the watch cache)")
            return found
        return await self.api.get(kind, name, namespace)

    async def get_or_none(
        self, kind: Kind, name: str, namespace: str | None = None
    ) -> dict[str, Any] | None:
        if self.cache.covers(kind, namespace):
            return self.cache.get(kind, name, namespace)
        return await self.api.get_or_none(kind, name, namespace)

    async def list(
        self, kind: Kind, namespace: str | None = None, labels: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]:
        if self.cache.covers(kind, namespace):
            return self.cache.list(kind, namespace, labels)
        return await self.api.list(kind, namespace, labels)

    async def create(self, kind: Kind, body: dict[str, Any]) -> dict[str, Any]:
        created = await self.api.create(kind, body)
        self.cache.store(kind, created)
        return created

    async def patch(
        self,
        kind: Kind,
        name: str,
        patch: dict[str, Any],
        namespace: str | None = None,
        status: bool = False,
    ) -> dict[str, Any]:
        try:
            patched = await self.api.patch(kind, name, patch, namespace, status)
        except ApiError as exc:
            if exc.status == 404:  # gone, whatever the copy here says
                self.cache.discard(kind, {"metadata": {"name": name, "namespace": namespace}})
            raise
        self.cache.store(kind, patched)
        return patched

    async def delete(self, kind: Kind, name: str, namespace: str | None = None) -> bool:
        """Delete; False when it was already gone. Either way reads stop showing the copy
        held now (a newer one from the watch, e.g. with a deletionTimestamp, shows again)."""
        deleted = await self.api.delete(kind, name, namespace)
        self.cache.discard(kind, {"metadata": {"name": name, "namespace": namespace}})
        return deleted

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
        await self.api.event(obj, type_, reason, message, now, component)


Client = KubeClient | CachedClient
"""What reconcile code talks to the API through: the plain client or the cached one."""
