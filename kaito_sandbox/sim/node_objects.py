"""The node objects a provisioner turns into Nodes, as the simulated cluster handles them:
`karpenter.sh/v1alpha5` Machines and `karpenter.sh/v1` NodeClaims, and the Node bodies it
registers for them (also usable on their own, for pre-joined GPU nodes).

Both kinds go the same way: a Ready Node joins, and the object's status gets `nodeName`,
`providerID`, capacity, allocatable and its kind's lifecycle conditions (Machine:
`MachineLaunched` → `MachineRegistered` → `MachineInitialized` → `Ready`; NodeClaim:
`Launched` → `Registered` → `Initialized` → `Ready`); or, when a failure is injected, its
launch condition turns False with reason `LaunchFailed` and the cloud's message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

__all__ = [
    "MACHINES",
    "NODECLAIMS",
    "NODE_KINDS",
    "NodeObjectKind",
    "gpu_node",
    "instance_type",
    "joined_status",
    "launch_failed",
    "launch_failed_status",
    "list_owned",
    "node_for",
]

WORKSPACE_LABEL = "kaito.sh/workspace"
INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
AGENTPOOL_LABEL = "kubernetes.azure.com/agentpool"


@dataclass(frozen=True)
class NodeObjectKind:
    """One kind of node object: where it is served and how its status reads."""

    kind: str
    path: str
    """The cluster-scoped collection, e.g. `/apis/karpenter.sh/v1/nodeclaims`."""
    node_label: str
    """The label on a joined Node naming the object it was registered for."""
    lifecycle: tuple[str, ...]
    """Condition types in the order a provisioner sets them; the first is the launch."""
    node_labels: tuple[tuple[str, str], ...] = ()
    """Further labels the provisioner puts on the Node."""

    @property
    def launched(self) -> str:
        return self.lifecycle[0]


MACHINES = NodeObjectKind(
    kind="Machine",
    path="/apis/karpenter.sh/v1alpha5/machines",
    node_label="kaito.sh/machine",
    lifecycle=("MachineLaunched", "MachineRegistered", "MachineInitialized", "Ready"),
)
NODECLAIMS = NodeObjectKind(
    kind="NodeClaim",
    path="/apis/karpenter.sh/v1/nodeclaims",
    node_label="kaito.sh/nodeclaim",
    lifecycle=("Launched", "Registered", "Initialized", "Ready"),
    node_labels=(("karpenter.sh/registered", "true"), ("karpenter.sh/initialized", "true")),
)
NODE_KINDS = (MACHINES, NODECLAIMS)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def list_owned(http: httpx.Client, kind: NodeObjectKind) -> list[dict[str, Any]] | None:
    """The objects of `kind` labelled with a Workspace (other tests share the API server);
    `[]` where the cluster lacks the kind (404), None when the listing failed otherwise."""
    response = http.get(kind.path, params={"labelSelector": WORKSPACE_LABEL})
    if response.status_code == 404:
        return []
    if response.status_code != 200:
        return None
    return [obj for obj in response.json().get("items") or [] if obj.get("spec")]


def instance_type(obj: Mapping[str, Any]) -> str:
    """The VM size the object's instance-type requirement names (`unknown` without one)."""
    for req in (obj.get("spec") or {}).get("requirements") or []:
        if req.get("key") == INSTANCE_TYPE_LABEL and req.get("values"):
            return str(req["values"][0])
    return "unknown"


def gpu_node(
    name: str,
    sku: str,
    gpus: int,
    labels: Mapping[str, str] | None = None,
    taints: Sequence[Mapping[str, str]] = (),
    provider_id: str | None = None,
) -> dict[str, Any]:
    """A Ready GPU Node as a kubelet registers it: `labels` plus the instance type, OS and
    hostname labels, `nvidia.com/gpu` capacity and allocatable (none for `gpus=0`), and the
    Ready condition."""
    all_labels = dict(labels or {})
    all_labels.update({
        INSTANCE_TYPE_LABEL: sku,
        "kubernetes.io/os": "linux",
        "kubernetes.io/hostname": name,
    })
    capacity = {"cpu": "24", "memory": "220Gi", "pods": "110"}
    if gpus:
        capacity["nvidia.com/gpu"] = str(gpus)
    spec: dict[str, Any] = {"providerID": provider_id or f"azure:///sim/{name}"}
    if taints:
        spec["taints"] = [dict(t) for t in taints]
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": all_labels},
        "spec": spec,
        "status": {
            "capacity": capacity,
            "allocatable": dict(capacity),
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "kubelet is posting ready status",
                            "lastTransitionTime": _now()}],
        },
    }


def node_for(kind: NodeObjectKind, obj: Mapping[str, Any], gpus: int) -> dict[str, Any]:
    """The Node that joins for the object: its labels and taints, its pool and its kind's
    label naming it."""
    name = obj["metadata"]["name"]
    node_name = f"aks-{name}-12345678-vmss000000"
    labels = dict(obj["metadata"].get("labels") or {})
    labels.update(dict(kind.node_labels))
    labels.update({AGENTPOOL_LABEL: name, kind.node_label: name})
    taints = (obj.get("spec") or {}).get("taints") or []
    return gpu_node(node_name, instance_type(obj), gpus, labels, taints,
                    provider_id=f"azure:///sim/{name}")


def joined_status(kind: NodeObjectKind, node: Mapping[str, Any]) -> dict[str, Any]:
    """The object's status once `node` has joined for it: every lifecycle condition True."""
    now = _now()
    conditions = [{"type": t, "status": "True", "reason": t, "message": "",
                   "lastTransitionTime": now} for t in kind.lifecycle]
    return {
        "nodeName": node["metadata"]["name"],
        "providerID": node["spec"]["providerID"],
        "capacity": dict(node["status"]["capacity"]),
        "allocatable": dict(node["status"]["allocatable"]),
        "conditions": conditions,
    }


def launch_failed_status(kind: NodeObjectKind, message: str) -> dict[str, Any]:
    """The object's status after the cloud refused to launch it."""
    return {"conditions": [{
        "type": kind.launched, "status": "False", "reason": "LaunchFailed",
        "message": message, "lastTransitionTime": _now(),
    }]}


def launch_failed(kind: NodeObjectKind, status: Mapping[str, Any]) -> bool:
    return any(c.get("type") == kind.launched and c.get("status") == "False"
               for c in status.get("conditions") or [])
