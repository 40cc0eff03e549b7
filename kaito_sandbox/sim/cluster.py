"""A simulated cluster around the API emulator: what kubelets, the Deployment controller and a
node provisioner would do, reduced to what the workspace controller observes.

- Machines and NodeClaims labelled with a Workspace get a Ready Node after
  `provision_seconds` (labels and taints copied, GPU capacity from the catalog's SKU), and
  `status.nodeName`/`providerID`/capacity/conditions, as the gpu-provisioner sets them; or
  their launch condition (`MachineLaunched`, `Launched`) False with reason `LaunchFailed` and
  a cloud message when a failure is injected (`machine_failures`, either kind); see
  `node_objects`. A kind the cluster lacks (404) counts as none.
- Nodes whose Machine or NodeClaim is gone are deleted.
- Deployments and StatefulSets get pods (Running and Ready, or a failure injected per
  Workspace: crash loop, OOM, image pull error) and their status (ready/updated replicas).
- Jobs labelled with a Workspace get one pod (labelled as the Job controller labels them),
  run for `job_seconds`, then succeed, or fail as injected per Workspace (`job_outcomes`:
  the container's exit code and termination message, and the Job's Failed condition).
It polls the API over HTTP in a thread of its own, with bounded work per round.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from kaito_sandbox.sim.node_objects import (
    NODE_KINDS,
    NodeObjectKind,
    instance_type,
    joined_status,
    launch_failed,
    launch_failed_status,
    list_owned,
    node_for,
)

log = logging.getLogger(__name__)

WORKSPACE_LABEL = "kaito.sh/workspace"
NODES = "/api/v1/nodes"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class PodFault:
    """A container state to report for every pod of a Workspace."""

    reason: str = "CrashLoopBackOff"
    message: str = "back-off 5m0s restarting failed container"
    last_terminated: str | None = "Error"


@dataclass
class JobOutcome:
    """How a Workspace's Job ends: succeeded, or failed with the container's message."""

    succeeded: bool = True
    message: str = ""
    exit_code: int = 1


@dataclass
class SimulatedCluster:
    server: str
    provision_seconds: float = 0.0
    gpus_of: Callable[[str], int] = lambda sku: 1
    poll: float = 0.05
    machine_failures: dict[str, str] = field(default_factory=dict)
    """Machine or NodeClaim name → cloud error message (its launch condition False)."""
    pod_faults: dict[str, PodFault] = field(default_factory=dict)
    """Workspace name → the failure its pods show."""
    job_outcomes: dict[str, JobOutcome] = field(default_factory=dict)
    """Workspace name → how its Job ends (default: it succeeds)."""
    job_seconds: float = 0.0
    """How long a Job runs before it ends."""
    _seen: dict[str, float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    rounds: int = 0

    def start(self) -> SimulatedCluster:
        self._thread = threading.Thread(target=self._loop, name="sim-cluster", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(10)

    def __enter__(self) -> SimulatedCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _loop(self) -> None:
        with httpx.Client(base_url=self.server, timeout=10.0) as http:
            while not self._stop.is_set():
                try:
                    self._node_objects(http)
                    self._workloads(http, "deployments")
                    self._workloads(http, "statefulsets")
                    self._jobs(http)
                except httpx.HTTPError:
                    pass  # the emulator is stopping; the next round or stop() decides
                self.rounds += 1
                self._stop.wait(self.poll)

    # --- nodes -------------------------------------------------------------------------
    def _node_objects(self, http: httpx.Client) -> None:
        alive: dict[str, set[str]] = {}
        for kind in NODE_KINDS:
            objects = list_owned(http, kind)
            if objects is None:
                continue  # the listing failed: nothing is known gone, so no Node goes
            alive[kind.node_label] = {obj["metadata"]["name"] for obj in objects}
            for obj in objects:
                self._provision(http, kind, obj)
        for label, names in alive.items():
            nodes = http.get(NODES, params={"labelSelector": label})
            if nodes.status_code != 200:
                continue
            for node in nodes.json().get("items") or []:
                if node["metadata"]["labels"].get(label) not in names:
                    http.delete(f"{NODES}/{node['metadata']['name']}")

    def _provision(self, http: httpx.Client, kind: NodeObjectKind, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        name = meta["name"]
        status = obj.get("status") or {}
        if status.get("nodeName") or launch_failed(kind, status):
            return
        merge = {"Content-Type": "application/merge-patch+json"}
        if name in self.machine_failures:
            http.patch(f"{kind.path}/{name}/status", headers=merge, json={
                "status": launch_failed_status(kind, self.machine_failures[name])})
            return
        first = self._seen.setdefault(f"{kind.kind}/{meta.get('uid', name)}", time.monotonic())
        if time.monotonic() - first < self.provision_seconds:
            return
        node = node_for(kind, obj, self.gpus_of(instance_type(obj)))
        http.post(NODES, json=node)
        http.patch(f"{kind.path}/{name}/status", headers=merge,
                   json={"status": joined_status(kind, node)})

    # --- pods --------------------------------------------------------------------------
    def _workloads(self, http: httpx.Client, plural: str) -> None:
        items = http.get(f"/apis/apps/v1/{plural}",
                         params={"labelSelector": WORKSPACE_LABEL}).json().get("items", [])
        for workload in items:
            self._sync_workload(http, plural, workload)

    def _sync_workload(self, http: httpx.Client, plural: str, workload: dict[str, Any]) -> None:
        meta = workload["metadata"]
        ns, name = meta["namespace"], meta["name"]
        workspace = meta["labels"][WORKSPACE_LABEL]
        replicas = int(workload["spec"].get("replicas", 1))
        template = workload["spec"]["template"]
        revision = hashlib.sha256(repr(template).encode()).hexdigest()[:8]
        pods = http.get(f"/api/v1/namespaces/{ns}/pods",
                        params={"labelSelector": f"{WORKSPACE_LABEL}={workspace}"}).json()
        live = {p["metadata"]["name"]: p for p in pods.get("items", [])}
        wanted = {self._pod_name(plural, name, revision, i): i for i in range(replicas)}
        for pod_name in set(live) - set(wanted):
            http.delete(f"/api/v1/namespaces/{ns}/pods/{pod_name}")
        fault = self.pod_faults.get(workspace)
        ready = 0
        for pod_name, index in wanted.items():
            pod = live.get(pod_name)
            if pod is None:
                labels = dict(template["metadata"].get("labels") or {})
                if plural == "statefulsets":
                    labels["apps.kubernetes.io/pod-index"] = str(index)
                pod = http.post(f"/api/v1/namespaces/{ns}/pods", json={
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": pod_name, "namespace": ns, "labels": labels},
                    "spec": template["spec"],
                }).json()
            status = _pod_status(template, fault)
            if _differs(status, pod.get("status") or {}):
                http.patch(f"/api/v1/namespaces/{ns}/pods/{pod_name}/status",
                           json={"status": status},
                           headers={"Content-Type": "application/merge-patch+json"})
            ready += fault is None
        status = {
            "observedGeneration": meta.get("generation", 1),
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": ready,
            "availableReplicas": ready,
        }
        if _differs(status, workload.get("status") or {}):
            http.patch(
                f"/apis/apps/v1/namespaces/{ns}/{plural}/{name}/status",
                json={"status": status},
                headers={"Content-Type": "application/merge-patch+json"},
            )

    @staticmethod
    def _pod_name(plural: str, name: str, revision: str, index: int) -> str:
        if plural == "statefulsets":
            return f"{name}-{index}"
        return f"{name}-{revision}-{index}"


    # --- jobs --------------------------------------------------------------------------
    def _jobs(self, http: httpx.Client) -> None:
        items = http.get("/apis/batch/v1/jobs",
                         params={"labelSelector": WORKSPACE_LABEL}).json().get("items", [])
        for job in items:
            status = job.get("status") or {}
            if any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
                   for c in status.get("conditions") or []):
                continue
            self._run_job(http, job)

    def _run_job(self, http: httpx.Client, job: dict[str, Any]) -> None:
        meta = job["metadata"]
        ns, name, uid = meta["namespace"], meta["name"], meta.get("uid", "")
        workspace = meta["labels"][WORKSPACE_LABEL]
        template = job["spec"]["template"]
        pod_name = f"{name}-{hashlib.sha256(uid.encode()).hexdigest()[:5]}"
        pod_path = f"/api/v1/namespaces/{ns}/pods/{pod_name}"
        job_status = f"/apis/batch/v1/namespaces/{ns}/jobs/{name}/status"
        merge = {"Content-Type": "application/merge-patch+json"}
        first = self._seen.setdefault(f"job/{uid}", time.monotonic())
        if http.get(pod_path).status_code == 404:
            labels = dict(template["metadata"].get("labels") or {})
            labels.update({"batch.kubernetes.io/controller-uid": uid,
                           "batch.kubernetes.io/job-name": name, "job-name": name})
            owner = {"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": uid,
                     "controller": True, "blockOwnerDeletion": True}
            http.post(f"/api/v1/namespaces/{ns}/pods", json={
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod_name, "namespace": ns, "labels": labels,
                             "ownerReferences": [owner]},
                "spec": template["spec"],
            })
            running = [{"name": c["name"], "ready": True, "restartCount": 0,
                        "state": {"running": {"startedAt": _now()}}}
                       for c in template["spec"].get("containers") or []]
            http.patch(f"{pod_path}/status", headers=merge, json={"status": {
                "phase": "Running", "containerStatuses": running,
                "conditions": [{"type": "PodScheduled", "status": "True"}]}})
            http.patch(job_status, headers=merge,
                       json={"status": {"startTime": _now(), "active": 1}})
            return
        if time.monotonic() - first < self.job_seconds:
            return
        outcome = self.job_outcomes.get(workspace, JobOutcome())
        code = 0 if outcome.succeeded else outcome.exit_code
        done = [{"name": c["name"], "ready": False, "restartCount": 0, "state": {"terminated": {
            "exitCode": code, "reason": "Completed" if code == 0 else "Error",
            "message": outcome.message, "finishedAt": _now()}}}
            for c in template["spec"].get("containers") or []]
        phase = "Succeeded" if outcome.succeeded else "Failed"
        http.patch(f"{pod_path}/status", headers=merge,
                   json={"status": {"phase": phase, "containerStatuses": done}})
        now = _now()
        if outcome.succeeded:
            conds = [{"type": t, "status": "True", "reason": "CompletionsReached",
                      "message": "Reached expected number of succeeded pods",
                      "lastTransitionTime": now} for t in ("SuccessCriteriaMet", "Complete")]
            status = {"active": 0, "succeeded": 1, "completionTime": now, "conditions": conds}
        else:
            conds = [{"type": t, "status": "True", "reason": "BackoffLimitExceeded",
                      "message": "Job has reached the specified backoff limit",
                      "lastTransitionTime": now} for t in ("FailureTarget", "Failed")]
            status = {"active": 0, "failed": 1, "conditions": conds}
        http.patch(job_status, headers=merge, json={"status": status})


def _differs(wanted: dict[str, Any], live: dict[str, Any]) -> bool:
    return any(live.get(key) != value for key, value in wanted.items())


def _pod_status(template: dict[str, Any], fault: PodFault | None) -> dict[str, Any]:
    containers = template["spec"].get("containers") or [{"name": "main"}]
    if fault is None:
        states = [{"name": c["name"], "ready": True, "restartCount": 0,
                   "state": {"running": {}}} for c in containers]
        ready = "True"
    else:
        last = ({"terminated": {"reason": fault.last_terminated, "exitCode": 137}}
                if fault.last_terminated else {})
        states = [{"name": c["name"], "ready": False, "restartCount": 3,
                   "state": {"waiting": {"reason": fault.reason, "message": fault.message}},
                   "lastState": last} for c in containers]
        ready = "False"
    return {
        "phase": "Running",
        "conditions": [{"type": "PodScheduled", "status": "True"},
                       {"type": "Ready", "status": ready}],
        "containerStatuses": states,
    }
