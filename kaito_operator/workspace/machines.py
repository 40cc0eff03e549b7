"""Machines for a Workspace's missing GPU nodes (pure builder and reducers)."""

from __future__ import annotations

from typing import Any

from kaito_operator.api.machine import INSTANCE_TYPE_LABEL, READY, Machine
from kaito_operator.api.workspace import Workspace
from kaito_operator.workspace.names import (
    GPU_TAINT,
    WORKSPACE_LABEL,
    WORKSPACE_NAMESPACE_LABEL,
    machine_name,
)

PROVISIONER_LABEL = "karpenter.sh/provisioner-name"
DO_NOT_DISRUPT = "karpenter.sh/do-not-disrupt"


def machine_labels(ws: Workspace) -> dict[str, str]:
    labels = dict(ws.resource.label_selector.match_labels or {})
    labels.update(
        {
            WORKSPACE_LABEL: ws.name,
            WORKSPACE_NAMESPACE_LABEL: ws.namespace,
            PROVISIONER_LABEL: "default",
        }
    )
    return labels


def build_machine(ws: Workspace, index: int, disk_gib: int) -> dict[str, Any]:
    """The Machine for node `index` of the Workspace: instance-type requirement, the user's
    labels (the provisioner copies them onto the node), the GPU taint and the OS disk."""
    name = machine_name(ws.namespace, ws.name, index)
    labels = machine_labels(ws)
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
        "kind": "Machine",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {DO_NOT_DISRUPT: "true"},
        },
        "spec": {
            "machineTemplateRef": {"name": name},
            "requirements": requirements,
            "resources": {"requests": {"storage": f"{disk_gib}Gi"}},
            "taints": [dict(GPU_TAINT)],
        },
    }


def is_ready(machine: Machine) -> bool:
    cond = machine.condition(READY)
    return cond is not None and cond.status == "True"


def failure(machine: Machine) -> str | None:
    """The cloud's message when provisioning failed for good (`MachineLaunched=False`)."""
    for cond in (machine.status.conditions if machine.status else None) or []:
        if cond.status == "False" and cond.type == "MachineLaunched" and cond.message:
            return cond.message
    return None


def free_indices(ws: Workspace, existing: set[str], wanted: int) -> list[int]:
    """Indices whose Machine does not exist yet, lowest first, until `wanted` exist in all."""
    missing: list[int] = []
    index = 0
    have = len(existing)
    while have + len(missing) < wanted:
        if machine_name(ws.namespace, ws.name, index) not in existing:
            missing.append(index)
        index += 1
    return missing
