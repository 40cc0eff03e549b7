"""Workspace conditions computed from observed state on every pass (pure).

Nothing is assumed or remembered except each condition's `lastTransitionTime`, which is kept
while its status does not change. `WorkspaceReady` summarises: inference → resource and
inference ready; tuning → the Job succeeded (a failed Job's reason is shown, from its conditions
and its pod's termination message).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kaito_operator.api.workspace import TuningSpec, Workspace
from kaito_operator.workspace.cond import Cond
from kaito_operator.workspace.node_conditions import (
    RESOURCE_READY,
    node_object_condition,
    resource_condition,
)
from kaito_operator.workspace.nodes import NodeChoice
from kaito_operator.workspace.provisioning import OwnedNode

__all__ = [  # what other modules use from here
    "INFERENCE_READY", "JOB_STARTED", "MACHINE_READY", "NODECLAIM_READY", "RESOURCE_READY",
    "WORKSPACE_READY", "Cond", "Observed", "compute_conditions", "failed_pass_conditions",
    "job_failure", "pod_problem", "render_conditions", "termination_message", "transitions",
]

MACHINE_READY = "MachineReady"
NODECLAIM_READY = "NodeClaimReady"
INFERENCE_READY = "InferenceReady"
JOB_STARTED = "JobStarted"
WORKSPACE_READY = "WorkspaceReady"

#: Container states that will not fix themselves: surfaced as the condition's reason.
_BAD_WAITING = {
    "CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "InvalidImageName",
    "CreateContainerConfigError", "CreateContainerError", "RunContainerError",
}
MAX_MESSAGE = 1024


@dataclass
class Observed:
    """What one reconcile pass saw."""

    invalid: str | None = None
    """Validation summary when the Workspace is invalid."""
    owned: list[OwnedNode] = field(default_factory=list)
    """The Workspace's node objects, Machines and NodeClaims alike."""
    machines_wanted: int = 0
    """How many node objects (of either kind) the Workspace needs."""
    nodes: NodeChoice | None = None
    mode: str = "machine"
    """The node-provisioning mode (`Settings.node_provisioning`)."""
    workload: dict[str, Any] | None = None
    pods: list[dict[str, Any]] = field(default_factory=list)
    job: dict[str, Any] | None = None
    """The tuning Job as the API server has it."""
    config_missing: str | None = None
    """Why the tuning config ConfigMap the user named cannot be used."""


def pod_problem(pod: dict[str, Any]) -> tuple[str, str] | None:
    """(reason, message) of a pod that is failing on its own: crash loops, OOM kills,
    image pull errors, unschedulable pods."""
    name = pod.get("metadata", {}).get("name", "?")
    status = pod.get("status", {})
    statuses = (status.get("initContainerStatuses") or []) + (
        status.get("containerStatuses") or []
    )
    for cs in statuses:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        last = (cs.get("lastState") or {}).get("terminated") or {}
        if waiting.get("reason") in _BAD_WAITING:
            reason = waiting["reason"]
            if reason == "CrashLoopBackOff" and last.get("reason") == "OOMKilled":
                reason = "OOMKilled"
            detail = waiting.get("message") or last.get("message") or ""
            text = f"pod {name}: container {cs.get('name')}: {reason}"
            return reason, f"{text}: {detail}" if detail else text
        terminated = (cs.get("state") or {}).get("terminated") or {}
        if terminated.get("reason") == "OOMKilled":
            return "OOMKilled", f"pod {name}: container {cs.get('name')}: OOMKilled"
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            reason = cond.get("reason") or "Unschedulable"
            return reason, f"pod {name}: {cond.get('message') or reason}"
    return None


def _workload_ready(workload: dict[str, Any]) -> tuple[bool, int, int]:
    spec, status = workload.get("spec", {}), workload.get("status") or {}
    wanted = int(spec.get("replicas", 1))
    ready = int(status.get("readyReplicas") or 0)
    current = int(status.get("updatedReplicas") or 0) >= wanted and int(
        status.get("observedGeneration") or 0
    ) >= int(workload.get("metadata", {}).get("generation") or 0)
    return current and ready >= wanted, ready, wanted


def _inference_condition(obs: Observed, resource: Cond) -> Cond:
    for pod in obs.pods:
        if problem := pod_problem(pod):
            return Cond(INFERENCE_READY, False, problem[0], problem[1])
    if obs.workload is None:
        reason = "WaitingForNodes" if not resource.status else "WorkloadNotCreated"
        return Cond(INFERENCE_READY, False, reason, "the inference workload does not exist yet")
    ok, ready, wanted = _workload_ready(obs.workload)
    if ok:
        return Cond(INFERENCE_READY, True, "InferenceReady", f"{ready} of {wanted} pod(s) ready")
    return Cond(INFERENCE_READY, False, "InferenceNotReady", f"{ready} of {wanted} pod(s) ready")


def _job_flag(job: dict[str, Any], *types: str) -> dict[str, Any] | None:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if isinstance(cond, dict) and cond.get("type") in types and cond.get("status") == "True":
            return cond
    return None


def termination_message(pods: list[dict[str, Any]]) -> str | None:
    """`container <name>: <message>` of the first container that exited non-zero."""
    for pod in pods:
        status = pod.get("status") or {}
        for cs in (status.get("initContainerStatuses") or []) + (
            status.get("containerStatuses") or []
        ):
            done = (cs.get("state") or {}).get("terminated") or {}
            if done and int(done.get("exitCode") or 0) != 0:
                text = (done.get("message") or "").strip() or (
                    f"{done.get('reason') or 'Error'}, exit code {done.get('exitCode')}")
                return f"container {cs.get('name')}: {text}"
    return None


