"""`nodeclaim` mode: one Karpenter v1 `NodeClaim` per missing GPU node (gpu-provisioner v0.3+,
or Karpenter itself with a NodePool and a NodeClass of the cloud's provider)."""

from __future__ import annotations

from typing import Any

from kaito_operator.api.nodeclaim import (
    API_GROUP,
    API_VERSION,
    INSTANCE_TYPE_LABEL,
    LAUNCHED,
    NODEPOOL_LABEL,
    READY,
)
from kaito_operator.api.workspace import Workspace
from kaito_operator.kube import NODECLAIMS
from kaito_operator.settings import Settings
from kaito_operator.workspace.names import DO_NOT_DISRUPT, GPU_TAINT, machine_name
from kaito_operator.workspace.provisioning.base import (
    ConditionNames,
    OwnedNode,
    Provisioner,
    object_labels,
    owned_view,
)

KIND = "NodeClaim"
OS_LABEL = "kubernetes.io/os"
NEVER_EXPIRE = "Never"
#: Keys of the karpenter.sh domain a NodeClaim requirement may name (upstream's CEL rule).
_ALLOWED_KARPENTER_KEYS = {NODEPOOL_LABEL, "karpenter.sh/capacity-type"}


def requirement_allowed(key: str) -> bool:
    """May a NodeClaim requirement name `key`? Upstream refuses `kubernetes.io/hostname` and
    the `karpenter.sh` domain (any domain ending in it) except the nodepool and capacity type."""
    if key == "kubernetes.io/hostname":
        return False
    domain = key.split("/", 1)[0] if "/" in key else key
    return key in _ALLOWED_KARPENTER_KEYS or not domain.endswith("karpenter.sh")


def _in(key: str, value: str) -> dict[str, Any]:
    return {"key": key, "operator": "In", "values": [value]}


def build_nodeclaim(
    ws: Workspace, index: int, disk_gib: int, settings: Settings
) -> dict[str, Any]:
    """The NodeClaim for node `index` of the Workspace: instance type, nodepool, OS, the cloud's
    SKU key and the user's labels as requirements (those upstream forbids there stay labels
    only), the GPU taint, the OS disk and the configured NodeClass. `expireAfter: Never`:
    upstream's CRD defaults it to 720h, and Karpenter v1 expires a node by force (not held by
    `do-not-disrupt`), which would take a serving model's GPU node away after 30 days."""
    instance_type = ws.resource.instance_type
    requirements = [
        _in(INSTANCE_TYPE_LABEL, instance_type),
        _in(NODEPOOL_LABEL, settings.nodeclaim_nodepool),
        _in(OS_LABEL, "linux"),
    ]
    if settings.nodeclaim_sku_label:
        requirements.append(_in(settings.nodeclaim_sku_label, instance_type))
    requirements += [
        _in(key, value)
        for key, value in sorted((ws.resource.label_selector.match_labels or {}).items())
        if requirement_allowed(key)
    ]
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": KIND,
        "metadata": {
            "name": machine_name(ws.namespace, ws.name, index),
            "labels": object_labels(ws, NODEPOOL_LABEL, settings.nodeclaim_nodepool),
            "annotations": {DO_NOT_DISRUPT: "true"},
        },
        "spec": {
            "requirements": requirements,
            "resources": {"requests": {"storage": f"{disk_gib}Gi"}},
            "taints": [dict(GPU_TAINT)],
            "nodeClassRef": {
                "group": settings.nodeclaim_node_class_group,
                "kind": settings.nodeclaim_node_class_kind,
                "name": settings.nodeclaim_node_class_name,
            },
            "expireAfter": NEVER_EXPIRE,
        },
    }


def nodeclaim_view(obj: dict[str, Any]) -> OwnedNode:
    """A NodeClaim as the controller sees it: ready on `Ready=True`, failed for good on
    `Launched=False` (its message, else its reason)."""
    return owned_view(obj, KIND, LAUNCHED, READY)


NODECLAIM_PROVISIONER = Provisioner(
    mode="nodeclaim",
    kind=NODECLAIMS,
    build=build_nodeclaim,
    condition=ConditionNames(
        type="NodeClaimReady", failed="NodeClaimFailed", none_needed="NoNodeClaimsNeeded",
        ready="NodeClaimsReady", provisioning="NodeClaimsProvisioning", noun="NodeClaim(s)",
    ),
)
