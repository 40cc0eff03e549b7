"""The three node-provisioning modes of the real workspace controller (kopf over HTTP) against
the API emulator and the simulated cluster: `machine` (v1alpha5 Machines), `nodeclaim`
(Karpenter v1 NodeClaims) and `none` (bring your own nodes), and switching between them.

Each mode: the exact objects created (none in `none`), readiness, a failure surfaced on the
Workspace, deletion, and an operator restart that provisions nothing twice. Objects of the
other kind left from an earlier mode stay the Workspace's; a cluster lacking one of the CRDs
still works in the mode of the other. Teardown deletes what a test left outside its namespace
(Machines, NodeClaims, Nodes), so the tests sharing the session emulator are unaffected.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from kaito_operator.settings import Settings
from kaito_operator.workspace.names import machine_name
from kaito_operator.workspace.operator import OperatorThread
from kaito_operator.workspace.runtime import WorkspaceRuntime
from kaito_sandbox.sim.cluster import SimulatedCluster
from kaito_sandbox.sim.kube_api import MACHINE, NODECLAIM, WORKSPACE, KubeApiEmulator
from kaito_sandbox.sim.node_objects import gpu_node
from tests.component.test_workspace_controller import (
    CATALOG,
    WS_PATH,
    apply,
    condition,
    gpus_of,
    wait_condition,
    wait_events,
    wait_workspace,
    workspace,
)
from tests.factories import inference_workspace, with_changes
from tests.support.waiting import wait_for

PATHS = {"Machine": "/apis/karpenter.sh/v1alpha5/machines",
         "NodeClaim": "/apis/karpenter.sh/v1/nodeclaims"}
KIND_OF = {"machine": "Machine", "nodeclaim": "NodeClaim"}
CONDITION_OF = {"machine": "MachineReady", "nodeclaim": "NodeClaimReady"}
NODES = "/api/v1/nodes"
SKU = "Standard_NC6s_v3"
MERGE = {"Content-Type": "application/merge-patch+json"}


# --- helpers -------------------------------------------------------------------------------
def start_operator(url: str, namespace: str, mode: str, **settings: Any) -> OperatorThread:
    runtime = WorkspaceRuntime(
        CATALOG, Settings(requeue_seconds=0.5, node_provisioning=mode, **settings))
    return OperatorThread(runtime, url, [namespace]).start(timeout=60)


def owned(http: httpx.Client, ns: str, name: str, kind: str) -> list[dict[str, Any]]:
    """The Workspace's objects of `kind` (none where the cluster lacks the kind)."""
    labels = f"kaito.sh/workspace={name},kaito.sh/workspacenamespace={ns}"
    response = http.get(PATHS[kind], params={"labelSelector": labels})
    if response.status_code == 404:
        return []
    response.raise_for_status()
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def uids(objects: list[dict[str, Any]]) -> dict[str, str]:
    return {o["metadata"]["name"]: o["metadata"]["uid"] for o in objects}


def byo_workspace(ns: str, name: str, count: int = 1) -> dict[str, Any]:
    """A Workspace whose matchLabels only this test's nodes carry (the emulator is shared)."""
    return with_changes(inference_workspace(name=name), {
        "resource.count": count,
        "resource.labelSelector.matchLabels": {"apps": f"byo-{ns}"},
    })


def delete_workspace(http: httpx.Client, ns: str, name: str) -> None:
    assert http.delete(f"{WS_PATH.format(ns=ns)}/{name}").status_code in (200, 202)
    wait_for(lambda: http.get(f"{WS_PATH.format(ns=ns)}/{name}").status_code == 404,
             what=f"the Workspace {name} to be gone")


def gone(http: httpx.Client, path: str) -> bool:
    return http.get(path).status_code == 404


def delete_labelled(http: httpx.Client, path: str, selector: str) -> None:
    response = http.get(path, params={"labelSelector": selector})
    if response.status_code != 200:
        return
    for item in response.json()["items"]:
        url = f"{path}/{item['metadata']['name']}"
        if item["metadata"].get("finalizers"):
            http.patch(url, json={"metadata": {"finalizers": None}}, headers=MERGE)
        http.delete(url)


# --- fixtures ------------------------------------------------------------------------------
@pytest.fixture
def byo_nodes(http: httpx.Client, namespace: str) -> Iterator[list[str]]:
    """Names of the Nodes a test made itself; teardown deletes them and every Machine,
    NodeClaim and Node labelled with the test's namespace."""
    made: list[str] = []
    yield made
    selector = f"kaito.sh/workspacenamespace={namespace}"
    for path in (*PATHS.values(), NODES):
        delete_labelled(http, path, selector)
    for name in made:
        http.delete(f"{NODES}/{name}")


