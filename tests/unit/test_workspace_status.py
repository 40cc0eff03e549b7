"""Conditions computed from observed state."""

from __future__ import annotations

from kaito_operator.api.workspace import Workspace
from kaito_operator.workspace.nodes import NodeChoice
from kaito_operator.workspace.provisioning.machine import machine_view
from kaito_operator.workspace.provisioning.nodeclaim import nodeclaim_view
from kaito_operator.workspace.reconcile import FAILURE_REASONS
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


def _raw(name, conds):
    return {"metadata": {"name": name}, "status": {"conditions": [
        {"type": t, "status": s, **({"message": m} if m else {})} for t, s, m in conds]}}


def machine(name, *conds):
    return machine_view(_raw(name, conds))


def nodeclaim(name, *conds):
    return nodeclaim_view(_raw(name, conds))


def deployment(ready, replicas=1, generation=1, observed=1):
    return {"metadata": {"generation": generation}, "spec": {"replicas": replicas},
            "status": {"readyReplicas": ready, "updatedReplicas": replicas,
                       "observedGeneration": observed}}


def by_type(conds):
    return {c.type: c for c in conds}


def test_ready_when_everything_is_ready():
    obs = Observed(owned=[machine("m", ("Ready", "True", None))], machines_wanted=1,
                   nodes=NodeChoice(["n"], 0), workload=deployment(1))
    conds = by_type(compute_conditions(WS, obs))
    assert [conds[t].status for t in ("MachineReady", "ResourceReady", "InferenceReady",
                                      "WorkspaceReady")] == [True] * 4


def test_provisioning():
    obs = Observed(owned=[machine("m")], machines_wanted=1, nodes=NodeChoice([], 1))
    conds = by_type(compute_conditions(WS, obs))
    assert conds["MachineReady"].reason == "MachinesProvisioning"
    assert conds["ResourceReady"].message == "0 of 1 qualified node(s) ready"
    assert conds["InferenceReady"].reason == "WaitingForNodes"
    assert conds["WorkspaceReady"].reason == "NodesNotReady"


def test_machine_failure_is_surfaced_up_to_workspace_ready():
    failed = machine("m", ("MachineLaunched", "False", "SkuNotAvailable: not in eastus"))
    obs = Observed(owned=[failed], machines_wanted=1, nodes=NodeChoice([], 1))
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


# -- node-provisioning modes -------------------------------------------------------------------

def types(conds):
    return [c.type for c in conds]


def test_machine_mode_messages_are_as_before():
    obs = Observed(owned=[machine("m", ("Ready", "True", None))], machines_wanted=2,
                   nodes=NodeChoice(["n"], 1))
    conds = by_type(compute_conditions(WS, obs))
    assert conds["MachineReady"].message == "1 of 2 machine(s) ready"
    failed = machine("m", ("MachineLaunched", "False", "quota"))
    conds = by_type(compute_conditions(WS, Observed(owned=[failed], machines_wanted=1,
                                                    nodes=NodeChoice([], 1))))
    assert conds["MachineReady"].message == "machine m: quota"
    conds = by_type(compute_conditions(WS, Observed(nodes=NodeChoice(["n"], 0))))
    assert (conds["MachineReady"].reason, conds["MachineReady"].message) == (
        "NoMachinesNeeded", "existing nodes are used")


def test_nodeclaim_mode_reports_nodeclaim_ready():
    provisioning = Observed(owned=[nodeclaim("c", ("Launched", "True", None))], machines_wanted=1,
                            nodes=NodeChoice([], 1), mode="nodeclaim")
    conds = compute_conditions(WS, provisioning)
    assert types(conds) == ["NodeClaimReady", "ResourceReady", "InferenceReady",
                            "WorkspaceReady"]
    assert (conds[0].status, conds[0].reason, conds[0].message) == (
        False, "NodeClaimsProvisioning", "0 of 1 NodeClaim(s) ready")
    assert conds[1].reason == "NodesNotReady"
    ready = Observed(owned=[nodeclaim("c", ("Ready", "True", None))], machines_wanted=1,
                     nodes=NodeChoice(["n"], 0), workload=deployment(1), mode="nodeclaim")
    conds = by_type(compute_conditions(WS, ready))
    assert (conds["NodeClaimReady"].reason, conds["NodeClaimReady"].message) == (
        "NodeClaimsReady", "1 NodeClaim(s) ready")
    assert conds["WorkspaceReady"].status is True
    none_needed = Observed(nodes=NodeChoice(["n"], 0), mode="nodeclaim")
    assert by_type(compute_conditions(WS, none_needed))["NodeClaimReady"].reason == (
        "NoNodeClaimsNeeded")


