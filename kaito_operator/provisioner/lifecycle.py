"""Pure lifecycle of a Machine or NodeClaim: launched → registered → initialized → ready
(docs/design.md §3, §4).

The condition types are passed in (:class:`ConditionTypes`): ``MachineLaunched`` ... for a
``karpenter.sh/v1alpha5`` Machine, ``Launched`` ... for a ``karpenter.sh/v1`` NodeClaim; the
rules are the same.  Each step owns one condition and is computed from what is observed now (the
pool's launch state and the Node), never accumulated: a Node that disappears turns the
registered step back to Unknown.  Every condition has a type, a status, a non-empty CamelCase
reason, a message (maybe empty) and a lastTransitionTime, as upstream's NodeClaim CRD asks.  A
step is only True when the step before it is True, so the conditions can never be seen out of
order.  ``lastTransitionTime`` is carried over while a condition's status stays the same, so a
pass that changes nothing writes nothing.  No I/O and no clock (``now`` is passed in).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kaito_operator.provisioner.pools import AGENTPOOL_NODE_LABEL

__all__ = [
    "GPU_RESOURCE",
    "ConditionTypes",
    "Launch",
    "gpus_allocatable",
    "initialized",
    "launched",
    "lifecycle_status",
    "node_patch",
    "node_ready",
    "phase",
    "ready",
    "registered",
    "status_changed",
    "status_patch",
]

GPU_RESOURCE = "nvidia.com/gpu"
Condition = dict[str, str]


@dataclass(frozen=True)
class ConditionTypes:
    """The four condition types of one kind, in the order they become True."""

    launched: str
    registered: str
    initialized: str
    ready: str

    @property
    def order(self) -> tuple[str, str, str, str]:
        return (self.launched, self.registered, self.initialized, self.ready)


@dataclass(frozen=True)
class Launch:
    """Where the pool stands: ``status`` is the launched condition's status."""

    status: str = "Unknown"
    reason: str = "Launching"
    message: str = ""

    @classmethod
    def succeeded(cls, pool: str) -> Launch:
        return cls("True", "Launched", f"agent pool {pool} succeeded")

    @classmethod
    def pending(cls, message: str, reason: str = "Launching") -> Launch:
        return cls("Unknown", reason, message)

    @classmethod
    def failed(cls, reason: str, message: str) -> Launch:
        return cls("False", reason, message)


def _cond(type_: str, status: str, reason: str, message: str) -> Condition:
    return {"type": type_, "status": status, "reason": reason, "message": message}


