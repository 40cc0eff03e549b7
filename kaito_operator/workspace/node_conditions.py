"""The node conditions of a Workspace (pure): the mode's node-object condition
(`MachineReady` / `NodeClaimReady`; none in mode `none`) and `ResourceReady`.

The node objects counted are all the Workspace owns, of either kind (one left from an earlier
mode counts as well; the message then names each object's kind).
"""

from __future__ import annotations

from kaito_operator.api.workspace import Workspace
from kaito_operator.workspace.cond import Cond
from kaito_operator.workspace.names import INSTANCE_TYPE_LABEL
from kaito_operator.workspace.nodes import NodeChoice
from kaito_operator.workspace.provisioning import OwnedNode, provisioner_for

RESOURCE_READY = "ResourceReady"
INSUFFICIENT_NODES = "InsufficientNodes"


def _mixed(owned: list[OwnedNode], kind: str | None) -> bool:
    """Does any object differ from the mode's kind (one left from an earlier mode)?"""
    return any(o.kind != kind for o in owned)


def _listing(owned: list[OwnedNode]) -> str:
    return ", ".join(f"{o.label} ({'ready' if o.ready else 'not ready'})" for o in owned)


def node_object_condition(
    mode: str, owned: list[OwnedNode], wanted: int
) -> Cond | None:
    """The mode's condition on the node objects; None in a mode without one."""
    provisioner = provisioner_for(mode)
    names = provisioner.condition
    if names is None:
        return None
    failed = next((o for o in owned if o.failure), None)
    if failed is not None:
        return Cond(names.type, False, names.failed, f"{failed.label}: {failed.failure}")
    if wanted == 0:
        return Cond(names.type, True, names.none_needed, "existing nodes are used")
    ready = sum(o.ready for o in owned)
    kind = provisioner.kind.kind if provisioner.kind else None
    mixed = _mixed(owned, kind)
    noun = "node object(s)" if mixed else names.noun
    detail = f" ({_listing(owned)})" if mixed else ""
    if ready >= wanted:
        return Cond(names.type, True, names.ready, f"{ready} {noun} ready{detail}")
    return Cond(names.type, False, names.provisioning, f"{ready} of {wanted} {noun} ready{detail}")


def _labels_to_add(ws: Workspace) -> str:
    wanted = ws.resource.label_selector.match_labels or {}
    labels = [f"{key}={value}" for key, value in sorted(wanted.items())]
    labels.append(f"{INSTANCE_TYPE_LABEL}={ws.resource.instance_type}")
    joined = labels[0] if len(labels) == 1 else f"{', '.join(labels[:-1])} and {labels[-1]}"
    return f"the label{'s' if len(labels) > 1 else ''} {joined}"


def insufficient_nodes(ws: Workspace, found: int) -> Cond:
    """Mode `none`: fewer qualified nodes than `count`, and what to do about it."""
    return Cond(
        RESOURCE_READY, False, INSUFFICIENT_NODES,
        f"found {found} qualified node(s), need {ws.resource.count}: add {_labels_to_add(ws)} "
        f"to Ready GPU nodes, or name them in resource.preferredNodes",
    )


def resource_condition(
    ws: Workspace, mode: str, nodes: NodeChoice | None, node_objects: Cond | None
) -> Cond:
    """`ResourceReady`: enough qualified nodes, or why not (a failed node object, too few
    nodes in mode `none`, or nodes still coming)."""
    nodes = nodes or NodeChoice(selected=[], missing=ws.resource.count)
    if nodes.missing == 0:
        return Cond(RESOURCE_READY, True, "NodesReady",
                    f"{len(nodes.selected)} node(s) ready: {', '.join(nodes.selected)}")
    names = provisioner_for(mode).condition
    if node_objects is not None and names is not None and node_objects.reason == names.failed:
        return Cond(RESOURCE_READY, False, names.failed, node_objects.message)
    if names is None:
        return insufficient_nodes(ws, len(nodes.selected))
    return Cond(
        RESOURCE_READY, False, "NodesNotReady",
        f"{len(nodes.selected)} of {ws.resource.count} qualified node(s) ready",
    )
