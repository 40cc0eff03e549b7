"""The API emulator behaves like a real API server where the operators rely on it.

Every test goes through HTTP (httpx or the sync `kubernetes` client from the test thread), so
these tests check the served behaviour, not the store's internals.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import kubernetes
import pytest

from kaito_sandbox.sim.kube_api import KubeApiEmulator
from tests.support.waiting import wait_for

WS = "/apis/kaito.sh/v1alpha1"
MERGE = {"Content-Type": "application/merge-patch+json"}
JSONPATCH = {"Content-Type": "application/json-patch+json"}
STRATEGIC = {"Content-Type": "application/strategic-merge-patch+json"}


def ws_url(ns: str, name: str = "", sub: str = "") -> str:
    return "/".join(p for p in (f"{WS}/namespaces/{ns}/workspaces", name, sub) if p)


def workspace(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kaito.sh/v1alpha1",
        "kind": "Workspace",
        "metadata": {"name": name, **extra},
        "resource": {"count": 1, "instanceType": "Standard_NC12s_v3"},
        "inference": {"preset": {"name": "falcon-7b"}},
    }


def create(http: httpx.Client, url: str, body: dict[str, Any]) -> dict[str, Any]:
    rsp = http.post(url, json=body)
    assert rsp.status_code == 201, rsp.text
    return rsp.json()


def watch_events(
    http: httpx.Client, url: str, params: dict[str, str], count: int, timeout: float = 3.0
) -> list[dict[str, Any]]:
    """Read up to `count` events from a watch (the server-side timeoutSeconds bounds it too)."""
    events: list[dict[str, Any]] = []
    with http.stream("GET", url, params={"watch": "true", **params}, timeout=timeout) as rsp:
        assert rsp.status_code == 200
        for line in rsp.iter_lines():
            if line.strip():
                events.append(json.loads(line))
                if len(events) >= count:
                    break
    return events


# --- object metadata -------------------------------------------------------------------------------


def test_create_fills_server_side_metadata(http: httpx.Client, namespace: str) -> None:
    body = create(http, ws_url(namespace), workspace("w1"))
    meta = body["metadata"]
    assert meta["namespace"] == namespace
    assert len(meta["uid"]) == 36
    assert meta["resourceVersion"].isdigit()
    assert meta["generation"] == 1
    assert meta["creationTimestamp"].endswith("Z")
    assert body["kind"] == "Workspace" and body["apiVersion"] == "kaito.sh/v1alpha1"
    fetched = http.get(ws_url(namespace, "w1")).json()
    assert fetched["metadata"] == meta


def test_resource_version_is_a_cluster_wide_monotonic_counter(
    http: httpx.Client, namespace: str
) -> None:
    a = create(http, ws_url(namespace), workspace("a"))
    cm = create(
        http, f"/api/v1/namespaces/{namespace}/configmaps", {"metadata": {"name": "c"}, "data": {}}
    )
    m = create(
        http, "/apis/karpenter.sh/v1alpha5/machines", {"metadata": {"name": f"m-{namespace}"}}
    )
    rvs = [int(o["metadata"]["resourceVersion"]) for o in (a, cm, m)]
    assert rvs == sorted(rvs) and len(set(rvs)) == 3
    listed = http.get(f"/api/v1/namespaces/{namespace}/configmaps").json()
    assert int(listed["metadata"]["resourceVersion"]) >= rvs[-1]
    assert "namespace" not in m["metadata"]


def test_generation_counts_only_changes_outside_metadata_and_status(
    http: httpx.Client, namespace: str
) -> None:
    create(http, ws_url(namespace), workspace("g"))
    labelled = http.patch(
        ws_url(namespace, "g"), json={"metadata": {"labels": {"a": "b"}}}, headers=MERGE
    ).json()
    assert labelled["metadata"]["generation"] == 1
    status = http.patch(
        ws_url(namespace, "g", "status"), json={"status": {"phase": "x"}}, headers=MERGE
    ).json()
    assert status["metadata"]["generation"] == 1
    changed = http.patch(
        ws_url(namespace, "g"), json={"resource": {"count": 2}}, headers=MERGE
    ).json()
    assert changed["metadata"]["generation"] == 2
    assert int(changed["metadata"]["resourceVersion"]) > int(status["metadata"]["resourceVersion"])


def test_noop_patch_keeps_the_resource_version(http: httpx.Client, namespace: str) -> None:
    created = create(http, ws_url(namespace), workspace("n"))
    same = http.patch(ws_url(namespace, "n"), json={"resource": {"count": 1}}, headers=MERGE).json()
    assert same["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]


def test_generate_name(http: httpx.Client, namespace: str) -> None:
    body = create(http, ws_url(namespace), {"metadata": {"generateName": "gen-"}, "resource": {}})
    assert body["metadata"]["name"].startswith("gen-") and len(body["metadata"]["name"]) == 9


def test_invalid_names_are_rejected(http: httpx.Client, namespace: str) -> None:
    rsp = http.post(ws_url(namespace), json=workspace("Upper_Case"))
    assert rsp.status_code == 422 and rsp.json()["reason"] == "Invalid"


# --- errors --------------------------------------------------------------------------------------


def test_missing_object_is_404_with_a_status_body(http: httpx.Client, namespace: str) -> None:
    rsp = http.get(ws_url(namespace, "absent"))
    assert rsp.status_code == 404
    body = rsp.json()
    assert body["kind"] == "Status" and body["reason"] == "NotFound" and body["code"] == 404
    assert body["details"] == {"name": "absent", "group": "kaito.sh", "kind": "workspaces"}
    assert http.patch(ws_url(namespace, "absent"), json={}, headers=MERGE).status_code == 404
    assert http.delete(ws_url(namespace, "absent")).status_code == 404


def test_unknown_resource_is_404(http: httpx.Client) -> None:
    rsp = http.get("/apis/kaito.sh/v1alpha1/namespaces/x/gizmos")
    assert rsp.status_code == 404 and rsp.json()["kind"] == "Status"


def test_create_of_an_existing_name_is_409_already_exists(
    http: httpx.Client, namespace: str
) -> None:
    create(http, ws_url(namespace), workspace("dup"))
    rsp = http.post(ws_url(namespace), json=workspace("dup"))
    assert rsp.status_code == 409 and rsp.json()["reason"] == "AlreadyExists"


def test_stale_resource_version_is_409_conflict(http: httpx.Client, namespace: str) -> None:
    first = create(http, ws_url(namespace), workspace("occ"))
    stale_rv = first["metadata"]["resourceVersion"]
    http.patch(
        ws_url(namespace, "occ"), json={"resource": {"count": 3}}, headers=MERGE
    ).raise_for_status()
    stale = {"metadata": {"resourceVersion": stale_rv}, "resource": {"count": 4}}
    rsp = http.patch(ws_url(namespace, "occ"), json=stale, headers=MERGE)
    assert rsp.status_code == 409 and rsp.json()["reason"] == "Conflict"
    first["resource"] = {"count": 5}
    assert http.put(ws_url(namespace, "occ"), json=first).status_code == 409
    assert http.get(ws_url(namespace, "occ")).json()["resource"]["count"] == 3


def test_failed_json_patch_test_is_422_and_passing_one_applies(
    http: httpx.Client, namespace: str
) -> None:
    obj = create(http, ws_url(namespace), workspace("jp"))
    rv = obj["metadata"]["resourceVersion"]
    bad = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "999999999"},
        {"op": "add", "path": "/metadata/finalizers", "value": ["x/y"]},
    ]
    rsp = http.patch(ws_url(namespace, "jp"), json=bad, headers=JSONPATCH)
    assert rsp.status_code == 422 and rsp.json()["reason"] == "Invalid"
    good = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
        {"op": "add", "path": "/metadata/finalizers", "value": ["x/y"]},
    ]
    rsp = http.patch(ws_url(namespace, "jp"), json=good, headers=JSONPATCH)
    assert rsp.status_code == 200 and rsp.json()["metadata"]["finalizers"] == ["x/y"]


# --- status subresource ----------------------------------------------------------------------------


def test_status_subresource_is_separate(http: httpx.Client, namespace: str) -> None:
    created = create(http, ws_url(namespace), {**workspace("st"), "status": {"phase": "ignored"}})
    assert "status" not in created  # creates ignore status of kinds with a status subresource
    http.patch(
        ws_url(namespace, "st", "status"), json={"status": {"phase": "Ready"}}, headers=MERGE
    )
    main = http.patch(
        ws_url(namespace, "st"),
        json={"status": {"phase": "Hacked"}, "resource": {"count": 2}},
        headers=MERGE,
    ).json()
    assert main["status"] == {"phase": "Ready"} and main["resource"]["count"] == 2
    via_status = http.patch(
        ws_url(namespace, "st", "status"),
        json={
            "status": {"phase": "Done"},
            "resource": {"count": 9},
            "metadata": {"labels": {"sneaky": "yes"}},
        },
        headers=MERGE,
    ).json()
    assert via_status["status"] == {"phase": "Done"}
    assert via_status["resource"]["count"] == 2 and "labels" not in via_status["metadata"]
    assert http.get(ws_url(namespace, "st", "status")).json()["status"] == {"phase": "Done"}


# --- patch flavours and PUT ------------------------------------------------------------------------


def test_put_replaces_and_custom_resources_need_a_resource_version(
    http: httpx.Client, namespace: str
) -> None:
    obj = create(http, ws_url(namespace), workspace("put", labels={"keep": "no"}))
    obj["metadata"]["labels"] = {"new": "yes"}
    obj["resource"] = {"count": 7}
    del obj["inference"]
    replaced = http.put(ws_url(namespace, "put"), json=obj)
    assert replaced.status_code == 200, replaced.text
    body = replaced.json()
    assert body["metadata"]["labels"] == {"new": "yes"} and "inference" not in body
    assert body["metadata"]["generation"] == 2
    del obj["metadata"]["resourceVersion"]
    assert http.put(ws_url(namespace, "put"), json=obj).status_code == 422


def test_merge_patch_null_deletes_keys(http: httpx.Client, namespace: str) -> None:
    create(http, ws_url(namespace), workspace("mp", labels={"a": "1", "b": "2"}))
    body = http.patch(
        ws_url(namespace, "mp"), json={"metadata": {"labels": {"a": None}}}, headers=MERGE
    ).json()
    assert body["metadata"]["labels"] == {"b": "2"}


def test_strategic_merge_merges_containers_by_name(http: httpx.Client, namespace: str) -> None:
    url = f"/apis/apps/v1/namespaces/{namespace}/deployments"
    template = {
        "metadata": {"labels": {"app": "x"}},
        "spec": {
            "containers": [{"name": "main", "image": "a:1"}, {"name": "side", "image": "b:1"}]
        },
    }
    create(
        http,
        url,
        {
            "metadata": {"name": "d"},
            "spec": {"selector": {"matchLabels": {"app": "x"}}, "template": template},
        },
    )
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "side", "image": "b:2"}]}}}}
    body = http.patch(f"{url}/d", json=patch, headers=STRATEGIC).json()
    assert body["spec"]["template"]["spec"]["containers"] == [
        {"name": "main", "image": "a:1"},
        {"name": "side", "image": "b:2"},
    ]
    merged = http.patch(f"{url}/d", json=patch, headers=MERGE).json()  # merge-patch replaces lists
    assert merged["spec"]["template"]["spec"]["containers"] == [{"name": "side", "image": "b:2"}]
    assert http.patch(ws_url(namespace, "nope"), json={}, headers=STRATEGIC).status_code in (
        404,
        415,
    )


def test_strategic_merge_is_unsupported_for_custom_resources(
    http: httpx.Client, namespace: str
) -> None:
    create(http, ws_url(namespace), workspace("smp"))
    assert http.patch(ws_url(namespace, "smp"), json={}, headers=STRATEGIC).status_code == 415


# --- deletion, finalizers, GC ----------------------------------------------------------------------


def test_finalizers_keep_a_deleted_object_until_released(
    http: httpx.Client, namespace: str
) -> None:
    create(http, ws_url(namespace), workspace("fin", finalizers=["kaito.sh/x"]))
    deleted = http.delete(ws_url(namespace, "fin"))
    assert deleted.status_code == 200
    marked = http.get(ws_url(namespace, "fin")).json()
    assert marked["metadata"]["deletionTimestamp"] and marked["metadata"]["generation"] == 2
    add = http.patch(
        ws_url(namespace, "fin"),
        json={"metadata": {"finalizers": ["kaito.sh/x", "new/one"]}},
        headers=MERGE,
    )
    assert add.status_code == 422
    release = http.patch(
        ws_url(namespace, "fin"), json={"metadata": {"finalizers": None}}, headers=MERGE
    )
    assert release.status_code == 200
    assert http.get(ws_url(namespace, "fin")).status_code == 404
    recreated = create(http, ws_url(namespace), workspace("fin"))
    assert recreated["metadata"]["uid"] != marked["metadata"]["uid"]


def test_delete_preconditions(http: httpx.Client, namespace: str) -> None:
    create(http, ws_url(namespace), workspace("pre"))
    rsp = http.request("DELETE", ws_url(namespace, "pre"), json={"preconditions": {"uid": "other"}})
    assert rsp.status_code == 409
    assert http.get(ws_url(namespace, "pre")).status_code == 200


def _owned(owner: dict[str, Any], name: str, *more_owners: dict[str, Any]) -> dict[str, Any]:
    refs = [
        {
            "apiVersion": o["apiVersion"],
            "kind": o["kind"],
            "name": o["metadata"]["name"],
            "uid": o["metadata"]["uid"],
        }
        for o in (owner, *more_owners)
    ]
    return {"metadata": {"name": name, "ownerReferences": refs}, "data": {}}


def test_garbage_collection_deletes_dependents_of_a_deleted_owner(
    http: httpx.Client, namespace: str
) -> None:
    owner = create(http, ws_url(namespace), workspace("owner"))
    other = create(http, ws_url(namespace), workspace("other"))
    cms = f"/api/v1/namespaces/{namespace}/configmaps"
    create(http, cms, _owned(owner, "child"))
    create(http, cms, _owned(owner, "shared", other))
    create(http, cms, {"metadata": {"name": "bystander"}})
    assert http.delete(ws_url(namespace, "owner")).status_code == 200
    wait_for(lambda: http.get(f"{cms}/child").status_code == 404, what="dependent deleted")
    shared = wait_for(
        lambda: (
            (o := http.get(f"{cms}/shared").json())["metadata"]["ownerReferences"][0]["name"]
            == "other"
            and o
        ),
        what="dangling ref pruned",
    )
    assert len(shared["metadata"]["ownerReferences"]) == 1
    assert http.get(f"{cms}/bystander").status_code == 200


def test_foreground_and_orphan_propagation(http: httpx.Client, namespace: str) -> None:
    cms = f"/api/v1/namespaces/{namespace}/configmaps"
    fg = create(http, ws_url(namespace), workspace("fg"))
    create(http, cms, _owned(fg, "fg-child"))
    http.request(
        "DELETE", ws_url(namespace, "fg"), json={"propagationPolicy": "Foreground"}
    ).raise_for_status()
    wait_for(
        lambda: http.get(ws_url(namespace, "fg")).status_code == 404, what="foreground owner gone"
    )
    assert http.get(f"{cms}/fg-child").status_code == 404
    orphan_owner = create(http, ws_url(namespace), workspace("orph"))
    create(http, cms, _owned(orphan_owner, "orph-child"))
    http.request(
        "DELETE", ws_url(namespace, "orph"), json={"propagationPolicy": "Orphan"}
    ).raise_for_status()
    wait_for(
        lambda: http.get(ws_url(namespace, "orph")).status_code == 404, what="orphaning owner gone"
    )
    child = http.get(f"{cms}/orph-child").json()
    assert not child["metadata"].get("ownerReferences")


def test_dry_run_does_not_persist(http: httpx.Client, namespace: str) -> None:
    dry = {"dryRun": "All"}
    rsp = http.post(ws_url(namespace), json=workspace("dry"), params=dry)
    assert rsp.status_code == 201 and rsp.json()["metadata"]["name"] == "dry"
    assert http.get(ws_url(namespace, "dry")).status_code == 404
    real = create(http, ws_url(namespace), workspace("dry"))
    patched = http.patch(
        ws_url(namespace, "dry"), json={"resource": {"count": 9}}, headers=MERGE, params=dry
    )
    assert patched.json()["resource"]["count"] == 9
    assert http.delete(ws_url(namespace, "dry"), params=dry).status_code == 200
    after = http.get(ws_url(namespace, "dry")).json()
    assert after["resource"]["count"] == 1
    assert after["metadata"]["resourceVersion"] == real["metadata"]["resourceVersion"]


# --- lists and selectors ---------------------------------------------------------------------------


def test_list_kind_version_and_label_selectors(http: httpx.Client, namespace: str) -> None:
    for name, labels in {
        "a": {"app": "x", "tier": "web"},
        "b": {"app": "y"},
        "c": {"app": "z", "tier": "db"},
        "d": {},
    }.items():
        create(http, ws_url(namespace), workspace(name, labels=labels))
    listed = http.get(ws_url(namespace)).json()
    assert listed["kind"] == "WorkspaceList" and listed["apiVersion"] == "kaito.sh/v1alpha1"
    assert listed["metadata"]["resourceVersion"].isdigit()

    def names(selector: str) -> list[str]:
        rsp = http.get(ws_url(namespace), params={"labelSelector": selector})
        assert rsp.status_code == 200, rsp.text
        return [i["metadata"]["name"] for i in rsp.json()["items"]]

    assert names("app=x") == ["a"]
    assert names("app==x") == ["a"]
    assert names("app!=x") == ["b", "c", "d"]
    assert names("app in (x, z)") == ["a", "c"]
    assert names("app notin (x,z)") == ["b", "d"]
    assert names("tier") == ["a", "c"]
    assert names("!tier") == ["b", "d"]
    assert names("app,tier=db") == ["c"]
    assert http.get(ws_url(namespace), params={"labelSelector": "bad key"}).status_code == 400


def test_field_selectors(http: httpx.Client, namespace: str) -> None:
    pods = f"/api/v1/namespaces/{namespace}/pods"
    for name, node in (("p1", "node-a"), ("p2", "node-b"), ("p3", None)):
        spec: dict[str, Any] = {"containers": [{"name": "c", "image": "i"}]}
        if node:
            spec["nodeName"] = node
        create(http, pods, {"metadata": {"name": name}, "spec": spec})

    def names(selector: str, url: str = pods) -> list[str]:
        return [
            i["metadata"]["name"]
            for i in http.get(url, params={"fieldSelector": selector}).json()["items"]
        ]

    assert names("spec.nodeName=node-a") == ["p1"]
    assert names("spec.nodeName!=node-a") == ["p2", "p3"]
    assert names("spec.nodeName=") == ["p3"]
    assert names("metadata.name=p2") == ["p2"]
    assert names(f"metadata.namespace={namespace},status.phase=Pending", "/api/v1/pods") == [
        "p1",
        "p2",
        "p3",
    ]
    assert http.get(pods, params={"fieldSelector": "spec.bogus=1"}).status_code == 400


def test_list_pagination(http: httpx.Client, namespace: str) -> None:
    for i in range(5):
        create(http, ws_url(namespace), workspace(f"page-{i}"))
    first = http.get(ws_url(namespace), params={"limit": "2"}).json()
    assert [i["metadata"]["name"] for i in first["items"]] == ["page-0", "page-1"]
    assert first["metadata"]["remainingItemCount"] == 3
    rest = http.get(
        ws_url(namespace), params={"limit": "10", "continue": first["metadata"]["continue"]}
    ).json()
    assert [i["metadata"]["name"] for i in rest["items"]] == ["page-2", "page-3", "page-4"]
    assert "continue" not in rest["metadata"]


def test_namespaces_and_core_discovery(http: httpx.Client, namespace: str) -> None:
    create(http, f"/api/v1/namespaces/{namespace}/configmaps", {"metadata": {"name": "c"}})
    nss = http.get("/api/v1/namespaces")
    assert nss.status_code == 200 and nss.json()["kind"] == "NamespaceList"
    assert {"default", namespace} <= {n["metadata"]["name"] for n in nss.json()["items"]}
    assert http.get(f"/api/v1/namespaces/{namespace}").json()["status"]["phase"] == "Active"
    created = http.post("/api/v1/namespaces", json={"metadata": {"name": f"{namespace}-x"}})
    assert created.status_code == 201
    core = http.get("/api/v1").json()
    assert core["groupVersion"] == "v1"
    names = {r["name"] for r in core["resources"]}
    assert {
        "pods",
        "pods/status",
        "nodes",
        "services",
        "configmaps",
        "secrets",
        "events",
        "namespaces",
    } <= names


def test_custom_resource_discovery(http: httpx.Client) -> None:
    groups = {g["name"]: g for g in http.get("/apis").json()["groups"]}
    assert groups["kaito.sh"]["preferredVersion"]["groupVersion"] == "kaito.sh/v1alpha1"
    ws = {r["name"]: r for r in http.get(WS).json()["resources"]}
    assert ws["workspaces"]["kind"] == "Workspace" and ws["workspaces"]["namespaced"] is True
    assert "workspaces/status" in ws
    machines = {r["name"]: r for r in http.get("/apis/karpenter.sh/v1alpha5").json()["resources"]}
    assert machines["machines"]["namespaced"] is False and "machines/status" in machines
    for group in ("apps/v1", "batch/v1", "coordination.k8s.io/v1"):
        assert http.get(f"/apis/{group}").status_code == 200


def test_creating_a_crd_serves_its_kind(http: httpx.Client, namespace: str) -> None:
    crd = {
        "metadata": {"name": "gadgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {
                "plural": "gadgets",
                "singular": "gadget",
                "kind": "Gadget",
                "shortNames": ["gd"],
            },
            "versions": [
                {"name": "v1", "served": True, "storage": True, "subresources": {"status": {}}}
            ],
        },
    }
    create(http, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
    resources = {r["name"] for r in http.get("/apis/example.com/v1").json()["resources"]}
    assert resources == {"gadgets", "gadgets/status"}
    gadget = create(
        http, f"/apis/example.com/v1/namespaces/{namespace}/gadgets", {"metadata": {"name": "g"}}
    )
    assert gadget["kind"] == "Gadget"
    http.delete("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/gadgets.example.com")
    assert http.get(f"/apis/example.com/v1/namespaces/{namespace}/gadgets/g").status_code == 404


# --- watches ---------------------------------------------------------------------------------------


def test_watch_replays_from_a_resource_version(http: httpx.Client, namespace: str) -> None:
    first = create(http, ws_url(namespace), workspace("w-a"))
    create(http, ws_url(namespace), workspace("w-b"))
    http.patch(ws_url(namespace, "w-a"), json={"resource": {"count": 2}}, headers=MERGE)
    http.delete(ws_url(namespace, "w-b"))
    events = watch_events(
        http,
        ws_url(namespace),
        {"resourceVersion": first["metadata"]["resourceVersion"], "timeoutSeconds": "1"},
        count=3,
    )
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "w-b"),
        ("MODIFIED", "w-a"),
        ("DELETED", "w-b"),
    ]
    rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert rvs == sorted(rvs)


def test_watch_without_version_lists_then_streams_live(
    http: httpx.Client, kube_api: KubeApiEmulator, namespace: str
) -> None:
    create(http, ws_url(namespace), workspace("live-1"))
    events: list[dict[str, Any]] = []
    with httpx.Client(base_url=kube_api.url, timeout=30.0) as other:
        with http.stream(
            "GET", ws_url(namespace), params={"watch": "true", "timeoutSeconds": "30"}
        ) as rsp:
            lines = rsp.iter_lines()
            events.append(json.loads(next(line for line in lines if line.strip())))
            create(other, ws_url(namespace), workspace("live-2"))
            events.append(json.loads(next(line for line in lines if line.strip())))
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "live-1"),
        ("ADDED", "live-2"),
    ]


def test_watch_label_selector_transitions(http: httpx.Client, namespace: str) -> None:
    start = create(http, ws_url(namespace), workspace("sel", labels={"app": "x"}))
    create(http, ws_url(namespace), workspace("unrelated"))
    http.patch(ws_url(namespace, "sel"), json={"metadata": {"labels": {"app": "y"}}}, headers=MERGE)
    http.patch(ws_url(namespace, "sel"), json={"metadata": {"labels": {"app": "x"}}}, headers=MERGE)
    events = watch_events(
        http,
        ws_url(namespace),
        {
            "resourceVersion": start["metadata"]["resourceVersion"],
            "labelSelector": "app=x",
            "timeoutSeconds": "1",
        },
        count=2,
    )
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("DELETED", "sel"),
        ("ADDED", "sel"),
    ]


def test_watch_timeout_ends_the_stream(http: httpx.Client, namespace: str) -> None:
    started = time.monotonic()
    events = watch_events(http, ws_url(namespace), {"timeoutSeconds": "1"}, count=100, timeout=30.0)
    assert events == [] and 0.9 < time.monotonic() - started < 10.0  # 1 s, not the read timeout


def test_watch_from_an_expired_version_is_410() -> None:
    with (
        KubeApiEmulator(builtins=False, history_size=3) as api,
        httpx.Client(base_url=api.url) as http,
    ):
        first = create(http, ws_url("ns"), workspace("x0"))
        for i in range(1, 6):
            create(http, ws_url("ns"), workspace(f"x{i}"))
        events = watch_events(
            http, ws_url("ns"), {"resourceVersion": first["metadata"]["resourceVersion"]}, count=1
        )
        assert events[0]["type"] == "ERROR" and events[0]["object"]["code"] == 410


# --- the real kubernetes client, request log, fault injection --------------------------------------


def test_kubernetes_client_round_trip(kube_api: KubeApiEmulator, namespace: str) -> None:
    config = kubernetes.client.Configuration(host=kube_api.url)
    with kubernetes.client.ApiClient(config) as client:
        core, apps = kubernetes.client.CoreV1Api(client), kubernetes.client.AppsV1Api(client)
        deployment = kubernetes.client.V1Deployment(
            metadata=kubernetes.client.V1ObjectMeta(name="web", labels={"app": "web"}),
            spec=kubernetes.client.V1DeploymentSpec(
                selector=kubernetes.client.V1LabelSelector(match_labels={"app": "web"}),
                template=kubernetes.client.V1PodTemplateSpec(
                    metadata=kubernetes.client.V1ObjectMeta(labels={"app": "web"}),
                    spec=kubernetes.client.V1PodSpec(
                        containers=[kubernetes.client.V1Container(name="main", image="nginx")]
                    ),
                ),
            ),
        )
        created = apps.create_namespaced_deployment(namespace, deployment)
        assert created.metadata.generation == 1 and created.metadata.uid
        patched = apps.patch_namespaced_deployment("web", namespace, {"spec": {"replicas": 3}})
        assert patched.spec.replicas == 3 and patched.metadata.generation == 2
        listed = apps.list_namespaced_deployment(namespace, label_selector="app=web")
        assert [d.metadata.name for d in listed.items] == ["web"]
        with pytest.raises(kubernetes.client.ApiException) as info:
            core.read_namespaced_config_map("absent", namespace)
        assert info.value.status == 404
        watcher = kubernetes.watch.Watch()
        seen = [
            (e["type"], e["object"].metadata.name)
            for e in watcher.stream(
                apps.list_namespaced_deployment,
                namespace,
                resource_version=listed.metadata.resource_version,
                timeout_seconds=1,
            )
        ]
        assert seen == []
        apps.delete_namespaced_deployment("web", namespace)
        assert apps.list_namespaced_deployment(namespace).items == []


def test_request_log_records_verbs(
    http: httpx.Client, kube_api: KubeApiEmulator, namespace: str
) -> None:
    create(http, ws_url(namespace), workspace("log"))
    http.patch(ws_url(namespace, "log", "status"), json={"status": {}}, headers=MERGE)
    http.get(ws_url(namespace), params={"watch": "true", "timeoutSeconds": "0.1"})
    http.delete(ws_url(namespace, "log"))
    mine = [r for r in kube_api.requests if r.namespace == namespace]
    assert [(r.verb, r.resource, r.subresource, r.name, r.status) for r in mine] == [
        ("create", "workspaces", None, None, 201),
        ("patch", "workspaces", "status", "log", 200),
        ("watch", "workspaces", None, None, 200),
        ("delete", "workspaces", None, "log", 200),
    ]
    assert all(r.group == "kaito.sh" for r in mine)


def test_kmock_reactions_still_inject_faults() -> None:
    with KubeApiEmulator(builtins=False) as api, httpx.Client(base_url=api.url) as http:
        api.call(
            lambda: (
                api.emulator["get", "/apis/kaito.sh/v1alpha1/namespaces/ns/workspaces/w"][:1]
                << 429
                << {"kind": "Status", "code": 429}
            )
        )
        assert http.get(ws_url("ns", "w")).status_code == 429
        assert http.get(ws_url("ns", "w")).status_code == 404


# --- a real kopf operator against the emulator ----------------------------------------------------


def test_kopf_operator_finalizes_a_workspace(
    kube_api: KubeApiEmulator, http: httpx.Client, namespace: str
) -> None:
    import kopf
    from kopf.testing import KopfRunner

    registry = kopf.OperatorRegistry()
    deleted: list[str] = []

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=kube_api.url, insecure=True)

    @kopf.on.create("kaito.sh", "v1alpha1", "workspaces", registry=registry)
    def created(patch: kopf.Patch, **_: Any) -> None:
        patch.status["phase"] = "Ready"

    @kopf.on.delete("kaito.sh", "v1alpha1", "workspaces", registry=registry)
    def removed(name: str, **_: Any) -> None:
        deleted.append(name)

    settings = kopf.OperatorSettings()
    settings.peering.standalone = True
    settings.scanning.disabled = True
    settings.watching.server_timeout = 30
    settings.networking.request_timeout = 10

    kube_api.clear_requests()
    with KopfRunner(
        ["run", "--standalone", "--namespace", namespace],
        registry=registry,
        settings=settings,
        timeout=60,
    ) as runner:
        create(http, ws_url(namespace), workspace("op"))
        ready = wait_for(
            lambda: (
                (o := http.get(ws_url(namespace, "op")).json()).get("status", {}).get("phase")
                == "Ready"
                and o
            ),
            timeout=60,
            what="kopf to patch the status",
        )
        assert ready["metadata"]["finalizers"] == ["kopf.zalando.org/KopfFinalizerMarker"]
        assert http.delete(ws_url(namespace, "op")).status_code == 200
        wait_for(
            lambda: http.get(ws_url(namespace, "op")).status_code == 404,
            timeout=60,
            what="kopf to release the finalizer",
        )
    assert runner.exception is None, runner.output
    assert deleted == ["op"]
    kopf_requests = [r for r in kube_api.requests if r.user_agent.startswith("kopf")]
    assert {"list", "watch", "patch"} <= {r.verb for r in kopf_requests}
    assert any(
        r.resource == "workspaces" and r.subresource == "status" and r.verb == "patch"
        for r in kopf_requests
    )
    assert not [r for r in kopf_requests if r.status is not None and r.status >= 500]


def test_server_side_apply_creates_then_merges(http: httpx.Client, namespace: str) -> None:
    apply = {"Content-Type": "application/apply-patch+yaml"}
    url = f"/api/v1/namespaces/{namespace}/configmaps/applied"
    body = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\ndata:\n  a: '1'\n"
    first = http.patch(url, content=body, headers=apply, params={"fieldManager": "t"})
    assert first.status_code == 201, first.text
    second = http.patch(url, json={"data": {"b": "2"}}, headers=apply, params={"fieldManager": "t"})
    assert second.status_code == 200 and second.json()["data"] == {"a": "1", "b": "2"}


def test_deleting_a_namespace_terminates_its_contents(http: httpx.Client, namespace: str) -> None:
    cms = f"/api/v1/namespaces/{namespace}/configmaps"
    create(http, cms, {"metadata": {"name": "plain"}})
    create(http, cms, {"metadata": {"name": "held", "finalizers": ["x/y"]}})
    http.delete(f"/api/v1/namespaces/{namespace}").raise_for_status()
    ns = http.get(f"/api/v1/namespaces/{namespace}").json()
    assert ns["status"]["phase"] == "Terminating"
    wait_for(lambda: http.get(f"{cms}/plain").status_code == 404, what="contents deleted")
    assert http.post(cms, json={"metadata": {"name": "late"}}).status_code == 403
    assert http.get(f"/api/v1/namespaces/{namespace}").status_code == 200  # held by "held"
    http.patch(f"{cms}/held", json={"metadata": {"finalizers": None}}, headers=MERGE)
    wait_for(lambda: http.get(f"/api/v1/namespaces/{namespace}").status_code == 404, what="ns gone")


def test_cluster_wide_watch_of_a_namespaced_kind(http: httpx.Client, namespace: str) -> None:
    start = create(http, ws_url(namespace), workspace("cw"))
    create(http, ws_url(f"{namespace}-other"), workspace("cw"))
    events = watch_events(
        http,
        f"{WS}/workspaces",
        {"timeoutSeconds": "1", "resourceVersion": start["metadata"]["resourceVersion"]},
        count=1,
    )
    assert events[0]["object"]["metadata"]["namespace"] == f"{namespace}-other"


def test_stop_ends_open_watches_quickly() -> None:
    api = KubeApiEmulator(builtins=False).start()
    with httpx.Client(base_url=api.url) as http:
        with http.stream("GET", ws_url("ns"), params={"watch": "true", "timeoutSeconds": "60"}):
            started = time.monotonic()
            api.stop()
            assert time.monotonic() - started < 10.0  # not the watch's 60 s
    with pytest.raises(RuntimeError):
        _ = api.url


def test_closed_watches_unsubscribe(http: httpx.Client, kube_api: KubeApiEmulator) -> None:
    def listeners() -> int:
        return kube_api.call(lambda: len(kube_api.emulator.store._listeners))

    before = listeners()
    with http.stream("GET", ws_url("any"), params={"watch": "true", "timeoutSeconds": "60"}) as rsp:
        assert rsp.status_code == 200
        wait_for(lambda: listeners() == before + 1, what="watch subscribed")
    wait_for(lambda: listeners() == before, what="hung-up watch unsubscribed")
