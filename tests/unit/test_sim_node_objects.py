"""The simulated cluster's node objects (pure): the Nodes it registers for Machines and
NodeClaims, and the statuses it writes for them."""

from __future__ import annotations

from kaito_sandbox.sim.node_objects import (
    MACHINES,
    NODECLAIMS,
    gpu_node,
    instance_type,
    joined_status,
    launch_failed,
    launch_failed_status,
    node_for,
)

CLAIM = {
    "apiVersion": "karpenter.sh/v1",
    "kind": "NodeClaim",
    "metadata": {"name": "ws0123abcde", "labels": {"apps": "phi-3", "kaito.sh/workspace": "w",
                                                   "karpenter.sh/nodepool": "kaito"}},
    "spec": {
        "requirements": [
            {"key": "karpenter.sh/nodepool", "operator": "In", "values": ["kaito"]},
            {"key": "node.kubernetes.io/instance-type", "operator": "In",
             "values": ["Standard_NC12s_v3"]},
        ],
        "taints": [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}],
    },
}


def test_gpu_node_is_ready_with_gpus_and_the_instance_type():
    node = gpu_node("n1", "Standard_NC6s_v3", 1, {"apps": "phi-3"})
    labels = node["metadata"]["labels"]
    assert labels == {"apps": "phi-3", "node.kubernetes.io/instance-type": "Standard_NC6s_v3",
                      "kubernetes.io/os": "linux", "kubernetes.io/hostname": "n1"}
    assert node["status"]["capacity"]["nvidia.com/gpu"] == "1"
    assert node["status"]["allocatable"] == node["status"]["capacity"]
    (ready,) = node["status"]["conditions"]
    assert (ready["type"], ready["status"]) == ("Ready", "True")
    assert "taints" not in node["spec"]


def test_node_for_a_nodeclaim_copies_labels_and_taints_and_names_the_claim():
    assert instance_type(CLAIM) == "Standard_NC12s_v3"
    node = node_for(NODECLAIMS, CLAIM, 2)
    labels = node["metadata"]["labels"]
    assert labels["kaito.sh/nodeclaim"] == "ws0123abcde"
    assert "kaito.sh/machine" not in labels
    assert labels["apps"] == "phi-3" and labels["karpenter.sh/nodepool"] == "kaito"
    assert labels["karpenter.sh/registered"] == "true"
    assert node["spec"]["taints"] == CLAIM["spec"]["taints"]
    assert node["status"]["capacity"]["nvidia.com/gpu"] == "2"
    machine_node = node_for(MACHINES, CLAIM, 2)
    assert machine_node["metadata"]["labels"]["kaito.sh/machine"] == "ws0123abcde"


def test_joined_status_has_each_kinds_lifecycle_with_reasons():
    node = node_for(NODECLAIMS, CLAIM, 2)
    status = joined_status(NODECLAIMS, node)
    assert status["nodeName"] == node["metadata"]["name"]
    assert status["providerID"] == node["spec"]["providerID"]
    assert [c["type"] for c in status["conditions"]] == [
        "Launched", "Registered", "Initialized", "Ready"]
    assert all(c["status"] == "True" and c["reason"] and c["lastTransitionTime"]
               for c in status["conditions"])
    assert [c["type"] for c in joined_status(MACHINES, node)["conditions"]] == [
        "MachineLaunched", "MachineRegistered", "MachineInitialized", "Ready"]


def test_launch_failure_is_the_kinds_launch_condition():
    failed = launch_failed_status(NODECLAIMS, "InsufficientCapacity")
    (cond,) = failed["conditions"]
    assert (cond["type"], cond["status"], cond["reason"]) == ("Launched", "False", "LaunchFailed")
    assert cond["message"] == "InsufficientCapacity"
    assert launch_failed(NODECLAIMS, failed)
    assert not launch_failed(MACHINES, failed)
    assert launch_failed(MACHINES, launch_failed_status(MACHINES, "quota"))