def job_failure(job: dict[str, Any], pods: list[dict[str, Any]]) -> str | None:
    """Why the Job failed (its condition, then the pod's own words), or None."""
    flag = _job_flag(job, "Failed", "FailureTarget")
    if flag is None and not int((job.get("status") or {}).get("failed") or 0):
        return None
    base = (flag or {}).get("message") or (flag or {}).get("reason") or "the tuning Job failed"
    detail = termination_message(pods)
    return f"{base}: {detail}" if detail else base


def _job_succeeded(job: dict[str, Any]) -> bool:
    return _job_flag(job, "Complete", "SuccessCriteriaMet") is not None or int(
        (job.get("status") or {}).get("succeeded") or 0) > 0


def _job_started(job: dict[str, Any]) -> bool:
    status = job.get("status") or {}
    return bool(status.get("startTime") or status.get("active") or status.get("succeeded")
                or status.get("failed"))


def _tuning_conditions(ws: Workspace, tuning: TuningSpec, obs: Observed,
                       resource: Cond) -> list[Cond]:
    """JobStarted and the WorkspaceReady summary of `ws`, whose tuning spec is `tuning`."""
    job = obs.job
    problem = next((p for pod in obs.pods if (p := pod_problem(pod))), None)
    if obs.config_missing:
        started = Cond(JOB_STARTED, False, "ConfigMapNotFound", obs.config_missing)
    elif job is None:
        reason = "WaitingForNodes" if not resource.status else "JobNotCreated"
        started = Cond(JOB_STARTED, False, reason, "the tuning Job does not exist yet")
    elif _job_started(job):
        started = Cond(JOB_STARTED, True, "JobStarted", f"tuning Job {ws.name} started")
    elif problem:
        started = Cond(JOB_STARTED, False, problem[0], problem[1])
    else:
        started = Cond(JOB_STARTED, False, "JobPending", f"tuning Job {ws.name} is pending")
    where = (f"adapter pushed to {tuning.output.image}" if tuning.output.image
             else "adapter written to the output volume")
    if job is not None and _job_succeeded(job):
        return [started, Cond(WORKSPACE_READY, True, "TuningJobSucceeded",
                              f"tuning Job succeeded; {where}")]
    if job is not None and (failure := job_failure(job, obs.pods)):
        return [started, Cond(WORKSPACE_READY, False, "TuningJobFailed", failure)]
    if not started.status:
        failing = started if job is not None or resource.status else resource
        return [started, Cond(WORKSPACE_READY, False, failing.reason, failing.message)]
    if problem:
        return [started, Cond(WORKSPACE_READY, False, problem[0], problem[1])]
    return [started, Cond(WORKSPACE_READY, False, "TuningJobRunning", "the tuning Job is running")]


def compute_conditions(ws: Workspace | None, obs: Observed) -> list[Cond]:
    """All conditions; `ws` may be None only for an invalid Workspace (it did not parse)."""
    if obs.invalid is not None:
        return [Cond(WORKSPACE_READY, False, "InvalidWorkspace", obs.invalid)]
    if ws is None:
        raise ValueError("the conditions of a Workspace that parsed need the Workspace")
    node_objects = node_object_condition(obs.mode, obs.owned, obs.machines_wanted)
    resource = resource_condition(ws, obs.mode, obs.nodes, node_objects)
    first = [node_objects, resource] if node_objects is not None else [resource]
    if ws.tuning is not None:
        return [*first, *_tuning_conditions(ws, ws.tuning, obs, resource)]
    inference = _inference_condition(obs, resource)
    failing = next((c for c in (resource, inference) if not c.status), None)
    summary = (
        Cond(WORKSPACE_READY, True, "WorkspaceReady", "inference is ready")
        if failing is None
        else Cond(WORKSPACE_READY, False, failing.reason, failing.message)
    )
    return [*first, inference, summary]


def render_conditions(
    conds: list[Cond], previous: list[dict[str, Any]], generation: int, now: str
) -> list[dict[str, Any]]:
    """metav1.Conditions, keeping `lastTransitionTime` where the status did not change."""
    before = {c.get("type"): c for c in previous}
    out = []
    for cond in conds:
        status = "True" if cond.status else "False"
        old = before.get(cond.type)
        since = old.get("lastTransitionTime") if old and old.get("status") == status else None
        message = cond.message if len(cond.message) <= MAX_MESSAGE else (
            cond.message[: MAX_MESSAGE - 3] + "..."
        )
        out.append({
            "type": cond.type,
            "status": status,
            "reason": cond.reason,
            "message": message,
            "lastTransitionTime": since or now,
            "observedGeneration": generation,
        })
    return out


def transitions(
    before: list[dict[str, Any]], after: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Conditions whose status or reason changed: each becomes an Event."""
    old = {c["type"]: (c.get("status"), c.get("reason")) for c in before}
    return [c for c in after if old.get(c["type"]) != (c["status"], c["reason"])]


def failed_pass_conditions(
    previous: list[dict[str, Any]], reason: str, message: str, generation: int, now: str
) -> list[dict[str, Any]]:
    """The conditions after a pass that failed: `WorkspaceReady=False` with the failure's
    reason and message; the other conditions stay as last observed."""
    (ready,) = render_conditions([Cond(WORKSPACE_READY, False, reason, message)], previous,
                                 generation, now)
    return [*(c for c in previous if c.get("type") != WORKSPACE_READY), ready]