def make_gpu_node(http: httpx.Client, made: list[str], name: str,
                  labels: dict[str, str]) -> None:
    response = http.post(NODES, json=gpu_node(name, SKU, gpus_of(SKU), labels))
    assert response.status_code == 201, response.text
    made.append(name)


@pytest.fixture
def cluster(kube_api: KubeApiEmulator) -> Iterator[SimulatedCluster]:
    with SimulatedCluster(kube_api.url, gpus_of=gpus_of) as sim:
        yield sim


@pytest.fixture
def run_operator(kube_api: KubeApiEmulator, namespace: str) -> Iterator[Any]:
    """`run_operator(mode, **settings)` starts an operator; teardown stops every one started."""
    started: list[OperatorThread] = []

    def run(mode: str, **settings: Any) -> OperatorThread:
        started.append(start_operator(kube_api.url, namespace, mode, **settings))
        return started[-1]

    yield run
    for op in started:
        op.stop()


# --- creation and readiness ----------------------------------------------------------------
AZURE: dict[str, Any] = {}
AWS = {"nodeclaim_node_class_group": "karpenter.k8s.aws",
       "nodeclaim_node_class_kind": "EC2NodeClass", "nodeclaim_node_class_name": "gpu",
       "nodeclaim_nodepool": "kaito-gpu", "nodeclaim_sku_label": ""}


