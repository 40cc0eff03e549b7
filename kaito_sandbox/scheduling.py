"""Where a pod may run: the scheduler's filters that the workloads here rely on (pure).

Ready nodes that are not being deleted, whose taints the pod tolerates, that satisfy the
pod's required node affinity, and that still have the GPUs the pod asks for.
"""

from __future__ import annotations

from typing import Any

GPU = "nvidia.com/gpu"


def _ready(node: dict[str, Any]) -> bool:
    conditions = node.get("status", {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _tolerated(taint: dict[str, Any], tolerations: list[dict[str, Any]]) -> bool:
    if taint.get("effect") == "PreferNoSchedule":
        return True
    for tol in tolerations:
        if tol.get("effect") not in (None, "", taint.get("effect")):
            continue
        if tol.get("operator") == "Exists" and tol.get("key") in (None, "", taint.get("key")):
            return True
        if tol.get("key") == taint.get("key") and tol.get("value", "") == taint.get("value", ""):
            return True
    return False


def _matches(expr: dict[str, Any], labels: dict[str, str]) -> bool:
    key, op, values = expr["key"], expr["operator"], expr.get("values") or []
    if op == "In":
        return labels.get(key) in values
    if op == "NotIn":
        return labels.get(key) not in values
    if op == "Exists":
        return key in labels
    if op == "DoesNotExist":
        return key not in labels
    return False


def _affinity_ok(pod: dict[str, Any], node: dict[str, Any]) -> bool:
    labels = dict(node["metadata"].get("labels") or {})
    labels.setdefault("kubernetes.io/hostname", node["metadata"]["name"])
    required = (pod["spec"].get("affinity") or {}).get("nodeAffinity", {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution")
    selector = pod["spec"].get("nodeSelector") or {}
    if any(labels.get(k) != v for k, v in selector.items()):
        return False
    if not required:
        return True
    return any(
        all(_matches(e, labels) for e in term.get("matchExpressions") or [])
        for term in required.get("nodeSelectorTerms") or []
    )


def gpus_requested(pod: dict[str, Any]) -> int:
    total = 0
    for container in pod["spec"].get("containers") or []:
        limits = (container.get("resources") or {}).get("limits") or {}
        total += int(limits.get(GPU, 0))
    return total


def choose_node(
    pod: dict[str, Any], nodes: list[dict[str, Any]], pods: list[dict[str, Any]]
) -> tuple[str | None, str]:
    """(node name, "") or (None, the reason it cannot be scheduled)."""
    tolerations = pod["spec"].get("tolerations") or []
    want = gpus_requested(pod)
    reasons = []
    for node in sorted(nodes, key=lambda n: n["metadata"]["name"]):
        name = node["metadata"]["name"]
        if node["metadata"].get("deletionTimestamp") or not _ready(node):
            reasons.append("not ready")
            continue
        taints = node.get("spec", {}).get("taints") or []
        if not all(_tolerated(t, tolerations) for t in taints):
            reasons.append("untolerated taint")
            continue
        if not _affinity_ok(pod, node):
            reasons.append("didn't match node affinity")
            continue
        free = int((node.get("status", {}).get("allocatable") or {}).get(GPU, 0)) - sum(
            gpus_requested(p) for p in pods
            if p["spec"].get("nodeName") == name
            and p.get("status", {}).get("phase") not in ("Succeeded", "Failed")
        )
        if want > free:
            reasons.append(f"insufficient {GPU}")
            continue
        return name, ""
    counts: dict[str, int] = {}
    for reason in reasons:
        counts[reason] = counts.get(reason, 0) + 1
    detail = ", ".join(f"{n} node(s) {r}" for r, n in sorted(counts.items()))
    return None, f"0/{len(nodes)} nodes are available: {detail or 'no nodes'}"
