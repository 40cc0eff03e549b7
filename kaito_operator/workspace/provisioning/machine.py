"""`machine` mode: one `karpenter.sh/v1alpha5` Machine per missing GPU node (as the seed
documents; served by the gpu-provisioner before v0.3)."""

from __future__ import annotations

from typing import Any

from kaito_operator.api.machine import INSTANCE_TYPE_LABEL, LAUNCHED, READY
from kaito_operator.api.workspace import Workspace
from kaito_operator.kube import MACHINES
from kaito_operator.settings import Settings
from kaito_operator.workspace.names import DO_NOT_DISRUPT, GPU_TAINT, machine_name
from kaito_operator.workspace.provisioning.base import (
    ConditionNames,
    OwnedNode,
    Provisioner,
    object_labels,
    owned_view,
)

PROVISIONER_LABEL = "karpenter.sh/provisioner-name"
KIND = "Machine"


def build_machine(ws: Workspace, index: int, disk_gib: int) -> dict[str, Any]:
    """The Machine for node `index` of the Workspace: instance-type requirement, the user's
    labels (the provisioner copies them onto the node), the GPU taint and the OS disk."""
    name = machine_name(ws.namespace, ws.name, index)
    requirements = [
        {"key": INSTANCE_TYPE_LABEL, "operator": "In", "values": [ws.resource.instance_type]},
        {"key": PROVISIONER_LABEL, "operator": "In", "values": ["default"]},
        {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
    ]
    requirements += [
        {"key": key, "operator": "In", "values": [value]}
        for key, value in sorted((ws.resource.label_selector.match_labels or {}).items())
    ]
    return {
        "apiVersion": "karpenter.sh/v1alpha5",
        "kind": KIND,
        "metadata": {
            "name": name,
            "labels": object_labels(ws, PROVISIONER_LABEL, "default"),
            "annotations": {DO_NOT_DISRUPT: "true"},
        },
        "spec": {
            "machineTemplateRef": {"name": name},
            "requirements": requirements,
            "resources": {"requests": {"storage": f"{disk_gib}Gi"}},
            "taints": [dict(GPU_TAINT)],
        },
    }


def _build(ws: Workspace, index: int, disk_gib: int, settings: Settings) -> dict[str, Any]:
    return build_machine(ws, index, disk_gib)


def machine_view(obj: dict[str, Any]) -> OwnedNode:
    """A Machine as the controller sees it: ready on `Ready=True`, failed for good on
    `MachineLaunched=False` (its message, else its reason)."""
    return owned_view(obj, KIND, LAUNCHED, READY)


MACHINE_PROVISIONER = Provisioner(
    mode="machine",
    kind=MACHINES,
    build=_build,
    condition=ConditionNames(
        type="MachineReady", failed="MachineFailed", none_needed="NoMachinesNeeded",
        ready="MachinesReady", provisioning="MachinesProvisioning", noun="machine(s)",
    ),
)
