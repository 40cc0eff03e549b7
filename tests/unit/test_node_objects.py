"""The node objects of each node-provisioning mode: the NodeClaim builder (checked against
Karpenter's published CRD), the views of owned objects, and what `ensure_nodes` creates."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml

from kaito_operator.api.nodeclaim import NodeClaim
from kaito_operator.api.workspace import Workspace
from kaito_operator.catalog import load_catalog
from kaito_operator.kube import MACHINES, NODECLAIMS, ApiError, Kind
from kaito_operator.settings import Settings
from kaito_operator.workspace.names import machine_name
from kaito_operator.workspace.provisioning import (
    build_machine,
    build_nodeclaim,
    free_indices,
    owned_objects,
    provisioner_for,
)
from kaito_operator.workspace.provisioning.machine import machine_view
from kaito_operator.workspace.provisioning.nodeclaim import nodeclaim_view, requirement_allowed
from kaito_operator.workspace.reconcile import Deps, ensure_nodes
from kaito_operator.workspace.runtime import WorkspaceRuntime
from tests.factories import inference_workspace, with_changes
from tests.support.crd_check import admit, apply_defaults

KARPENTER = Path(__file__).resolve().parents[2].parent / "shared" / "karpenter"
NS, NAME = "default", "workspace-phi-3"


def ws_of(changes: dict[str, Any] | None = None) -> Workspace:
    return Workspace.model_validate(with_changes(inference_workspace(), changes or {}))


def upstream_schema(filename: str) -> dict[str, Any]:
    path = KARPENTER / filename
    if not path.exists():
        pytest.skip(f"Karpenter's published CRDs are not here ({KARPENTER} is absent)")
    crd = yaml.safe_load(path.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v.get("storage")]
    return dict(version["schema"]["openAPIV3Schema"])


# -- the NodeClaim builder ---------------------------------------------------------------------

def test_nodeclaim_carries_every_field_of_the_contract():
    settings = Settings(nodeclaim_nodepool="gpu", nodeclaim_node_class_group="karpenter.k8s.aws",
                        nodeclaim_node_class_kind="EC2NodeClass",
                        nodeclaim_node_class_name="gpu-nodes")
    ws = ws_of({"resource.labelSelector.matchLabels": {"zeta": "z", "apps": "phi-3"}})
    claim = build_nodeclaim(ws, 2, 70, settings)
    assert claim["apiVersion"] == "karpenter.sh/v1" and claim["kind"] == "NodeClaim"
    assert claim["metadata"] == {
        "name": machine_name(NS, NAME, 2),
        "labels": {"zeta": "z", "apps": "phi-3", "kaito.sh/workspace": NAME,
                   "kaito.sh/workspacenamespace": NS, "karpenter.sh/nodepool": "gpu"},
        "annotations": {"karpenter.sh/do-not-disrupt": "true"},
    }
    assert claim["spec"] == {
        "requirements": [
            {"key": "node.kubernetes.io/instance-type", "operator": "In",
             "values": ["Standard_NC6s_v3"]},
            {"key": "karpenter.sh/nodepool", "operator": "In", "values": ["gpu"]},
            {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
            {"key": "karpenter.azure.com/sku-name", "operator": "In",
             "values": ["Standard_NC6s_v3"]},
            {"key": "apps", "operator": "In", "values": ["phi-3"]},
            {"key": "zeta", "operator": "In", "values": ["z"]},
        ],
        "resources": {"requests": {"storage": "70Gi"}},
        "taints": [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}],
        "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass",
                         "name": "gpu-nodes"},
        # Karpenter's default (720h) would expire the GPU node by force after 30 days.
        "expireAfter": "Never",
    }
    assert "ownerReferences" not in claim["metadata"]  # cluster-scoped: the finalizer cleans up
    NodeClaim.model_validate(claim)  # our own model of the kind takes it


def test_nodeclaim_defaults_name_azures_nodeclass_and_pool():
    claim = build_nodeclaim(ws_of(), 0, 100, Settings())
    assert claim["spec"]["nodeClassRef"] == {"group": "karpenter.azure.com",
                                             "kind": "AKSNodeClass", "name": "default"}
    assert claim["metadata"]["labels"]["karpenter.sh/nodepool"] == "kaito"
    assert claim["metadata"]["name"] == build_machine(ws_of(), 0, 100)["metadata"]["name"]


def test_no_sku_requirement_when_the_setting_is_empty():
    claim = build_nodeclaim(ws_of(), 0, 100, Settings(nodeclaim_sku_label=""))
    keys = [r["key"] for r in claim["spec"]["requirements"]]
    assert keys == ["node.kubernetes.io/instance-type", "karpenter.sh/nodepool",
                    "kubernetes.io/os", "apps"]


RESTRICTED = {"kubernetes.io/hostname": "gpu-1", "karpenter.sh/registered": "true",
              "sub.karpenter.sh/x": "y", "karpenter.sh": "bare"}
ALLOWED = {"karpenter.sh/capacity-type": "on-demand", "karpenter.sh/nodepool": "kaito",
           "notkarpenter.shop/x": "1", "example.com/team": "a"}


def test_restricted_keys_stay_labels_only():
    ws = ws_of({"resource.labelSelector.matchLabels": {**RESTRICTED, **ALLOWED}})
    claim = build_nodeclaim(ws, 0, 100, Settings())
    user = {r["key"] for r in claim["spec"]["requirements"][4:]}
    assert user == set(ALLOWED)
    assert set(RESTRICTED) <= set(claim["metadata"]["labels"])
    assert all(not requirement_allowed(k) for k in RESTRICTED)
    assert all(requirement_allowed(k) for k in ALLOWED)


@pytest.mark.parametrize("match_labels", [
    {"apps": "phi-3"},
    {**RESTRICTED, **ALLOWED},
    {"kubernetes.azure.com/agentpool": "gpu", "example.com/x": "a.b-c_d"},
], ids=["plain", "restricted-and-allowed-keys", "dotted"])
@pytest.mark.parametrize("sku_label", ["karpenter.azure.com/sku-name", ""])
def test_built_nodeclaims_are_admitted_by_karpenters_crd(match_labels, sku_label):
    schema = upstream_schema("karpenter.sh_nodeclaims.yaml")
    ws = ws_of({"resource.labelSelector.matchLabels": match_labels})
    claim = build_nodeclaim(ws, 0, 100, Settings(nodeclaim_sku_label=sku_label))
    assert admit(schema, claim) == []
    assert apply_defaults(schema, claim)["spec"]["expireAfter"] == "Never"  # not upstream's 720h


def test_karpenters_crd_refuses_what_the_builder_drops():
    """The check is real: the requirement the builder leaves out is one upstream refuses."""
    schema = upstream_schema("karpenter.sh_nodeclaims.yaml")
    claim = build_nodeclaim(ws_of(), 0, 100, Settings())
    claim["spec"]["requirements"].append(
        {"key": "kubernetes.io/hostname", "operator": "In", "values": ["gpu-1"]})
    assert any("restricted" in e for e in admit(schema, claim))


def test_built_machines_are_admitted_by_karpenters_machine_crd():
    schema = upstream_schema("karpenter.sh_machines.yaml")
    assert admit(schema, build_machine(ws_of(), 0, 100)) == []


# -- modes and views ---------------------------------------------------------------------------

def test_each_mode_names_its_kind_and_condition():
    machine, claim, none = (provisioner_for(m) for m in ("machine", "nodeclaim", "none"))
    assert (machine.kind, machine.created_reason, machine.condition.type) == (
        MACHINES, "MachineCreated", "MachineReady")
    assert (claim.kind, claim.created_reason, claim.condition.type) == (
        NODECLAIMS, "NodeClaimCreated", "NodeClaimReady")
    assert none.kind is None and none.build is None and none.condition is None
    with pytest.raises(ValueError, match="unknown node-provisioning mode"):
        provisioner_for("karpenter")


def _with_conditions(obj: dict[str, Any], **conds: tuple[str, str]) -> dict[str, Any]:
    obj = dict(obj)
    obj["status"] = {"nodeName": "aks-n-1", "conditions": [
        {"type": t, "status": s, "message": m} for t, (s, m) in conds.items()]}
    return obj


def test_views_read_readiness_and_launch_failures_of_each_kind():
    claim = build_nodeclaim(ws_of(), 0, 100, Settings())
    ready = nodeclaim_view(_with_conditions(claim, Launched=("True", ""), Ready=("True", "")))
    assert (ready.kind, ready.node_name, ready.ready, ready.failure) == (
        "NodeClaim", "aks-n-1", True, None)
    failed = nodeclaim_view(_with_conditions(claim, Launched=("False", "quota exceeded")))
    assert failed.failure == "quota exceeded" and failed.label.startswith("NodeClaim ws")
    machine = build_machine(ws_of(), 0, 100)
    # A NodeClaim's condition names mean nothing on a Machine, and the other way round.
    assert machine_view(_with_conditions(machine, Launched=("False", "x"))).failure is None
    assert machine_view(_with_conditions(machine, MachineLaunched=("False", "x"))).failure == "x"
    assert nodeclaim_view(_with_conditions(claim, MachineLaunched=("False", "x"))).failure is None


def test_an_index_is_taken_by_an_object_of_either_kind():
    ws = ws_of()
    existing = {machine_name(NS, NAME, 0), machine_name(NS, NAME, 2)}  # a Machine, a NodeClaim
    assert free_indices(ws, existing, 4) == [1, 3]


# -- ensure_nodes per mode, with a cluster held in memory ---------------------------------------

class Cluster:
    """The few client calls `ensure_nodes` makes; kinds not in `served` answer 404."""

    def __init__(self, served: tuple[Kind, ...] = (MACHINES, NODECLAIMS)) -> None:
        self.served = served
        self.objects: dict[Kind, dict[str, dict[str, Any]]] = {}
        self.events: list[tuple[str, str, str]] = []
        self.deletes: list[tuple[str, str]] = []

    def _check(self, kind: Kind) -> None:
        if kind.plural != "nodes" and kind not in self.served:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")

    async def list(self, kind: Kind, namespace: str | None = None,
                   labels: dict[str, str] | None = None) -> list[dict[str, Any]]:
        self._check(kind)
        return [o for o in self.objects.get(kind, {}).values()
                if all((o["metadata"].get("labels") or {}).get(k) == v
                       for k, v in (labels or {}).items())]

    async def create_if_missing(self, kind: Kind, body: dict[str, Any]) -> bool:
        self._check(kind)
        store = self.objects.setdefault(kind, {})
        if body["metadata"]["name"] in store:
            return False
        store[body["metadata"]["name"]] = body
        return True

    async def event(self, obj: Any, type_: str, reason: str, message: str, now: str) -> None:
        self.events.append((type_, reason, message))

    async def patch(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return {}

    async def delete(self, kind: Kind, name: str, namespace: str | None = None) -> bool:
        """Marks the object deleted (a provisioner's finalizer keeps it a while)."""
        self._check(kind)
        obj = self.objects.get(kind, {}).get(name)
        if obj is not None:
            obj["metadata"]["deletionTimestamp"] = "now"
            self.deletes.append((kind.kind, name))
        return obj is not None

    @property
    def api(self) -> Cluster:
        return self


def _pass(cluster: Cluster, mode: str, ws: Workspace | None = None):
    settings = Settings(node_provisioning=mode)
    deps = Deps(cluster, load_catalog(), settings, lambda: "now")  # type: ignore[arg-type]
    ws = ws or ws_of({"resource.count": 2})
    return asyncio.run(ensure_nodes(ws, deps, {"metadata": {"name": NAME, "namespace": NS}}))


def test_nodeclaim_mode_creates_nodeclaims_with_an_event_each():
    cluster = Cluster()
    choice, owned, wanted = _pass(cluster, "nodeclaim")
    assert wanted == 2 and choice.missing == 2
    assert sorted(cluster.objects[NODECLAIMS]) == sorted(machine_name(NS, NAME, i) for i in (0, 1))
    assert MACHINES not in cluster.objects
    assert [o.kind for o in owned] == ["NodeClaim", "NodeClaim"]
    assert [(t, r) for t, r, _ in cluster.events] == [("Normal", "NodeClaimCreated")] * 2
    assert all("NodeClaim ws" in m and "Standard_NC6s_v3" in m for _, _, m in cluster.events)


def test_a_switch_of_mode_provisions_nothing_twice():
    cluster = Cluster()
    _pass(cluster, "machine", ws_of())  # count 1: one Machine
    _, owned, _ = _pass(cluster, "nodeclaim")  # count 2 now, in nodeclaim mode
    assert list(cluster.objects[MACHINES]) == [machine_name(NS, NAME, 0)]
    assert list(cluster.objects[NODECLAIMS]) == [machine_name(NS, NAME, 1)]
    assert sorted(o.kind for o in owned) == ["Machine", "NodeClaim"]
    _pass(cluster, "machine")
    _pass(cluster, "nodeclaim")
    assert len(cluster.objects[MACHINES]) + len(cluster.objects[NODECLAIMS]) == 2


def test_none_mode_creates_nothing():
    cluster = Cluster()
    choice, owned, _ = _pass(cluster, "none")
    assert cluster.objects == {} and owned == [] and cluster.events == []
    assert choice.missing == 2


@pytest.mark.parametrize(("mode", "served"), [("machine", (MACHINES,)),
                                              ("nodeclaim", (NODECLAIMS,))])
def test_a_kind_the_cluster_lacks_counts_as_none(mode, served):
    cluster = Cluster(served=served)
    _, owned, _ = _pass(cluster, mode)
    assert len(owned) == 2 and list(cluster.objects) == list(served)


def test_owned_objects_reads_both_kinds():
    cluster = Cluster()
    _pass(cluster, "machine", ws_of())
    _pass(cluster, "nodeclaim")
    owned = asyncio.run(owned_objects(cluster, NS, NAME))  # type: ignore[arg-type]
    assert [o.kind for o in owned] == ["Machine", "NodeClaim"]


@pytest.mark.parametrize("served", [(MACHINES, NODECLAIMS), (MACHINES,), (NODECLAIMS,)],
                         ids=["both-kinds", "no-nodeclaim-crd", "no-machine-crd"])
def test_finalize_deletes_the_objects_of_every_kind(served):
    cluster = Cluster(served=served)
    for count, kind in enumerate(served, start=1):  # one object of each kind served
        _pass(cluster, "machine" if kind == MACHINES else "nodeclaim",
              ws_of({"resource.count": count}))
    other = {"metadata": {"name": "wsother", "labels": {"kaito.sh/workspace": "other",
                                                        "kaito.sh/workspacenamespace": NS}}}
    cluster.objects[served[0]]["wsother"] = other  # another Workspace's: left alone
    made = len(served)
    runtime = WorkspaceRuntime(load_catalog(), Settings())
    runtime._client = cluster  # type: ignore[assignment]
    body = {"metadata": {"name": NAME, "namespace": NS}}
    assert asyncio.run(runtime.finalize(body)) == made
    assert sorted(k for k, _ in cluster.deletes) == sorted(k.kind for k in served)
    assert "deletionTimestamp" not in other["metadata"]
    assert asyncio.run(runtime.finalize(body)) == made  # marked: not deleted twice
    assert len(cluster.deletes) == made
    for store in cluster.objects.values():
        for name in [n for n in store if n != "wsother"]:
            del store[name]
    assert asyncio.run(runtime.finalize(body)) == 0
