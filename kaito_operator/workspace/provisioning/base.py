"""The node-provisioning interface and the kind-agnostic view of a Workspace's node objects.

A `Provisioner` says what one mode creates for a missing GPU node (`machine`: a v1alpha5
Machine, `nodeclaim`: a Karpenter v1 NodeClaim, `none`: nothing) and which Workspace condition
reports on it. Whatever the mode, the Machines and NodeClaims labelled with a Workspace are
its own ("owned"): their nodes are its nodes, they count towards `count` and they are deleted
with it, so switching modes never provisions a node twice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kaito_operator.api.workspace import Workspace
from kaito_operator.kube import Kind
from kaito_operator.settings import Settings
from kaito_operator.workspace.names import (
    WORKSPACE_LABEL,
    WORKSPACE_NAMESPACE_LABEL,
    machine_name,
)

#: build(ws, index, disk_gib, settings) -> the node object for node `index` of `ws`.
Builder = Callable[[Workspace, int, int, Settings], dict[str, Any]]


@dataclass(frozen=True)
class OwnedNode:
    """A Machine or NodeClaim of a Workspace, as far as the controller cares."""

    kind: str
    """`Machine` or `NodeClaim`."""
    name: str
    node_name: str | None
    """The node it became (`status.nodeName`), once there is one."""
    ready: bool
    """Its `Ready` condition is True."""
    failure: str | None
    """The cloud's message when provisioning failed for good (launch condition False)."""

    @property
    def label(self) -> str:
        """How messages name it: `machine <name>` (as before NodeClaims), `NodeClaim <name>`."""
        return f"{'machine' if self.kind == 'Machine' else self.kind} {self.name}"


@dataclass(frozen=True)
class ConditionNames:
    """The Workspace condition a mode reports its node objects with, and its reasons."""

    type: str
    failed: str
    none_needed: str
    ready: str
    provisioning: str
    noun: str
    """What the messages count: `machine(s)`, `NodeClaim(s)`."""


@dataclass(frozen=True)
class Provisioner:
    """One node-provisioning mode (`Settings.node_provisioning`)."""

    mode: str
    kind: Kind | None
    """The kind it creates (None: it creates nothing)."""
    build: Builder | None
    condition: ConditionNames | None
    """None: the mode reports no condition of its own."""

    @property
    def created_reason(self) -> str:
        """Reason of the Normal Event for each object created (`MachineCreated`,
        `NodeClaimCreated`; empty for a mode that creates nothing)."""
        return f"{self.kind.kind}Created" if self.kind else ""


def object_labels(ws: Workspace, key: str, value: str) -> dict[str, str]:
    """A node object's labels: the user's `matchLabels` (the provisioner copies them onto the
    node), the Workspace's owner labels, and the kind's own `key: value`."""
    labels = dict(ws.resource.label_selector.match_labels or {})
    labels.update({WORKSPACE_LABEL: ws.name, WORKSPACE_NAMESPACE_LABEL: ws.namespace, key: value})
    return labels


def free_indices(ws: Workspace, existing: set[str], wanted: int) -> list[int]:
    """Indices whose node object does not exist yet (an object of either kind with that name
    takes the index), lowest first, until `wanted` exist in all."""
    missing: list[int] = []
    index = 0
    have = len(existing)
    while have + len(missing) < wanted:
        if machine_name(ws.namespace, ws.name, index) not in existing:
            missing.append(index)
        index += 1
    return missing


def condition_status(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    """The condition of `type_` in a raw object's status, if present."""
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if isinstance(cond, dict) and cond.get("type") == type_:
            return cond
    return None


def owned_view(obj: dict[str, Any], kind: str, launched_type: str, ready_type: str) -> OwnedNode:
    """A Machine or NodeClaim as the controller sees it: ready on `<ready_type>=True`, failed
    for good on `<launched_type>=False` (its message, else its reason)."""
    ready = condition_status(obj, ready_type)
    launched = condition_status(obj, launched_type)
    failure = None
    if launched is not None and launched.get("status") == "False":
        failure = str(launched.get("message") or launched.get("reason") or "launch failed")
    return OwnedNode(
        kind=kind,
        name=str(obj.get("metadata", {}).get("name") or ""),
        node_name=(obj.get("status") or {}).get("nodeName") or None,
        ready=ready is not None and ready.get("status") == "True",
        failure=failure,
    )
