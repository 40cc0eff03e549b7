"""Our NodeClaim (and Machine) CRD against the one Karpenter publishes.

Where Karpenter runs, its CRD is installed, not ours; where the gpu-provisioner chart installs
ours, Karpenter-shaped objects must still be stored unchanged. So: the same identity (group,
version, kind, plural, scope, status subresource), every property path declared by both with
the same type (no field of theirs pruned by ours), the same required fields, and realistic
objects each accepts are accepted by the other, including the Workspace's own NodeClaims.

Karpenter's CRDs are read from `../shared/karpenter/` (not part of the repository); the tests
skip with the reason where that folder is absent.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kaito_operator.api.crd import machine_crd, nodeclaim_crd
from kaito_operator.api.workspace import Workspace
from kaito_operator.settings import Settings
from kaito_operator.workspace.provisioning.nodeclaim import build_nodeclaim
from tests.factories import inference_workspace, with_changes
from tests.support.crd_check import admit

UPSTREAM = Path(__file__).resolve().parents[2].parent / "shared" / "karpenter"


def upstream_crd(filename: str) -> dict[str, Any]:
    path = UPSTREAM / filename
    if not path.is_file():
        pytest.skip(f"Karpenter's published CRD {path} is absent (it lives outside the "
                    "repository, in ../shared/karpenter/): nothing to compare against")
    return dict(yaml.safe_load(path.read_text()))


def version_of(crd: dict[str, Any]) -> dict[str, Any]:
    (version,) = [v for v in crd["spec"]["versions"] if v.get("storage")]
    return dict(version)


def schema_of(crd: dict[str, Any]) -> dict[str, Any]:
    return dict(version_of(crd)["schema"]["openAPIV3Schema"])


def nodes(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node by its path (`spec.requirements[].key`, `status.capacity.*`)."""
    yield path or "<root>", schema
    for name, sub in (schema.get("properties") or {}).items():
        yield from nodes(sub, f"{path}.{name}".lstrip("."))
    if isinstance(schema.get("additionalProperties"), dict):
        yield from nodes(schema["additionalProperties"], f"{path}.*")
    if "items" in schema:
        yield from nodes(schema["items"], f"{path}[]")


def type_of(node: dict[str, Any]) -> str:
    return "int-or-string" if node.get("x-kubernetes-int-or-string") else str(node.get("type"))


# --- the CRDs side by side ------------------------------------------------------------------------

PAIRS = {
    "nodeclaim": (nodeclaim_crd, "karpenter.sh_nodeclaims.yaml"),
    "machine": (machine_crd, "karpenter.sh_machines.yaml"),
}


@pytest.fixture(params=sorted(PAIRS))
def pair(request: pytest.FixtureRequest) -> tuple[dict[str, Any], dict[str, Any]]:
    build, filename = PAIRS[request.param]
    return build(), upstream_crd(filename)


def test_same_identity_and_status_subresource(pair):
    ours, theirs = pair
    assert ours["metadata"]["name"] == theirs["metadata"]["name"]
    for key in ("group", "scope"):
        assert ours["spec"][key] == theirs["spec"][key], key
    for key in ("kind", "listKind", "plural", "singular"):
        assert ours["spec"]["names"][key] == theirs["spec"]["names"][key], key
    assert set(ours["spec"]["names"].get("categories", [])) <= set(
        theirs["spec"]["names"].get("categories", []))
    mine, upstream = version_of(ours), version_of(theirs)
    assert (mine["name"], mine["served"], mine["storage"]) == (upstream["name"], True, True)
    assert mine["subresources"] == upstream["subresources"] == {"status": {}}


def test_every_declared_path_exists_upstream_with_the_same_type(pair):
    ours, theirs = pair
    upstream = dict(nodes(schema_of(theirs)))
    for path, node in nodes(schema_of(ours)):
        assert path in upstream, f"{path} is ours only: Karpenter's CRD would prune it"
        assert type_of(node) == type_of(upstream[path]), path
        if "enum" in node:
            assert set(node["enum"]) <= set(upstream[path].get("enum", node["enum"])), path


def test_we_declare_every_upstream_path(pair):
    """Nothing Karpenter (or Azure's gpu-provisioner) writes is pruned by our CRD: each of
    its paths is declared by ours, or lies under a node of ours that keeps unknown fields
    (the Machine's `spec.kubelet`)."""
    ours, theirs = pair
    mine = dict(nodes(schema_of(ours)))
    kept = [path for path, node in mine.items()
            if node.get("x-kubernetes-preserve-unknown-fields")]
    missing = [path for path, _ in nodes(schema_of(theirs)) if path not in mine
               and not any(path.startswith(prefix + ".") for prefix in kept)]
    assert not missing, f"Karpenter's fields our CRD would prune: {missing}"


