"""Feeding the watch cache from the operator's own kopf watches.

`register_cache(registry, cache)` adds, per cached kind, a kopf index handler that stores each
listed, added or modified object and an event handler that tombstones deleted ones. kopf runs
no other handler before the initial listing of every indexed kind is indexed, an empty listing
included, so the first call of a cache event handler proves the cache complete: that call marks
it synced. Until then every read goes to the API (a start-up with no objects at all of the
cached kinds reads through the API until the first one appears).

Limit, as with kopf's own indices: kopf re-lists a kind only when a watch cannot resume ("410
Gone"; its watches ask for bookmarks, so this is rare), and an object deleted while that watch
was down gives no DELETED event: its copy stays until something writes to it (the API's 404
removes it) or the operator restarts.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import kopf

from kaito_operator.cache.store import WatchCache
from kaito_operator.kube import Kind

__all__ = ["register_cache"]


def _resource(kind: Kind) -> tuple[str, ...]:
    """The (group, version, plural) kopf names `kind` by; the core group has no group."""
    return (kind.group, kind.version, kind.plural) if kind.group else (kind.version, kind.plural)


def register_cache(registry: kopf.OperatorRegistry, cache: WatchCache,
                   kinds: Iterable[Kind] | None = None) -> None:
    """Feed `cache` from the operator's watches of `kinds` (default: all the cache holds)."""
    for kind in kinds if kinds is not None else cache.kinds:
        handler_id = f"kaito_cache_{kind.plural}"

        @kopf.index(*_resource(kind), id=handler_id, registry=registry)
        async def listed(body: kopf.Body, _kind: Kind = kind, **_: Any) -> None:
            cache.store(_kind, body)

        @kopf.on.event(*_resource(kind), id=f"{handler_id}_events", registry=registry)
        async def changed(type: str | None, body: kopf.Body, _kind: Kind = kind,
                          **_: Any) -> None:
            cache.mark_synced()
            if type == "DELETED":
                cache.discard(_kind, body)
