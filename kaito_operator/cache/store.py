"""The watch cache's store: the latest copy of each object of the cached kinds.

Of two copies of one object the one with the higher resourceVersion wins, whether it came from
the watch or from the answer to one of our writes. A deleted object leaves a tombstone (its last
resourceVersion), so an older copy arriving late does not bring it back, while a newer one (the
object created again, or still there with a deletionTimestamp because of finalizers) does.
Lists filter by equality labels through an index of (label, value) to objects and come in the
API's order (namespace, then name); every read is a copy.

What it covers must match what kopf watches: cluster-scoped kinds everywhere, namespaced kinds
in the namespaces the operator was started with (`WatchCache.watch_scope`, given the same
`clusterwide` and `namespaces` as `kopf.operator`; until it is called only cluster-scoped kinds
are covered). Nothing is covered before `mark_synced` (see `kaito_operator.cache.feed`).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from kaito_operator.kube import Kind

__all__ = ["WatchCache"]

ObjectKey = tuple[str, str]
"""(namespace or "", name)."""

#: Deleted objects remembered per kind (oldest forgotten first).
MAX_TOMBSTONES = 10_000


def _key(obj: Mapping[str, Any]) -> ObjectKey:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def _version(obj: Mapping[str, Any] | None) -> int | None:
    """The resourceVersion as a number, None when absent or opaque."""
    raw = ((obj or {}).get("metadata") or {}).get("resourceVersion")
    return int(raw) if isinstance(raw, str) and raw.isdigit() else None


def _newer(incoming: Mapping[str, Any], known: int | None) -> bool:
    """Does `incoming` replace what is known at resourceVersion `known`? Versions that are not
    numbers cannot be ordered: then the incoming copy wins."""
    version = _version(incoming)
    return version is None or known is None or version > known


def _labels(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("labels") or {})


def _copy(value: Any) -> Any:
    """A copy of a JSON value (dicts, lists, scalars): what the API answered, for a caller to
    keep or change without touching the cache."""
    if isinstance(value, Mapping):
        return {key: _copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy(item) for item in value]
    return value


class _Store:
    """One kind's objects, tombstones, and which objects carry each label (key, value)."""

    def __init__(self) -> None:
        self.objects: dict[ObjectKey, dict[str, Any]] = {}
        self.tombstones: dict[ObjectKey, int | None] = {}
        self._labelled: dict[tuple[str, str], set[ObjectKey]] = {}

    def put(self, obj: Mapping[str, Any]) -> None:
        key = _key(obj)
        if key in self.tombstones:
            if not _newer(obj, self.tombstones[key]):
                return
            del self.tombstones[key]
        current = self.objects.get(key)
        if current is None or _newer(obj, _version(current)):
            self._unlabel(key)
            self.objects[key] = _copy(obj)
            for label in _labels(obj).items():
                self._labelled.setdefault(label, set()).add(key)

    def remove(self, key: ObjectKey, version: int | None) -> None:
        held = _version(self.objects.get(key))
        if held is not None and version is not None and held > version:
            return  # what we hold is newer than the deletion: the object was created again
        self._unlabel(key)
        self.objects.pop(key, None)
        self.tombstones.pop(key, None)
        self.tombstones[key] = version
        while len(self.tombstones) > MAX_TOMBSTONES:
            del self.tombstones[next(iter(self.tombstones))]

    def _unlabel(self, key: ObjectKey) -> None:
        current = self.objects.get(key)
        for label in _labels(current or {}).items():
            keys = self._labelled.get(label)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._labelled[label]

    def keys_with(self, labels: Mapping[str, str]) -> set[ObjectKey]:
        """The objects that carry every one of `labels` (all objects for none)."""
        if not labels:
            return set(self.objects)
        found = [self._labelled.get(label, set()) for label in labels.items()]
        found.sort(key=len)
        return set(found[0]).intersection(*found[1:])


class WatchCache:
    """The latest known copy of each object of `kinds`; see the module docstring."""

    def __init__(self, kinds: Iterable[Kind]) -> None:
        self._stores: dict[Kind, _Store] = {kind: _Store() for kind in kinds}
        self._synced = False
        self._clusterwide = False
        self._namespaces: tuple[str, ...] = ()

    @property
    def kinds(self) -> tuple[Kind, ...]:
        return tuple(self._stores)

    @property
    def synced(self) -> bool:
        return self._synced

    def mark_synced(self) -> None:
        """The initial listing of every cached kind is in (kopf started its handlers)."""
        self._synced = True

    def watch_scope(self, clusterwide: bool, namespaces: Collection[str] = ()) -> None:
        """What kopf watches namespaced kinds in: the arguments given to `kopf.operator`
        (namespace names or kopf's patterns: globs, `!excluded`)."""
        self._clusterwide = clusterwide
        self._namespaces = tuple(namespaces)

    def covers(self, kind: Kind, namespace: str | None) -> bool:
        """Can a read of `kind` in `namespace` (None: every namespace) be answered here?"""
        if not self._synced or kind not in self._stores:
            return False
        if not kind.namespaced or self._clusterwide:
            return True
        if not namespace:
            return False
        excluded = [p[1:] for p in self._namespaces if p.startswith("!")]
        included = [p for p in self._namespaces if not p.startswith("!")]
        return any(fnmatch.fnmatchcase(namespace, p) for p in included) and not any(
            fnmatch.fnmatchcase(namespace, p) for p in excluded
        )

    # -- feeding -------------------------------------------------------------------------
    def store(self, kind: Kind, obj: Mapping[str, Any]) -> None:
        """An object as the watch or the answer to a write shows it (newer wins)."""
        if kind in self._stores and _key(obj)[1]:
            self._stores[kind].put(obj)

    def discard(self, kind: Kind, obj: Mapping[str, Any]) -> None:
        """The object is gone (a watch DELETED event, or our delete): tombstone it at its
        resourceVersion (the newest known one when `obj` carries none)."""
        store = self._stores.get(kind)
        if store is None:
            return
        key = _key(obj)
        version = _version(obj)
        if version is None:
            version = _version(store.objects.get(key))
        store.remove(key, version)

    # -- reading -------------------------------------------------------------------------
    def get(self, kind: Kind, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        found = self._stores[kind].objects.get(((namespace or "") if kind.namespaced else "", name))
        return _copy(found) if found is not None else None

    def list(
        self, kind: Kind, namespace: str | None = None, labels: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """Matching objects in the API's order (namespace, then name)."""
        store = self._stores[kind]
        everywhere = not namespace or not kind.namespaced
        keys = sorted(k for k in store.keys_with(labels or {}) if everywhere or k[0] == namespace)
        return [_copy(store.objects[key]) for key in keys]
