"""One idempotent pass over a Workspace: observe, act, compute status.

Steps: validate (an invalid Workspace gets a condition and a Warning Event, nothing else);
choose nodes and create the node objects of the node-provisioning mode for the missing ones
(Machines, NodeClaims, or none: `provisioning`); once the nodes are ready, ensure
the Service(s) and the Deployment/StatefulSet; observe the workload and its pods; write the
conditions computed from what was seen. Tuning Workspaces get the config ConfigMap and the Job
instead of the inference workload (a changed spec deletes the Job; the next pass creates the
new one). Nothing here waits: the caller looks again later. A pass that raises is shown by
`show_failure` (WorkspaceReady=False with the error, and a Warning Event).

Everything goes through `Deps.client`; in the operator that is a `CachedClient`, so the reads
of `WORKSPACE_CACHED_KINDS` come from the watches and a pass that changes nothing makes no API
call. ConfigMaps (tuning only) are read from the API.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kaito_operator.api.workspace import TuningSpec, Workspace
from kaito_operator.cache import Client
from kaito_operator.catalog import Catalog
from kaito_operator.kube import (
    DEPLOYMENTS,
    JOBS,
    MACHINES,
    NODECLAIMS,
    NODES,
    PODS,
    SERVICES,
    STATEFULSETS,
    WORKSPACES,
)
from kaito_operator.settings import Settings
from kaito_operator.validation import (
    errors,
    policy_from_settings,
    summary,
    validate_workspace,
)
from kaito_operator.workspace import status as st
from kaito_operator.workspace.apply import ensure
from kaito_operator.workspace.names import (
    ACCELERATOR_LABEL,
    GPU_RESOURCE,
    SPEC_HASH_ANNOTATION,
    WORKSPACE_LABEL,
)
from kaito_operator.workspace.nodes import NodeChoice, choose_nodes
from kaito_operator.workspace.provisioning import (
    OwnedNode,
    free_indices,
    owned_objects,
    provisioner_for,
)
from kaito_operator.workspace.tuning import CONFIG_KEY, CONFIGMAPS, desired_tuning
from kaito_operator.workspace.workload import desired_inference

log = logging.getLogger(__name__)

#: Reasons that mean something is wrong (Warning Events), not merely in progress.
FAILURE_REASONS = {
    "InvalidWorkspace", "MachineFailed", "CrashLoopBackOff", "OOMKilled", "ImagePullBackOff",
    "ErrImagePull", "InvalidImageName", "CreateContainerConfigError", "CreateContainerError",
    "RunContainerError", "Unschedulable", "TuningJobFailed", "ConfigMapNotFound",
    "NodeClaimFailed", "InsufficientNodes",
}
#: What the controller reads from its watches instead of the API (all of them kopf watches
#: already; ConfigMaps, read only by tuning passes, are not watched and are read from the API).
WORKSPACE_CACHED_KINDS = (WORKSPACES, MACHINES, NODECLAIMS, NODES, PODS, SERVICES,
                          DEPLOYMENTS, STATEFULSETS, JOBS)
#: Labels the Job controller puts on a Job's pods (the uid one tells reruns apart).
JOB_UID_LABEL = "batch.kubernetes.io/controller-uid"


@dataclass
class Deps:
    client: Client
    catalog: Catalog
    settings: Settings
    now: Callable[[], str]


@dataclass(frozen=True)
class Outcome:
    ready: bool
    """WorkspaceReady is True."""
    settled: bool
    """Nothing will change without an outside event (ready, or invalid)."""


async def _nodes(ws: Workspace, deps: Deps) -> list[dict[str, Any]]:
    return await deps.client.list(NODES, labels=ws.resource.label_selector.match_labels or {})


def _disk_gib(ws: Workspace, deps: Deps) -> int:
    spec = ws.inference.preset if ws.inference else ws.tuning.preset if ws.tuning else None
    if spec is not None:
        preset = deps.catalog.preset(spec.name)
        if preset is not None:
            return preset.resources.disk_gib
    return deps.settings.default_disk_gib


async def ensure_nodes(
    ws: Workspace, deps: Deps, body: dict[str, Any]
) -> tuple[NodeChoice, list[OwnedNode], int]:
    """Choose nodes; create one node object of the mode's kind per missing node (none in mode
    `none`). Returns the choice, the Workspace's node objects of every kind, and how many node
    objects it needs."""
    owned = await owned_objects(deps.client, ws.namespace, ws.name)
    nodes = await _nodes(ws, deps)
    owned_nodes = {o.node_name for o in owned if o.node_name}
    choice = choose_nodes(ws, nodes, owned_nodes)
    foreign = [n for n in choice.selected if n not in owned_nodes]
    wanted = max(0, ws.resource.count - len(foreign))
    provisioner = provisioner_for(deps.settings.node_provisioning)
    if provisioner.kind is not None and provisioner.build is not None:
        kind = provisioner.kind
        for index in free_indices(ws, {o.name for o in owned}, wanted):
            manifest = provisioner.build(ws, index, _disk_gib(ws, deps), deps.settings)
            if await deps.client.create_if_missing(kind, manifest):
                name = manifest["metadata"]["name"]
                log.info("[%s/%s] created %s %s", ws.namespace, ws.name, kind.kind, name)
                await deps.client.event(body, "Normal", provisioner.created_reason,
                                        f"created {kind.kind} {name} for a "
                                        f"{ws.resource.instance_type} node", deps.now())
                owned.append(OwnedNode(kind=kind.kind, name=name, node_name=None, ready=False,
                                       failure=None))
    by_name = {n["metadata"]["name"]: n for n in nodes}
    for name in choice.selected:
        node = by_name[name]
        capacity = node.get("status", {}).get("capacity") or {}
        labels = node.get("metadata", {}).get("labels") or {}
        if GPU_RESOURCE not in capacity and labels.get(ACCELERATOR_LABEL) != "nvidia":
            # The NVIDIA device plugin runs on nodes labelled so; until then no GPU shows.
            await deps.client.patch(
                NODES, name, {"metadata": {"labels": {ACCELERATOR_LABEL: "nvidia"}}}
            )
    return choice, owned, wanted


async def ensure_inference(
    ws: Workspace, deps: Deps, nodes: list[str]
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """Service(s) and workload; returns the live workload and its pods."""
    services, workload = desired_inference(ws, deps.catalog, deps.settings, nodes)
    for service in services:
        await ensure(deps.client, SERVICES, service)
    kind = STATEFULSETS if workload["kind"] == "StatefulSet" else DEPLOYMENTS
    live = await ensure(deps.client, kind, workload)
    pods = await deps.client.list(PODS, ws.namespace, labels={WORKSPACE_LABEL: ws.name})
    return live, pods


async def _ensure_config(
    ws: Workspace, tuning: TuningSpec, deps: Deps, config: dict[str, Any] | None
) -> str | None:
    """Create/repair our default ConfigMap (`config`), or check the user's (`tuning.config`,
    when `config` is None); returns what is wrong."""
    if config is None:
        name = tuning.config or ""
        live = await deps.client.get_or_none(CONFIGMAPS, name, ws.namespace)
        if live is None:
            return f"ConfigMap {name} (tuning.config) not found in namespace {ws.namespace}"
        if CONFIG_KEY not in (live.get("data") or {}):
            return f"ConfigMap {name} (tuning.config) has no {CONFIG_KEY} key"
        return None
    meta = config["metadata"]
    live = await deps.client.get_or_none(CONFIGMAPS, meta["name"], ws.namespace)
    if live is None:
        await deps.client.create_if_missing(CONFIGMAPS, config)
    elif live.get("data") != config["data"]:
        await deps.client.patch(CONFIGMAPS, meta["name"], {"data": config["data"]}, ws.namespace)
    return None


async def ensure_tuning(
    ws: Workspace, tuning: TuningSpec, deps: Deps, body: dict[str, Any], nodes: list[str],
    create: bool,
) -> tuple[dict[str, Any] | None, list[dict[str, Any]], str | None]:
    """Config and Job of `ws`, whose tuning spec is `tuning` (created only when `create`: the
    nodes are ready); returns the live Job, its pods, and what is wrong with the config."""
    config, desired = desired_tuning(ws, tuning, deps.catalog, deps.settings, nodes)
    problem = await _ensure_config(ws, tuning, deps, config) if create else None
    live = await deps.client.get_or_none(JOBS, ws.name, ws.namespace)
    wanted = desired["metadata"]["annotations"][SPEC_HASH_ANNOTATION]
    if live is not None:
        have = (live["metadata"].get("annotations") or {}).get(SPEC_HASH_ANNOTATION)
        if have != wanted and create:
            await deps.client.delete(JOBS, ws.name, ws.namespace)
            await deps.client.event(body, "Normal", "TuningJobRecreated",
                                    f"the tuning spec changed; Job {ws.name} deleted and will "
                                    f"be created anew", deps.now())
            return None, [], problem
    elif create and problem is None:
        live = await deps.client.create(JOBS, desired)
        await deps.client.event(body, "Normal", "TuningJobCreated",
                                f"created tuning Job {ws.name}", deps.now())
    if live is None:
        return None, [], problem
    uid = live["metadata"].get("uid")
    labels = {JOB_UID_LABEL: uid} if uid else {"batch.kubernetes.io/job-name": ws.name}
    pods = await deps.client.list(PODS, ws.namespace, labels=labels)
    return live, pods, problem


async def write_status(
    body: dict[str, Any], conds: list[st.Cond], workers: list[str] | None, deps: Deps
) -> None:
    meta = body["metadata"]
    current = body.get("status") or {}
    previous = current.get("conditions") or []
    rendered = st.render_conditions(conds, previous, int(meta.get("generation") or 0),
                                    deps.now())
    status: dict[str, Any] = {"conditions": rendered}
    if workers is not None:
        status["workerNodes"] = workers
    if rendered == previous and (workers is None or workers == current.get("workerNodes")):
        return
    await deps.client.patch(WORKSPACES, meta["name"], {"status": status}, meta["namespace"],
                            status=True)
    shown = {c.get("type") for c in previous}
    for cond in st.transitions(previous, rendered):
        failing = cond["reason"] in FAILURE_REASONS
        if cond["type"] not in shown and cond["status"] == "False" and not failing:
            continue  # a condition's first, in-progress state is not a change: no Event
        if cond["type"] == st.WORKSPACE_READY and cond["status"] == "False" and any(
            c["type"] != st.WORKSPACE_READY and c["status"] == "False"
            and c["reason"] == cond["reason"] for c in rendered
        ):
            continue  # the failing condition's own Event says it already
        kind = "Warning" if failing else "Normal"
        await deps.client.event(body, kind, cond["reason"],
                                f"{cond['type']}={cond['status']}: {cond['message']}", deps.now())


def shown_failure(body: dict[str, Any]) -> tuple[str, str] | None:
    """(reason, message) of the WorkspaceReady condition the Workspace shows, when False."""
    for cond in (body.get("status") or {}).get("conditions") or []:
        if cond.get("type") == st.WORKSPACE_READY and cond.get("status") == "False":
            return str(cond.get("reason")), str(cond.get("message"))
    return None


async def show_failure(
    body: dict[str, Any], reason: str, message: str, deps: Deps, announce: bool
) -> None:
    """Show a failed pass: `WorkspaceReady=False` with `reason` and `message` (the other
    conditions are kept), and a Warning Event when `announce`. Raises when the status write
    fails (the caller logs it and retries later)."""
    meta = body["metadata"]
    previous = (body.get("status") or {}).get("conditions") or []
    rendered = st.failed_pass_conditions(previous, reason, message,
                                         int(meta.get("generation") or 0), deps.now())
    if rendered != previous:
        await deps.client.patch(WORKSPACES, meta["name"], {"status": {"conditions": rendered}},
                                meta["namespace"], status=True)
    if announce:
        await deps.client.event(body, "Warning", reason, f"{st.WORKSPACE_READY}=False: {message}",
                                deps.now())


async def reconcile(body: dict[str, Any], deps: Deps) -> Outcome:
    found = errors(validate_workspace(body, deps.catalog,
                                      policy=policy_from_settings(deps.settings)))
    if found:
        invalid = st.Observed(invalid=summary(found))
        await write_status(body, st.compute_conditions(None, invalid), None, deps)
        return Outcome(ready=False, settled=True)
    ws = Workspace.model_validate(body)
    choice, owned, wanted = await ensure_nodes(ws, deps, body)
    observed = st.Observed(owned=owned, machines_wanted=wanted, nodes=choice,
                           mode=deps.settings.node_provisioning)
    if ws.tuning is not None:
        observed.job, observed.pods, observed.config_missing = await ensure_tuning(
            ws, ws.tuning, deps, body, choice.selected, create=choice.missing == 0)
    elif choice.missing == 0:
        observed.workload, observed.pods = await ensure_inference(ws, deps, choice.selected)
    conds = st.compute_conditions(ws, observed)
    await write_status(body, conds, choice.selected, deps)
    ready = conds[-1]
    return Outcome(ready=ready.status,
                   settled=ready.status or ready.reason == "TuningJobFailed")
