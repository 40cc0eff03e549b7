"""The workload controllers the sandbox needs: Deployments, StatefulSets and Jobs get their
pods, and their status from those pods (what kube-controller-manager does, reduced)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import httpx

MERGE = {"Content-Type": "application/merge-patch+json"}


def _owner(obj: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": obj["metadata"]["name"],
            "uid": obj["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}


def _revision(template: dict[str, Any]) -> str:
    text = json.dumps(template, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def desired_pods(kind: str, obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Pod name → pod manifest for a Deployment, StatefulSet or Job."""
    meta, spec = obj["metadata"], obj["spec"]
    template = spec["template"]
    replicas = 1 if kind == "Job" else int(spec.get("replicas", 1))
    pods = {}
    for index in range(replicas):
        labels = dict(template.get("metadata", {}).get("labels") or {})
        if kind == "StatefulSet":
            name = f"{meta['name']}-{index}"
            labels["apps.kubernetes.io/pod-index"] = str(index)
        elif kind == "Job":
            name = f"{meta['name']}-{_revision(template)[:5]}"
            labels["job-name"] = meta["name"]
        else:
            name = f"{meta['name']}-{_revision(template)}-{index}"
        pod_spec = dict(template["spec"])
        if kind == "Job":
            pod_spec.setdefault("restartPolicy", "Never")
        pods[name] = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": meta["namespace"], "labels": labels,
                         "annotations": dict(template.get("metadata", {}).get("annotations")
                                             or {}),
                         "ownerReferences": [_owner(obj)]},
            "spec": pod_spec,
        }
    return pods


def _ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _owned_by(pod: dict[str, Any], obj: dict[str, Any]) -> bool:
    return any(ref.get("uid") == obj["metadata"]["uid"]
               for ref in pod["metadata"].get("ownerReferences") or [])


def workload_status(kind: str, obj: dict[str, Any], pods: list[dict[str, Any]]) -> dict[str, Any]:
    mine = [p for p in pods if _owned_by(p, obj)]
    if kind == "Job":
        phases = [p.get("status", {}).get("phase") for p in mine]
        status: dict[str, Any] = {"active": sum(ph in ("Pending", "Running") for ph in phases)}
        started = [p for p in mine if p.get("status", {}).get("startTime")]
        if started:
            status["startTime"] = started[0]["status"]["startTime"]
        if "Succeeded" in phases:
            status.update(succeeded=1, conditions=[{"type": "Complete", "status": "True"}])
        elif "Failed" in phases:
            failed = mine[phases.index("Failed")]
            message = next((cs.get("state", {}).get("terminated", {}).get("message")
                            for cs in failed.get("status", {}).get("containerStatuses") or []
                            if cs.get("state", {}).get("terminated")), None)
            status.update(failed=1, conditions=[{
                "type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                "message": message or "Job has reached the specified backoff limit"}])
        return status
    wanted = int(obj["spec"].get("replicas", 1))
    ready = sum(_ready(p) for p in mine)
    return {"observedGeneration": obj["metadata"].get("generation", 1), "replicas": len(mine),
            "updatedReplicas": min(len(mine), wanted), "readyReplicas": ready,
            "availableReplicas": ready}


PLURALS = {"Deployment": ("apps", "deployments"), "StatefulSet": ("apps", "statefulsets"),
           "Job": ("batch", "jobs")}


def sync_workloads(http: httpx.Client, pods: list[dict[str, Any]]) -> None:
    """Create missing pods, delete pods of old templates, write each workload's status."""
    for kind, (group, plural) in PLURALS.items():
        for obj in http.get(f"/apis/{group}/v1/{plural}").json().get("items", []):
            if obj["metadata"].get("deletionTimestamp"):
                continue
            ns = obj["metadata"]["namespace"]
            wanted = desired_pods(kind, obj)
            mine = {p["metadata"]["name"]: p for p in pods if _owned_by(p, obj)}
            for name in set(mine) - set(wanted):
                http.delete(f"/api/v1/namespaces/{ns}/pods/{name}")
            for name, manifest in wanted.items():
                if name not in mine:
                    http.post(f"/api/v1/namespaces/{ns}/pods", json=manifest)
            status = workload_status(kind, obj, pods)
            live = obj.get("status") or {}
            if any(live.get(k) != v for k, v in status.items()):
                http.patch(f"/apis/{group}/v1/namespaces/{ns}/{plural}/"
                           f"{obj['metadata']['name']}/status",
                           json={"status": status}, headers=MERGE)