def test_required_fields_agree(pair):
    """Our required fields are upstream's, and every field upstream requires is one we
    declare: an object valid for one CRD is valid for the other in the fields we use."""
    ours, theirs = pair
    upstream = dict(nodes(schema_of(theirs)))
    for path, node in nodes(schema_of(ours)):
        required, theirs_required = set(node.get("required", [])), set(
            upstream[path].get("required", []))
        assert required <= theirs_required, f"{path}: we require {required - theirs_required}"
        undeclared = theirs_required - set(node.get("properties", {}))
        assert not undeclared, f"{path}: upstream requires {undeclared}, which we do not declare"
        assert required == theirs_required, path


# --- objects accepted by both -----------------------------------------------------------------

NOW = "2026-08-20T10:00:00Z"


def condition(type_: str, status: str = "True", reason: str | None = None,
              message: str = "") -> dict[str, Any]:
    return {"type": type_, "status": status, "reason": reason or type_,
            "message": message, "lastTransitionTime": NOW, "observedGeneration": 1}


def karpenter_aws_nodeclaim() -> dict[str, Any]:
    """What Karpenter's AWS provider makes of a NodePool with minValues, expireAfter and a
    startup taint, after the node joined."""
    return {
        "apiVersion": "karpenter.sh/v1",
        "kind": "NodeClaim",
        "metadata": {
            "name": "gpu-x7k2p",
            "labels": {"karpenter.sh/nodepool": "gpu", "karpenter.sh/capacity-type": "on-demand",
                       "node.kubernetes.io/instance-type": "g5.2xlarge",
                       "topology.kubernetes.io/zone": "us-west-2a"},
            "annotations": {"karpenter.sh/nodepool-hash": "1234567890"},
            "finalizers": ["karpenter.sh/termination"],
            "ownerReferences": [{"apiVersion": "karpenter.sh/v1", "kind": "NodePool",
                                 "name": "gpu", "uid": "u-1", "blockOwnerDeletion": True}],
        },
        "spec": {
            "expireAfter": "720h",
            "terminationGracePeriod": "48h",
            "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass",
                             "name": "gpu"},
            "requirements": [
                {"key": "node.kubernetes.io/instance-type", "operator": "In",
                 "values": ["g5.2xlarge", "g5.4xlarge", "g6.2xlarge"], "minValues": 2},
                {"key": "karpenter.sh/nodepool", "operator": "In", "values": ["gpu"]},
                {"key": "karpenter.sh/capacity-type", "operator": "In",
                 "values": ["on-demand"]},
                {"key": "karpenter.k8s.aws/instance-gpu-count", "operator": "Gt",
                 "values": ["0"]},
                {"key": "karpenter.k8s.aws/instance-generation", "operator": "Gte",
                 "values": ["5"]},
                {"key": "topology.kubernetes.io/zone", "operator": "NotIn",
                 "values": ["us-west-2d"]},
                {"key": "nvidia.com/gpu.present", "operator": "Exists"},
            ],
            "resources": {"requests": {"cpu": "7910m", "memory": "28Gi", "pods": 58,
                                       "nvidia.com/gpu": "1"}},
            "taints": [{"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}],
            "startupTaints": [{"key": "node.cilium.io/agent-not-ready", "value": "true",
                               "effect": "NoExecute"}],
        },
        "status": {
            "nodeName": "ip-10-0-12-34.us-west-2.compute.internal",
            "providerID": "aws:///us-west-2a/i-0123456789abcdef0",
            "imageID": "ami-0123456789abcdef0",
            "capacity": {"cpu": "8", "memory": "31Gi", "nvidia.com/gpu": "1", "pods": "58",
                         "ephemeral-storage": "80G"},
            "allocatable": {"cpu": "7910m", "memory": "29Gi", "nvidia.com/gpu": 1},
            "lastPodEventTime": NOW,
            "conditions": [condition("Launched"), condition("Registered"),
                           condition("Initialized"), condition("Ready"),
                           condition("Drifted", "False", "NotDrifted"),
                           condition("Consolidatable", "Unknown", "AwaitingReconciliation")],
        },
    }


def aks_nap_failed_nodeclaim() -> dict[str, Any]:
    """A NodeClaim of AKS node auto-provisioning whose launch failed (quota)."""
    return {
        "apiVersion": "karpenter.sh/v1",
        "kind": "NodeClaim",
        "metadata": {"name": "kaito-abcde", "labels": {"karpenter.sh/nodepool": "kaito"}},
        "spec": {
            "nodeClassRef": {"group": "karpenter.azure.com", "kind": "AKSNodeClass",
                             "name": "default"},
            "requirements": [
                {"key": "karpenter.azure.com/sku-name", "operator": "In",
                 "values": ["Standard_NC24ads_A100_v4"]},
                {"key": "karpenter.azure.com/sku-gpu-count", "operator": "Lt", "values": ["5"]},
                {"key": "kubernetes.io/arch", "operator": "DoesNotExist"},
            ],
            "expireAfter": "Never",
        },
        "status": {"conditions": [condition(
            "Launched", "False", "LaunchFailed",
            "creating instance, insufficient capacity: SubscriptionQuotaExceeded for "
            "Standard NCADS_A100_v4 Family vCPUs")]},
    }


def workspace_nodeclaim(settings: Settings, **changes: Any) -> dict[str, Any]:
    obj = with_changes(inference_workspace(), changes)
    obj["metadata"]["uid"] = "uid-1"
    return build_nodeclaim(Workspace.model_validate(obj), 0, 100, settings)


AWS = Settings(nodeclaim_nodepool="gpu", nodeclaim_node_class_group="karpenter.k8s.aws",
               nodeclaim_node_class_kind="EC2NodeClass", nodeclaim_node_class_name="gpu",
               nodeclaim_sku_label="")

OBJECTS = {
    "karpenter-aws": karpenter_aws_nodeclaim,
    "aks-nap-launch-failed": aks_nap_failed_nodeclaim,
    "workspace-default": lambda: workspace_nodeclaim(Settings()),
    "workspace-aws": lambda: workspace_nodeclaim(AWS),
    # Keys upstream forbids in requirements stay labels only.
    "workspace-restricted-labels": lambda: workspace_nodeclaim(Settings(), **{
        "resource.labelSelector.matchLabels": {
            "apps": "phi-3", "kubernetes.io/hostname": "n1", "karpenter.sh/foo": "x",
            "karpenter.sh/capacity-type": "spot"}}),
}


@pytest.mark.parametrize("name", sorted(OBJECTS))
def test_objects_are_accepted_by_both_crds(name):
    theirs = schema_of(upstream_crd("karpenter.sh_nodeclaims.yaml"))
    ours = schema_of(nodeclaim_crd())
    obj = OBJECTS[name]()
    assert admit(theirs, obj) == [], "Karpenter's CRD refuses it"
    assert admit(ours, obj) == [], "ours refuses it"


def test_restricted_label_keys_are_labels_but_not_requirements():
    obj = OBJECTS["workspace-restricted-labels"]()
    keys = [r["key"] for r in obj["spec"]["requirements"]]
    assert "kubernetes.io/hostname" not in keys and "karpenter.sh/foo" not in keys
    assert "karpenter.sh/capacity-type" in keys
    assert obj["metadata"]["labels"]["kubernetes.io/hostname"] == "n1"


def without(obj: dict[str, Any], *path: str) -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    node = obj
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return obj


@pytest.mark.parametrize("broken", [
    lambda o: without(o, "spec", "nodeClassRef"),
    lambda o: without(o, "spec", "requirements"),
    lambda o: without(o, "spec", "nodeClassRef", "group"),
    lambda o: with_changes(o, {"spec.requirements": [{"key": "a", "operator": "Near"}]}),
    lambda o: with_changes(o, {"spec.requirements": [{"key": "a", "operator": "In",
                                                      "values": ["x"], "minValues": 0}]}),
    lambda o: with_changes(o, {"spec.taints": [{"key": "sku", "effect": "NoRun"}]}),
    lambda o: with_changes(o, {"status.conditions": [{"type": "Ready", "status": "Yes",
                                                      "lastTransitionTime": NOW}]}),
    lambda o: with_changes(o, {"status.conditions": [{"type": "Ready", "status": "True"}]}),
    # upstream's CEL rules, which ours carries too
    lambda o: with_changes(o, {"spec.requirements": [{"key": "karpenter.sh/foo",
                                                      "operator": "Exists"}]}),
    lambda o: with_changes(o, {"spec.requirements": [{"key": "kubernetes.io/hostname",
                                                      "operator": "Exists"}]}),
    lambda o: with_changes(o, {"spec.requirements": [{"key": "a", "operator": "In"}]}),
    lambda o: with_changes(o, {"spec.requirements": [{"key": "a", "operator": "Gt",
                                                      "values": ["1", "2"]}]}),
    lambda o: with_changes(o, {"spec.requirements": [{"key": "a", "operator": "In",
                                                      "values": ["x"], "minValues": 2}]}),
    lambda o: with_changes(o, {"spec.nodeClassRef.name": ""}),
    lambda o: with_changes(o, {"spec.nodeClassRef.group": "a/b"}),
    lambda o: with_changes(o, {"spec.expireAfter": "30 days"}),
], ids=["no-nodeClassRef", "no-requirements", "no-group", "bad-operator", "minValues-0",
        "bad-effect", "bad-status", "no-transition-time", "karpenter-domain-key",
        "hostname-key", "in-without-values", "gt-two-values", "minValues-above-values",
        "empty-class-name", "group-with-slash", "bad-expire-after"])
def test_objects_refused_by_ours_are_refused_upstream(broken):
    theirs = schema_of(upstream_crd("karpenter.sh_nodeclaims.yaml"))
    obj = broken(karpenter_aws_nodeclaim())
    assert admit(schema_of(nodeclaim_crd()), obj), "ours admits it"
    assert admit(theirs, obj), "Karpenter's admits it"


def test_spec_is_immutable_in_both_crds():
    """Karpenter's `self == oldSelf` on the spec: an update that changes it is refused by
    both; a status-only change is not."""
    obj = karpenter_aws_nodeclaim()
    changed = with_changes(obj, {"spec.expireAfter": "1h"})
    relabelled = with_changes(obj, {"metadata.labels": {"team": "b"}})
    for schema in (schema_of(upstream_crd("karpenter.sh_nodeclaims.yaml")),
                   schema_of(nodeclaim_crd())):
        assert any("spec is immutable" in e for e in admit(schema, changed, old=obj))
        assert admit(schema, relabelled, old=obj) == []


def test_printer_columns_are_upstreams_and_conditions_are_karpenters():
    """`kubectl get nodeclaims` shows the same columns whichever CRD is installed; the
    condition types our provisioner writes are Karpenter's."""
    from kaito_operator.api.nodeclaim import LIFECYCLE

    theirs = version_of(upstream_crd("karpenter.sh_nodeclaims.yaml"))
    mine = version_of(nodeclaim_crd())

    def columns(version: dict[str, Any]) -> list[tuple[Any, ...]]:
        return [(c["name"], c["type"], c["jsonPath"], c.get("priority", 0))
                for c in version["additionalPrinterColumns"]]

    assert columns(mine) == columns(theirs)
    assert LIFECYCLE == ("Launched", "Registered", "Initialized", "Ready")


# --- the gpu-provisioner chart leaves Karpenter's CRD alone -----------------------------------

CHART = Path(__file__).resolve().parents[2] / "charts" / "gpu-provisioner"
CRD_TEMPLATE = "gpu-provisioner/templates/nodeclaim-crd.yaml"
CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


@pytest.mark.slow
@pytest.mark.parametrize(("annotations", "installed"), [
    (None, True),  # no NodeClaim CRD yet: the release installs it
    ({"meta.helm.sh/release-name": "karpenter-crd",
      "meta.helm.sh/release-namespace": "kube-system"}, False),  # Karpenter's chart owns it
    ({}, False),  # applied by hand or from another chart's crds/: not ours either
    ({"meta.helm.sh/release-name": "gp",
      "meta.helm.sh/release-namespace": "gp"}, True),  # ours, from an earlier install
], ids=["absent", "karpenter-release", "unowned", "this-release"])
def test_chart_installs_the_crd_only_where_nobody_else_owns_it(annotations, installed):
    """Rendered as `helm install/upgrade` does (lookup sees the cluster: the API emulator)."""
    import helm_python as helm
    import httpx

    from kaito_sandbox.sim.kube_api import MACHINE, WORKSPACE, KubeApiEmulator

    with KubeApiEmulator(kaito_kinds=False, extra_types=(WORKSPACE, MACHINE)) as api, \
            httpx.Client(base_url=api.url, timeout=10.0) as http:
        if annotations is not None:
            crd = upstream_crd("karpenter.sh_nodeclaims.yaml")
            crd["metadata"]["annotations"] = annotations
            assert http.post(CRD_PATH, json=crd).status_code == 201
        config = helm.Config(kube_apiserver=api.url, namespace="gp")
        out = config.render(helm.Chart.load(CHART), {"nodeKind": "nodeclaim"}, name="gp",
                            namespace="gp", is_install=annotations is None,
                            is_upgrade=annotations is not None)
        docs = [d for d in yaml.safe_load_all(out.get(CRD_TEMPLATE, "")) if d]
        assert bool(docs) == installed
        if installed:
            assert docs[0]["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
        else:
            assert "belongs to someone else" in out["gpu-provisioner/templates/NOTES.txt"]
        assert any("Deployment" in text for text in out.values())
