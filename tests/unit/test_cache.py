"""The watch cache's semantics: sync, newer copy wins, tombstones, filtering, coverage.

Its feeding by kopf and the client on top are in tests/component/test_watch_cache.py."""

from __future__ import annotations

from typing import Any

from kaito_operator.cache import WatchCache
from kaito_operator.kube import MACHINES, NODES, PODS, WORKSPACES


def obj(name: str, rv: int | str | None, namespace: str | None = None,
        labels: dict[str, str] | None = None, **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": labels or {}}
    if namespace:
        meta["namespace"] = namespace
    if rv is not None:
        meta["resourceVersion"] = str(rv)
    return {"metadata": meta, **extra}


def synced(*kinds: Any, clusterwide: bool = True) -> WatchCache:
    cache = WatchCache(kinds or (MACHINES, NODES, PODS))
    cache.watch_scope(clusterwide)
    cache.mark_synced()
    return cache


def test_nothing_is_served_until_synced():
    cache = WatchCache([MACHINES])
    cache.store(MACHINES, obj("m", 1))
    assert not cache.synced and not cache.covers(MACHINES, None)
    cache.mark_synced()
    assert cache.covers(MACHINES, None)
    assert cache.get(MACHINES, "m") == obj("m", 1)


def test_kinds_not_cached_are_never_served():
    cache = synced(MACHINES)
    assert not cache.covers(NODES, None)
    cache.store(NODES, obj("n", 1))  # ignored
    assert not cache.covers(NODES, None)


def test_newer_resource_version_wins_whatever_arrives_first():
    cache = synced()
    cache.store(MACHINES, obj("m", 5, spec={"v": "write answer"}))
    cache.store(MACHINES, obj("m", 4, spec={"v": "late watch event"}))
    assert cache.get(MACHINES, "m")["spec"] == {"v": "write answer"}
    cache.store(MACHINES, obj("m", 6, spec={"v": "newer watch event"}))
    assert cache.get(MACHINES, "m")["spec"] == {"v": "newer watch event"}


def test_opaque_resource_versions_let_the_incoming_copy_win():
    cache = synced()
    cache.store(MACHINES, obj("m", "abc", spec={"v": 1}))
    cache.store(MACHINES, obj("m", "abd", spec={"v": 2}))
    assert cache.get(MACHINES, "m")["spec"] == {"v": 2}


def test_a_delete_leaves_a_tombstone_that_only_a_newer_copy_passes():
    cache = synced()
    cache.store(MACHINES, obj("m", 5))
    cache.discard(MACHINES, obj("m", 7))  # the watch's DELETED event
    cache.store(MACHINES, obj("m", 6))  # an answer to a write, arriving late
    assert cache.get(MACHINES, "m") is None
    assert cache.list(MACHINES) == []
    cache.store(MACHINES, obj("m", 9))  # created again
    assert cache.get(MACHINES, "m") == obj("m", 9)


def test_our_own_delete_tombstones_the_copy_held_now():
    cache = synced()
    cache.store(MACHINES, obj("m", 5))
    cache.discard(MACHINES, {"metadata": {"name": "m"}})  # no version: the held one's
    cache.store(MACHINES, obj("m", 5))  # the same copy again (a replayed event)
    assert cache.get(MACHINES, "m") is None
    deleting = obj("m", 6)
    deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"  # finalizers hold it
    cache.store(MACHINES, deleting)
    assert cache.get(MACHINES, "m")["metadata"]["deletionTimestamp"]


def test_a_deletion_older_than_the_held_copy_keeps_it():
    cache = synced()
    cache.store(MACHINES, obj("m", 9))
    cache.discard(MACHINES, obj("m", 7))
    assert cache.get(MACHINES, "m") == obj("m", 9)


def test_lists_filter_by_labels_and_namespace_in_api_order():
    cache = synced()
    cache.store(PODS, obj("b", 1, "ns1", {"app": "x", "tier": "web"}))
    cache.store(PODS, obj("a", 2, "ns1", {"app": "x"}))
    cache.store(PODS, obj("c", 3, "ns2", {"app": "x"}))
    names = [p["metadata"]["name"] for p in cache.list(PODS, "ns1", {"app": "x"})]
    assert names == ["a", "b"]
    assert [p["metadata"]["name"] for p in cache.list(PODS, "ns1", {"tier": "web"})] == ["b"]
    assert [p["metadata"]["name"] for p in cache.list(PODS, None, {"app": "x"})] == ["a", "b", "c"]
    assert cache.list(PODS, "ns1", {"app": "y"}) == []
    assert cache.get(PODS, "c", "ns1") is None and cache.get(PODS, "c", "ns2") is not None


def test_reads_are_copies():
    cache = synced()
    cache.store(MACHINES, obj("m", 1, spec={"x": [1]}))
    cache.get(MACHINES, "m")["spec"]["x"].append(2)
    cache.list(MACHINES)[0]["spec"]["x"].append(3)
    assert cache.get(MACHINES, "m")["spec"] == {"x": [1]}


def test_namespaced_kinds_are_served_only_where_kopf_watches():
    cache = WatchCache([WORKSPACES, PODS, MACHINES])
    cache.mark_synced()
    # Scope unknown: only cluster-scoped kinds.
    assert cache.covers(MACHINES, None) and not cache.covers(PODS, "ns1")
    cache.watch_scope(clusterwide=False, namespaces=["ns1", "team-*", "!team-secret"])
    assert cache.covers(PODS, "ns1") and cache.covers(WORKSPACES, "team-a")
    assert not cache.covers(PODS, "ns2") and not cache.covers(PODS, "team-secret")
    assert not cache.covers(PODS, None)  # every namespace: more than is watched
    assert cache.covers(MACHINES, None)
    cache.watch_scope(clusterwide=True)
    assert cache.covers(PODS, None) and cache.covers(PODS, "ns2")



def test_a_changed_or_deleted_object_leaves_its_old_labels():
    cache = synced()
    cache.store(NODES, obj("n", 1, labels={"pool": "a"}))
    cache.store(NODES, obj("n", 2, labels={"pool": "b"}))
    assert cache.list(NODES, labels={"pool": "a"}) == []
    assert [n["metadata"]["name"] for n in cache.list(NODES, labels={"pool": "b"})] == ["n"]
    cache.store(NODES, obj("n", 1, labels={"pool": "a"}))  # older: ignored, labels too
    assert cache.list(NODES, labels={"pool": "a"}) == []
    cache.discard(NODES, obj("n", 3))
    assert cache.list(NODES, labels={"pool": "b"}) == [] and cache.list(NODES) == []
