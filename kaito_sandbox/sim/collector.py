"""The controller-manager's share of deletion: ownerReference GC and namespace termination.

kmock 0.8 has no garbage collection, so an operator that forgets ownerReferences (or sets a wrong
uid) passes tests and leaks objects in a real cluster.  Here, as in a real cluster:

- background: once an owner is gone, dependents whose owners are all gone are deleted; dangling
  references to gone owners are pruned from dependents that still have a live owner;
- foreground (``foregroundDeletion`` finalizer): dependents go first, then the owner;
- orphan (``orphan`` finalizer): dependents lose their reference, the owner goes;
- a deleted namespace is ``Terminating`` until everything in it is gone.

It runs asynchronously after the request that triggered it, like the real controllers.
"""

from __future__ import annotations

import collections
import copy
from collections.abc import Callable
from typing import Any

from kaito_sandbox.sim.store import NAMESPACES, ObjKey, Store

__all__ = ["collect_garbage"]


def collect_garbage(store: Store, max_passes: int = 50) -> None:
    """Run passes until nothing changes (bounded: every pass that changes something deletes)."""
    store.gc_pending = False
    for _ in range(max_passes):
        if not _gc_pass(store):
            return


def _edit(store: Store, key: ObjKey, mutate: Callable[[dict[str, Any]], None]) -> None:
    current = store.peek(key)
    if current is None:
        return
    new = copy.deepcopy(current)
    mutate(new)
    store.update(store.types[key[0]], key[1], key[2], new, None)


def _drop_refs(uids: set[str]) -> Callable[[dict[str, Any]], None]:
    def mutate(obj: dict[str, Any]) -> None:
        refs = obj["metadata"].get("ownerReferences") or []
        obj["metadata"]["ownerReferences"] = [r for r in refs if r.get("uid") not in uids]

    return mutate


def _drop_finalizer(name: str) -> Callable[[dict[str, Any]], None]:
    def mutate(obj: dict[str, Any]) -> None:
        obj["metadata"]["finalizers"] = [f for f in obj["metadata"]["finalizers"] if f != name]

    return mutate


def _delete(store: Store, key: ObjKey, policy: str = "Background") -> None:
    store.delete(store.types[key[0]], key[1], key[2], {"propagationPolicy": policy})


def _gc_pass(store: Store) -> bool:
    changed = False
    dependents: dict[str, list[ObjKey]] = collections.defaultdict(list)
    for key in store.keys():
        obj = store.peek(key)  # earlier steps of this pass may have removed it
        if obj is None or key[0] not in store.types:
            continue
        meta = obj.get("metadata") or {}
        refs = meta.get("ownerReferences") or []
        for ref in refs:
            dependents[ref.get("uid", "")].append(key)
        dangling = {ref.get("uid", "") for ref in refs if not store.uid_exists(ref.get("uid", ""))}
        if not dangling:
            continue
        if len(dangling) < len({ref.get("uid", "") for ref in refs}):
            _edit(store, key, _drop_refs(dangling))
            changed = True
        elif not meta.get("deletionTimestamp"):
            _delete(store, key)
            changed = True
    for key in store.keys():
        obj = store.peek(key)
        meta = (obj or {}).get("metadata") or {}
        if obj is None or not meta.get("deletionTimestamp"):
            continue
        children = [k for k in dependents.get(meta.get("uid", ""), []) if store.peek(k) is not None]
        changed = _finish_deletion(store, key, meta, children) or changed
    return changed


def _finish_deletion(
    store: Store, key: ObjKey, meta: dict[str, Any], children: list[ObjKey]
) -> bool:
    """One step of a pending deletion; True if something changed."""
    finalizers = meta.get("finalizers") or []
    if "orphan" in finalizers:
        for child in children:
            _edit(store, child, _drop_refs({meta.get("uid", "")}))
        _edit(store, key, _drop_finalizer("orphan"))
        return True
    if key[0] == NAMESPACES:
        contents = [k for k in store.keys() if k[1] == key[2] and k[0] in store.types]
        live = [
            k
            for k in contents
            if not ((store.peek(k) or {}).get("metadata") or {}).get("deletionTimestamp")
        ]
        for item in live:
            _delete(store, item)
        if not contents and not finalizers:
            store.remove(key)
            return True
        return bool(live)
    if "foregroundDeletion" in finalizers:
        live = [
            k
            for k in children
            if not ((store.peek(k) or {}).get("metadata") or {}).get("deletionTimestamp")
        ]
        for child in live:
            _delete(store, child, "Foreground")
        if not children:
            _edit(store, key, _drop_finalizer("foregroundDeletion"))
            return True
        return bool(live)
    return False
