"""Conditions computed from observed state."""

from __future__ import annotations

from kaito_operator.api.machine import Machine
from kaito_operator.api.workspace import Workspace
from kaito_operator.workspace.nodes import NodeChoice
from kaito_operator.workspace.status import (
    Cond,
    Observed,
    compute_conditions,
    pod_problem,
    render_conditions,
    transitions,
)
from tests.factories import inference_workspace

WS = Workspace.model_validate(inference_workspace())


def machine(name, *conds):
    return Machine.model_validate({"metadata": {"name": name}, "status": {"conditions": [
        {"type": t, "status": s, **({"message": m} if m else {})} for t, s, m in conds]}})


def deployment(ready, replicas=1, generation=1, observed=1):
    return {"metadata": {"generation": generation}, "spec": {"replicas": replicas},
            "status": {"readyReplicas": ready, "updatedReplicas": replicas,
                       "observedGeneration": observed}}


def by_type(conds):
    return {c.type: c for c in conds}


def test_ready_when_everything_is_ready():
    obs = Observed(machines=[machine("m", ("Ready", "True", None))], machines_wanted=1,
                   nodes=NodeChoice(["n"], 0), workload=deployment(1))
    conds = by_type(compute_conditions(WS, obs))
    assert [conds[t].status for t in ("MachineReady", "ResourceReady", "InferenceReady",
                                      "WorkspaceReady")] == [True] * 4


def test_provisioning():
    obs = Observed(machines=[machine("m")], machines_wanted=1, nodes=NodeChoice([], 1))
    conds = by_type(compute_conditions(WS, obs))
    assert conds["MachineReady"].reason == "MachinesProvisioning"
    assert conds["ResourceReady"].message == "0 of 1 qualified node(s) ready"
    assert conds["InferenceReady"].reason == "WaitingForNodes"
    assert conds["WorkspaceReady"].reason == "NodesNotReady"


def test_machine_failure_is_surfaced_up_to_workspace_ready():
    failed = machine("m", ("MachineLaunched", "False", "SkuNotAvailable: not in eastus"))
    obs = Observed(machines=[failed], machines_wanted=1, nodes=NodeChoice([], 1))
    conds = by_type(compute_conditions(WS, obs))
    assert conds["WorkspaceReady"].reason == "MachineFailed"
    assert "SkuNotAvailable: not in eastus" in conds["WorkspaceReady"].message


def test_rollout_in_progress_is_not_ready():
    obs = Observed(nodes=NodeChoice(["n"], 0), workload=deployment(1, generation=2, observed=1))
    assert by_type(compute_conditions(WS, obs))["InferenceReady"].status is False


def pod(**container_state):
    return {"metadata": {"name": "p"}, "status": {"containerStatuses": [
        {"name": "inference", **container_state}]}}


def test_pod_problems():
    assert pod_problem(pod(state={"running": {}})) is None
    reason, message = pod_problem(pod(state={"waiting": {"reason": "ImagePullBackOff",
                                                         "message": "not found"}}))
    assert reason == "ImagePullBackOff" and message == (
        "pod p: container inference: ImagePullBackOff: not found")
    oom = pod(state={"waiting": {"reason": "CrashLoopBackOff"}},
              lastState={"terminated": {"reason": "OOMKilled"}})
    assert pod_problem(oom)[0] == "OOMKilled"
    unschedulable = {"metadata": {"name": "p"}, "status": {"conditions": [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
         "message": "0/3 nodes have nvidia.com/gpu"}]}}
    assert pod_problem(unschedulable) == ("Unschedulable", "pod p: 0/3 nodes have nvidia.com/gpu")


def test_invalid_workspace_has_one_condition():
    (cond,) = compute_conditions(None, Observed(invalid="resource.count: bad"))
    assert (cond.type, cond.status, cond.reason) == ("WorkspaceReady", False, "InvalidWorkspace")


def test_render_keeps_transition_time_while_status_holds():
    previous = [{"type": "ResourceReady", "status": "False", "reason": "NodesNotReady",
                 "lastTransitionTime": "T0"}]
    same = render_conditions([Cond("ResourceReady", False, "NodesNotReady", "m")], previous, 3, "T1")
    assert same[0]["lastTransitionTime"] == "T0" and same[0]["observedGeneration"] == 3
    flipped = render_conditions([Cond("ResourceReady", True, "NodesReady", "m")], previous, 3, "T1")
    assert flipped[0]["lastTransitionTime"] == "T1"
    assert transitions(previous, flipped) == flipped
    assert transitions(previous, same) == []


def test_long_messages_are_truncated():
    (out,) = render_conditions([Cond("X", False, "R", "m" * 5000)], [], 1, "T")
    assert len(out["message"]) == 1024 and out["message"].endswith("...")
