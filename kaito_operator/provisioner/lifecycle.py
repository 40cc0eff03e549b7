"""Pure lifecycle of a Machine: launched → registered → initialized → ready (docs/design.md §3).

Each step owns one condition and is computed from what is observed now (the pool's launch
state and the Node), never accumulated: a Node that disappears turns ``MachineRegistered`` back
to Unknown.  A step is only True when the step before it is True, so the conditions can never be
seen out of order.  ``lastTransitionTime`` is carried over while a condition's status stays the
same, so a pass that changes nothing writes nothing.  No I/O and no clock (``now`` is passed in).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kaito_operator.api.machine import INITIALIZED, LAUNCHED, LIFECYCLE, READY, REGISTERED
from kaito_operator.provisioner.pools import AGENTPOOL_NODE_LABEL

__all__ = [
    "GPU_RESOURCE",
    "Launch",
    "gpus_allocatable",
    "initialized",
    "launched",
    "machine_status",
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
class Launch:
    """Where the pool stands: ``status`` is the MachineLaunched condition's status."""

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


def launched(launch: Launch) -> Condition:
    return _cond(LAUNCHED, launch.status, launch.reason, launch.message)


def registered(prev: Condition, pool: str, node: Mapping[str, Any] | None) -> Condition:
    if prev["status"] != "True":
        return _cond(REGISTERED, "Unknown", "NotLaunched", "waiting for the agent pool")
    if node is None:
        return _cond(
            REGISTERED,
            "Unknown",
            "NodeNotFound",
            f"waiting for a node labelled {AGENTPOOL_NODE_LABEL}={pool}",
        )
    return _cond(REGISTERED, "True", "Registered", f"node {node['metadata']['name']} registered")


def initialized(prev: Condition, node: Mapping[str, Any] | None, gpus: int) -> Condition:
    """``gpus``: how many ``nvidia.com/gpu`` the SKU has (0: none required)."""
    if prev["status"] != "True" or node is None:
        return _cond(INITIALIZED, "Unknown", "NotRegistered", "waiting for the node")
    name = node["metadata"]["name"]
    if not node_ready(node):
        return _cond(INITIALIZED, "Unknown", "NodeNotReady", f"node {name} is not Ready")
    have = gpus_allocatable(node)
    if have < gpus:
        return _cond(
            INITIALIZED,
            "Unknown",
            "GPUsNotAllocatable",
            f"node {name} has {have} of {gpus} {GPU_RESOURCE} allocatable",
        )
    return _cond(INITIALIZED, "True", "Initialized", f"node {name} is Ready")


def ready(steps: Sequence[Condition]) -> Condition:
    """True when every step is; False as soon as one failed for good; Unknown otherwise."""
    failed = next((c for c in steps if c["status"] == "False"), None)
    if failed is not None:
        return _cond(READY, "False", failed["reason"], failed["message"])
    pending = next((c for c in steps if c["status"] != "True"), None)
    if pending is not None:
        return _cond(READY, "Unknown", pending["reason"], pending["message"])
    return _cond(READY, "True", "Ready", "")


def machine_status(
    current: Mapping[str, Any] | None,
    pool: str,
    launch: Launch,
    node: Mapping[str, Any] | None,
    gpus: int,
    now: str,
) -> dict[str, Any]:
    """The Machine's whole status for what is observed now."""
    first = launched(launch)
    second = registered(first, pool, node)
    third = initialized(second, node, gpus)
    conditions = [first, second, third, ready([first, second, third])]
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
    """Copy the Machine's labels and taints onto its Node; None when the Node has them all.

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


def phase(status: Mapping[str, Any] | None) -> str:
    """The furthest True step (for metrics): ``Failed``, ``Pending`` or a condition type."""
    conds = {c.get("type"): c.get("status") for c in (status or {}).get("conditions") or []}
    if conds.get(LAUNCHED) == "False":
        return "Failed"
    reached = "Pending"
    for type_ in LIFECYCLE:
        if conds.get(type_) != "True":
            break
        reached = type_
    return reached