def node_ready(node: Mapping[str, Any] | None) -> bool:
    for cond in ((node or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


def gpus_allocatable(node: Mapping[str, Any] | None) -> int:
    raw = (((node or {}).get("status") or {}).get("allocatable") or {}).get(GPU_RESOURCE, "0")
    try:
        return int(str(raw))
    except ValueError:
        return 0


def launched(types: ConditionTypes, launch: Launch) -> Condition:
    return _cond(types.launched, launch.status, launch.reason, launch.message)


def registered(
    types: ConditionTypes, prev: Condition, pool: str, node: Mapping[str, Any] | None
) -> Condition:
    if prev["status"] != "True":
        return _cond(types.registered, "Unknown", "NotLaunched", "waiting for the agent pool")
    if node is None:
        return _cond(
            types.registered,
            "Unknown",
            "NodeNotFound",
            f"waiting for a node labelled {AGENTPOOL_NODE_LABEL}={pool}",
        )
    return _cond(types.registered, "True", "Registered",
                 f"node {node['metadata']['name']} registered")


def initialized(
    types: ConditionTypes, prev: Condition, node: Mapping[str, Any] | None, gpus: int
) -> Condition:
    """``gpus``: how many ``nvidia.com/gpu`` the SKU has (0: none required)."""
    if prev["status"] != "True" or node is None:
        return _cond(types.initialized, "Unknown", "NotRegistered", "waiting for the node")
    name = node["metadata"]["name"]
    if not node_ready(node):
        return _cond(types.initialized, "Unknown", "NodeNotReady", f"node {name} is not Ready")
    have = gpus_allocatable(node)
    if have < gpus:
        return _cond(
            types.initialized,
            "Unknown",
            "GPUsNotAllocatable",
            f"node {name} has {have} of {gpus} {GPU_RESOURCE} allocatable",
        )
    return _cond(types.initialized, "True", "Initialized", f"node {name} is Ready")


def ready(types: ConditionTypes, steps: Sequence[Condition]) -> Condition:
    """True when every step is; False as soon as one failed for good; Unknown otherwise."""
    failed = next((c for c in steps if c["status"] == "False"), None)
    if failed is not None:
        return _cond(types.ready, "False", failed["reason"], failed["message"])
    pending = next((c for c in steps if c["status"] != "True"), None)
    if pending is not None:
        return _cond(types.ready, "Unknown", pending["reason"], pending["message"])
    return _cond(types.ready, "True", "Ready", "")


def lifecycle_status(
    types: ConditionTypes,
    current: Mapping[str, Any] | None,
    pool: str,
    launch: Launch,
    node: Mapping[str, Any] | None,
    gpus: int,
    now: str,
) -> dict[str, Any]:
    """The object's whole status for what is observed now."""
    first = launched(types, launch)
    second = registered(types, first, pool, node)
    third = initialized(types, second, node, gpus)
    conditions = [first, second, third, ready(types, [first, second, third])]
    old = {c.get("type"): c for c in (current or {}).get("conditions") or []}
    for cond in conditions:
        before = old.get(cond["type"])
        same = before is not None and before.get("status") == cond["status"]
        cond["lastTransitionTime"] = str(before.get("lastTransitionTime") or now) if (
            same and before is not None
        ) else now
    status: dict[str, Any] = {"conditions": conditions}
    if node is not None and second["status"] == "True":
        status["nodeName"] = node["metadata"]["name"]
        provider_id = (node.get("spec") or {}).get("providerID")
        if provider_id:
            status["providerID"] = provider_id
        node_status = node.get("status") or {}
        for key in ("capacity", "allocatable"):
            if node_status.get(key):
                status[key] = dict(node_status[key])
    return status


_STATUS_KEYS = ("conditions", "nodeName", "providerID", "capacity", "allocatable")


def status_changed(current: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> bool:
    current = current or {}
    return any(current.get(key) != desired.get(key) for key in _STATUS_KEYS)


def status_patch(current: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> dict[str, Any]:
    """A merge patch that makes ``current`` equal ``desired`` (null removes a stale field)."""
    current = current or {}
    return {k: desired.get(k) for k in _STATUS_KEYS if current.get(k) != desired.get(k)}


def _taint_key(taint: Mapping[str, Any]) -> tuple[str, str]:
    return (str(taint.get("key")), str(taint.get("effect")))


def node_patch(machine: Mapping[str, Any], node: Mapping[str, Any]) -> dict[str, Any] | None:
    """Copy the Machine's (NodeClaim's) labels and taints onto its Node; None when the Node has
    them all.

    Taints are matched by (key, effect) like the kubelet does; the merge patch carries the
    whole taint list because a JSON merge patch replaces lists.
    """
    want_labels = (machine.get("metadata") or {}).get("labels") or {}
    have_labels = (node.get("metadata") or {}).get("labels") or {}
    labels = {k: v for k, v in want_labels.items() if have_labels.get(k) != v}
    have_taints = list((node.get("spec") or {}).get("taints") or [])
    present = {_taint_key(t) for t in have_taints}
    missing = [
        {k: v for k, v in t.items() if k in ("key", "value", "effect")}
        for t in (machine.get("spec") or {}).get("taints") or []
        if _taint_key(t) not in present
    ]
    patch: dict[str, Any] = {}
    if labels:
        patch["metadata"] = {"labels": labels}
    if missing:
        patch["spec"] = {"taints": have_taints + missing}
    return patch or None


def phase(types: ConditionTypes, status: Mapping[str, Any] | None) -> str:
    """The furthest True step (for metrics): ``Failed``, ``Pending`` or a condition type."""
    conds = {c.get("type"): c.get("status") for c in (status or {}).get("conditions") or []}
    if conds.get(types.launched) == "False":
        return "Failed"
    reached = "Pending"
    for type_ in types.order:
        if conds.get(type_) != "True":
            break
        reached = type_
    return reached
