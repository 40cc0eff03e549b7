"""Which nodes a Workspace runs on (pure).

A node qualifies when it is Ready, not being deleted, carries every label of
`labelSelector.matchLabels`, is of the Workspace's instance type or named in
`preferredNodes`, and was not provisioned for another Workspace (its GPUs are taken).
Nodes are taken in the order preferred → previously used (`status.workerNodes`) → created
for this Workspace's node objects (Machines or NodeClaims) → name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kaito_operator.api.workspace import Workspace
from kaito_operator.workspace.names import (
    INSTANCE_TYPE_LABEL,
    WORKSPACE_LABEL,
    WORKSPACE_NAMESPACE_LABEL,
)


@dataclass(frozen=True)
class NodeChoice:
    selected: list[str]
    """Qualified nodes the workload is pinned to (at most `count`)."""
    missing: int
    """How many more nodes are needed."""


def node_ready(node: dict[str, Any]) -> bool:
    for cond in node.get("status", {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


def qualifies(ws: Workspace, node: dict[str, Any]) -> bool:
    meta = node.get("metadata", {})
    labels = meta.get("labels") or {}
    if meta.get("deletionTimestamp") or node.get("spec", {}).get("unschedulable"):
        return False
    if not node_ready(node):
        return False
    wanted = ws.resource.label_selector.match_labels or {}
    if any(labels.get(k) != v for k, v in wanted.items()):
        return False
    owner = (labels.get(WORKSPACE_NAMESPACE_LABEL), labels.get(WORKSPACE_LABEL))
    if owner[1] is not None and owner != (ws.namespace, ws.name):
        return False
    preferred = meta.get("name") in (ws.resource.preferred_nodes or [])
    same_type = labels.get(INSTANCE_TYPE_LABEL, "").lower() == ws.resource.instance_type.lower()
    return preferred or same_type


def choose_nodes(
    ws: Workspace, nodes: list[dict[str, Any]], machine_nodes: set[str]
) -> NodeChoice:
    """Pick up to `count` qualified nodes; `machine_nodes` are the nodes of the Workspace's
    node objects (Machines and NodeClaims)."""
    preferred = ws.resource.preferred_nodes or []
    previous = (ws.status.worker_nodes if ws.status else None) or []

    def rank(node: dict[str, Any]) -> tuple[int, str]:
        name = node["metadata"]["name"]
        if name in preferred:
            return (0, f"{preferred.index(name):05d}")
        if name in previous:
            return (1, name)
        if name in machine_nodes:
            return (2, name)
        return (3, name)

    qualified = sorted((n for n in nodes if qualifies(ws, n)), key=rank)
    selected = [n["metadata"]["name"] for n in qualified[: ws.resource.count]]
    return NodeChoice(selected=selected, missing=ws.resource.count - len(selected))