@pytest.mark.parametrize("settings", [AZURE, AWS], ids=["azure", "aws"])
def test_nodeclaim_mode_creates_the_nodeclaim_and_becomes_ready(
    http, namespace, byo_nodes, cluster, run_operator, settings
):
    run_operator("nodeclaim", **settings)
    applied = apply(http, namespace, byo_workspace(namespace, "phi"))
    ready = wait_condition(http, namespace, "phi", "WorkspaceReady", "True")
    assert ready["observedGeneration"] == applied["metadata"]["generation"]
    final = workspace(http, namespace, "phi")
    assert condition(final, "NodeClaimReady")["reason"] == "NodeClaimsReady"
    assert condition(final, "NodeClaimReady")["status"] == "True"
    assert condition(final, "ResourceReady")["status"] == "True"
    assert condition(final, "MachineReady") is None
    assert owned(http, namespace, "phi", "Machine") == []
    (claim,) = owned(http, namespace, "phi", "NodeClaim")

    defaults = Settings()
    pool = settings.get("nodeclaim_nodepool", defaults.nodeclaim_nodepool)
    sku_label = settings.get("nodeclaim_sku_label", defaults.nodeclaim_sku_label)
    requirements = [
        {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": [SKU]},
        {"key": "karpenter.sh/nodepool", "operator": "In", "values": [pool]},
        {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
    ]
    if sku_label:
        requirements.append({"key": sku_label, "operator": "In", "values": [SKU]})
    requirements.append({"key": "apps", "operator": "In", "values": [f"byo-{namespace}"]})
    disk = CATALOG.preset("phi-3-mini-4k-instruct").resources.disk_gib
    assert claim["apiVersion"] == "karpenter.sh/v1" and claim["kind"] == "NodeClaim"
    assert claim["metadata"]["name"] == machine_name(namespace, "phi", 0)
    assert claim["metadata"]["labels"] == {
        "apps": f"byo-{namespace}", "kaito.sh/workspace": "phi",
        "kaito.sh/workspacenamespace": namespace, "karpenter.sh/nodepool": pool}
    assert claim["metadata"]["annotations"] == {"karpenter.sh/do-not-disrupt": "true"}
    assert claim["spec"] == {
        "requirements": requirements,
        "resources": {"requests": {"storage": f"{disk}Gi"}},
        "taints": [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}],
        "expireAfter": "Never",  # a GPU node serving a model is not expired by Karpenter
        "nodeClassRef": {
            "group": settings.get("nodeclaim_node_class_group",
                                  defaults.nodeclaim_node_class_group),
            "kind": settings.get("nodeclaim_node_class_kind", defaults.nodeclaim_node_class_kind),
            "name": settings.get("nodeclaim_node_class_name", defaults.nodeclaim_node_class_name),
        },
    }
    assert final["status"]["workerNodes"] == [claim["status"]["nodeName"]]
    assert [c["type"] for c in claim["status"]["conditions"]] == [
        "Launched", "Registered", "Initialized", "Ready"]


def test_machine_mode_creates_machines_only(http, namespace, byo_nodes, cluster, run_operator):
    run_operator("machine")
    apply(http, namespace, byo_workspace(namespace, "phi", count=2))
    wait_condition(http, namespace, "phi", "WorkspaceReady", "True")
    final = workspace(http, namespace, "phi")
    assert condition(final, "MachineReady")["reason"] == "MachinesReady"
    assert condition(final, "NodeClaimReady") is None
    machines = owned(http, namespace, "phi", "Machine")
    assert sorted(uids(machines)) == sorted(machine_name(namespace, "phi", i) for i in range(2))
    assert owned(http, namespace, "phi", "NodeClaim") == []
    assert sorted(final["status"]["workerNodes"]) == sorted(
        m["status"]["nodeName"] for m in machines)


def test_none_mode_waits_for_labelled_nodes_and_creates_nothing(
    http, namespace, byo_nodes, cluster, run_operator
):
    labels = {"apps": f"byo-{namespace}"}
    first, second = f"byo-{namespace}-0", f"byo-{namespace}-1"
    make_gpu_node(http, byo_nodes, first, labels)
    make_gpu_node(http, byo_nodes, second, {})  # a GPU node without the Workspace's label
    run_operator("none")
    apply(http, namespace, byo_workspace(namespace, "own", count=2))
    seen = wait_workspace(
        http, namespace, "own",
        lambda ws: (condition(ws, "ResourceReady") or {}).get("reason") == "InsufficientNodes",
        "ResourceReady=False (InsufficientNodes)")
    message = condition(seen, "ResourceReady")["message"]
    assert condition(seen, "ResourceReady")["status"] == "False"
    assert "found 1" in message and "need 2" in message, message
    assert f"apps=byo-{namespace}" in message, message
    assert f"node.kubernetes.io/instance-type={SKU}" in message, message
    assert condition(seen, "WorkspaceReady")["status"] == "False"
    wait_events(http, namespace, "own", {"InsufficientNodes"}, "Warning")

    http.patch(f"{NODES}/{second}", json={"metadata": {"labels": labels}},
               headers=MERGE).raise_for_status()
    wait_condition(http, namespace, "own", "WorkspaceReady", "True")
    final = workspace(http, namespace, "own")
    assert sorted(final["status"]["workerNodes"]) == [first, second]
    assert condition(final, "ResourceReady")["status"] == "True"
    assert condition(final, "MachineReady") is None
    assert condition(final, "NodeClaimReady") is None
    for kind in PATHS:
        assert owned(http, namespace, "own", kind) == []

    delete_workspace(http, namespace, "own")
    for name in (first, second):  # the user's nodes are not ours to delete
        assert http.get(f"{NODES}/{name}").status_code == 200


# --- failures ------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["machine", "nodeclaim"])
def test_launch_failure_is_surfaced(http, namespace, byo_nodes, cluster, run_operator, mode):
    kind = KIND_OF[mode]
    reason = f"{kind}Failed"
    cloud = ("creating instance, insufficient capacity: InsufficientCapacity: no capacity "
             f"for {SKU} in westus2")
    name = machine_name(namespace, "full", 0)
    cluster.machine_failures[name] = cloud
    run_operator(mode)
    apply(http, namespace, byo_workspace(namespace, "full"))
    seen = wait_workspace(
        http, namespace, "full",
        lambda ws: (condition(ws, "WorkspaceReady") or {}).get("reason") == reason,
        f"WorkspaceReady=False ({reason})")
    # `NodeClaim <name>: <message>`; Machines keep today's `machine <name>: <message>`.
    expected = f"{kind} {name}: {cloud}".lower()
    for type_ in (CONDITION_OF[mode], "ResourceReady", "WorkspaceReady"):
        cond = condition(seen, type_)
        assert cond is not None, type_
        assert cond["status"] == "False" and cond["reason"] == reason, (type_, cond)
        assert expected in cond["message"].lower(), (type_, cond)
    if mode == "nodeclaim":
        assert condition(seen, "NodeClaimReady")["message"] == f"NodeClaim {name}: {cloud}"
    warnings = wait_events(http, namespace, "full", {reason}, "Warning")
    assert any(expected in e["message"].lower() for e in warnings if e["reason"] == reason)
    (failed,) = owned(http, namespace, "full", kind)
    assert failed["metadata"]["name"] == name


# --- deletion ------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["machine", "nodeclaim"])
def test_deletion_removes_the_objects_and_their_nodes(
    http, namespace, byo_nodes, cluster, run_operator, mode
):
    run_operator(mode)
    apply(http, namespace, byo_workspace(namespace, "gone", count=2))
    wait_condition(http, namespace, "gone", "WorkspaceReady", "True")
    objects = owned(http, namespace, "gone", KIND_OF[mode])
    assert len(objects) == 2
    delete_workspace(http, namespace, "gone")
    for kind in PATHS:
        assert owned(http, namespace, "gone", kind) == []
    for obj in objects:
        node = f"{NODES}/{obj['status']['nodeName']}"
        wait_for(lambda node=node: gone(http, node), what=f"{node} to be removed")


# --- restart -------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["machine", "nodeclaim", "none"])
def test_restart_provisions_nothing_twice(
    http, namespace, byo_nodes, cluster, run_operator, mode
):
    """The first operator stops while the Workspace waits for nodes; the second one sees them
    arrive (its WorkspaceReady transition proves it observed the Workspace) and has created
    nothing besides what the first one had."""
    labels = {"apps": f"byo-{namespace}"}
    if mode == "none":
        make_gpu_node(http, byo_nodes, f"byo-{namespace}-0", labels)
    cluster.provision_seconds = 3600.0  # held until the second operator runs
    first = run_operator(mode)
    apply(http, namespace, byo_workspace(namespace, "twice", count=2))
    if mode == "none":
        wait_condition(http, namespace, "twice", "ResourceReady", "False", "InsufficientNodes")
    else:
        wait_for(lambda: len(owned(http, namespace, "twice", KIND_OF[mode])) == 2,
                 what=f"2 {KIND_OF[mode]}s")
    wait_condition(http, namespace, "twice", "WorkspaceReady", "False")
    before = {kind: uids(owned(http, namespace, "twice", kind)) for kind in PATHS}
    first.stop()

    run_operator(mode)
    if mode == "none":
        make_gpu_node(http, byo_nodes, f"byo-{namespace}-1", labels)
    cluster.provision_seconds = 0.0
    wait_condition(http, namespace, "twice", "WorkspaceReady", "True")
    after = {kind: uids(owned(http, namespace, "twice", kind)) for kind in PATHS}
    assert after == before
    expected = 0 if mode == "none" else 2
    assert sum(len(found) for found in after.values()) == expected
    if mode != "none":
        assert sorted(after[KIND_OF[mode]]) == sorted(
            machine_name(namespace, "twice", i) for i in range(2))


# --- switching modes -----------------------------------------------------------------------
@pytest.mark.parametrize("old,new", [("machine", "nodeclaim"), ("nodeclaim", "machine")],
                         ids=["machine-to-nodeclaim", "nodeclaim-to-machine"])
def test_switching_modes_keeps_the_old_kind_until_deleted(
    http, namespace, byo_nodes, cluster, run_operator, old, new
):
    first = run_operator(old)
    apply(http, namespace, byo_workspace(namespace, "kept"))
    wait_condition(http, namespace, "kept", "WorkspaceReady", "True")
    (kept,) = owned(http, namespace, "kept", KIND_OF[old])
    first.stop()

    run_operator(new)
    # The new mode's condition appears once the new operator has observed the Workspace;
    # the old kind's object counts towards `count`, so nothing is missing.
    cond = wait_condition(http, namespace, "kept", CONDITION_OF[new], "True")
    assert cond["reason"] == f"{KIND_OF[new]}sReady"
    final = workspace(http, namespace, "kept")
    assert condition(final, "WorkspaceReady")["status"] == "True"
    assert final["status"]["workerNodes"] == [kept["status"]["nodeName"]]
    assert owned(http, namespace, "kept", KIND_OF[new]) == []
    assert uids(owned(http, namespace, "kept", KIND_OF[old])) == uids([kept])

    delete_workspace(http, namespace, "kept")
    assert owned(http, namespace, "kept", KIND_OF[old]) == []
    node = f"{NODES}/{kept['status']['nodeName']}"
    wait_for(lambda: gone(http, node), what=f"{node} to be removed")


# --- a cluster with one of the two CRDs ----------------------------------------------------
@pytest.fixture(params=[("machine", MACHINE), ("nodeclaim", NODECLAIM)],
                ids=["machine-without-nodeclaim-crd", "nodeclaim-without-machine-crd"])
def lone_kind(request) -> Iterator[tuple[str, KubeApiEmulator]]:
    mode, rtype = request.param
    with KubeApiEmulator(kaito_kinds=False, extra_types=(WORKSPACE, rtype)) as api:
        yield mode, api


def test_mode_works_without_the_other_kinds_crd(lone_kind, namespace):
    mode, api = lone_kind
    other = "NodeClaim" if mode == "machine" else "Machine"
    with httpx.Client(base_url=api.url, timeout=30.0) as http, \
            SimulatedCluster(api.url, gpus_of=gpus_of):
        assert http.get(PATHS[other]).status_code == 404
        op = start_operator(api.url, namespace, mode)
        try:
            apply(http, namespace, byo_workspace(namespace, "lone"))
            wait_condition(http, namespace, "lone", "WorkspaceReady", "True")
            final = workspace(http, namespace, "lone")
            assert condition(final, CONDITION_OF[mode])["status"] == "True"
            (obj,) = owned(http, namespace, "lone", KIND_OF[mode])
            assert final["status"]["workerNodes"] == [obj["status"]["nodeName"]]
            delete_workspace(http, namespace, "lone")
            assert owned(http, namespace, "lone", KIND_OF[mode]) == []
        finally:
            op.stop()