def test_nodeclaim_launch_failure_is_surfaced_up_to_workspace_ready():
    failed = nodeclaim("wsabc", ("Launched", "False", "InsufficientCapacity: no NC6s_v3 in eastus"))
    obs = Observed(owned=[failed], machines_wanted=1, nodes=NodeChoice([], 1), mode="nodeclaim")
    conds = by_type(compute_conditions(WS, obs))
    message = "NodeClaim wsabc: InsufficientCapacity: no NC6s_v3 in eastus"
    for kind in ("NodeClaimReady", "ResourceReady", "WorkspaceReady"):
        assert (conds[kind].status, conds[kind].reason, conds[kind].message) == (
            False, "NodeClaimFailed", message), kind


def test_objects_of_the_other_kind_count_after_a_switch():
    left = machine("wsold", ("Ready", "True", None))
    new = nodeclaim("wsnew")
    obs = Observed(owned=[left, new], machines_wanted=2, nodes=NodeChoice(["n1"], 1),
                   mode="nodeclaim")
    cond = compute_conditions(WS, obs)[0]
    assert (cond.type, cond.reason) == ("NodeClaimReady", "NodeClaimsProvisioning")
    assert cond.message == ("1 of 2 node object(s) ready "
                            "(machine wsold (ready), NodeClaim wsnew (not ready))")
    # A failure of the other kind is the mode's failure, naming the object's kind.
    failed = nodeclaim("wsnew", ("Launched", "False", "quota exceeded"))
    obs = Observed(owned=[left, failed], machines_wanted=2, nodes=NodeChoice(["n1"], 1))
    conds = by_type(compute_conditions(WS, obs))
    assert (conds["MachineReady"].reason, conds["MachineReady"].message) == (
        "MachineFailed", "NodeClaim wsnew: quota exceeded")
    assert conds["WorkspaceReady"].reason == "MachineFailed"


def test_none_mode_has_no_node_object_condition():
    obs = Observed(nodes=NodeChoice(["n1", "n2"], 0), workload=deployment(1), mode="none")
    conds = compute_conditions(WS, obs)
    assert types(conds) == ["ResourceReady", "InferenceReady", "WorkspaceReady"]
    assert all(c.status for c in conds)


def test_none_mode_says_how_many_nodes_and_which_labels_are_missing():
    ws = Workspace.model_validate(inference_workspace(instance_type="Standard_NC12s_v3") | {
        "resource": {"instanceType": "Standard_NC12s_v3", "count": 2,
                     "labelSelector": {"matchLabels": {"apps": "phi-3"}}}})
    obs = Observed(nodes=NodeChoice(["n1"], 1), mode="none")
    conds = by_type(compute_conditions(ws, obs))
    resource = conds["ResourceReady"]
    assert (resource.status, resource.reason) == (False, "InsufficientNodes")
    assert resource.message == (
        "found 1 qualified node(s), need 2: add the labels apps=phi-3 and "
        "node.kubernetes.io/instance-type=Standard_NC12s_v3 to Ready GPU nodes, or name them "
        "in resource.preferredNodes")
    assert conds["WorkspaceReady"].reason == "InsufficientNodes"
    assert conds["InferenceReady"].reason == "WaitingForNodes"
    assert "MachineReady" not in conds and "NodeClaimReady" not in conds


def test_node_failures_are_warnings():
    assert {"MachineFailed", "NodeClaimFailed", "InsufficientNodes"} <= FAILURE_REASONS
