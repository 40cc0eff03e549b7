"""Pure parts of the gpu-provisioner: lifecycle steps, Node patches, settings, GC selection,
and the two kinds it serves (Machine, NodeClaim)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from kaito_operator.api.nodeclaim import NodeClaim
from kaito_operator.provisioner.errors import InvalidPoolParameters
from kaito_operator.provisioner.gc import orphans
from kaito_operator.provisioner.kinds import MACHINE_KIND, NODECLAIM_KIND, node_kinds
from kaito_operator.provisioner.lifecycle import (
    Launch,
    initialized,
    launched,
    lifecycle_status,
    node_patch,
    phase,
    ready,
    registered,
    status_changed,
    status_patch,
)
from kaito_operator.provisioner.operator import main
from kaito_operator.provisioner.pools import PoolState, pool_spec_from_machine
from kaito_operator.provisioner.reconcile import backoff
from kaito_operator.provisioner.settings import (
    SettingsError,
    parse_duration,
    settings_from_env,
)

NOW = "2024-06-01T10:00:00Z"
LATER = "2024-06-01T10:05:00Z"
ORDER = ["MachineLaunched", "MachineRegistered", "MachineInitialized", "Ready"]
M = MACHINE_KIND.conditions


def node(ready_: bool = True, gpus: str | None = "1", **extra) -> dict:
    alloc = {"cpu": "24"} | ({"nvidia.com/gpu": gpus} if gpus is not None else {})
    return {
        "metadata": {"name": "aks-m1-12345678-vmss000000",
                     "labels": {"kubernetes.azure.com/agentpool": "m1"}},
        "spec": {"providerID": "azure:///subscriptions/s/vm/0", **extra},
        "status": {
            "capacity": dict(alloc),
            "allocatable": alloc,
            "conditions": [{"type": "Ready", "status": "True" if ready_ else "False"}],
        },
    }


def statuses(status: dict) -> list[tuple[str, str, str]]:
    return [(c["type"], c["status"], c["reason"]) for c in status["conditions"]]


@pytest.mark.parametrize(
    ("launch", "observed", "gpus", "want"),
    [
        (Launch.pending("creating"), None, 1,
         ["Unknown", "Unknown", "Unknown", "Unknown"]),
        (Launch.failed("QuotaExceeded", "quota!"), None, 1,
         ["False", "Unknown", "Unknown", "False"]),
        (Launch.succeeded("m1"), None, 1, ["True", "Unknown", "Unknown", "Unknown"]),
        (Launch.succeeded("m1"), node(ready_=False), 1, ["True", "True", "Unknown", "Unknown"]),
        (Launch.succeeded("m1"), node(gpus="0"), 1, ["True", "True", "Unknown", "Unknown"]),
        (Launch.succeeded("m1"), node(gpus=None), 1, ["True", "True", "Unknown", "Unknown"]),
        (Launch.succeeded("m1"), node(gpus=None), 0, ["True", "True", "True", "True"]),
        (Launch.succeeded("m1"), node(), 1, ["True", "True", "True", "True"]),
        (Launch.pending("busy"), node(), 1, ["Unknown", "Unknown", "Unknown", "Unknown"]),
    ],
)
def test_steps_are_computed_in_order(launch, observed, gpus, want):
    status = lifecycle_status(M, None, "m1", launch, observed, gpus, NOW)
    assert [c["type"] for c in status["conditions"]] == ORDER
    assert [c["status"] for c in status["conditions"]] == want
    # a later step is True only when every earlier one is
    for index, cond in enumerate(status["conditions"]):
        if cond["status"] == "True":
            assert all(c["status"] == "True" for c in status["conditions"][:index])


def test_failure_carries_the_cloud_message_to_ready():
    status = lifecycle_status(M, None, "m1", Launch.failed("SkuNotAvailable", "no A100 here"),
                            None, 1, NOW)
    launched_, *_, ready_ = status["conditions"]
    assert launched_["reason"] == "SkuNotAvailable" and launched_["message"] == "no A100 here"
    assert ready_["status"] == "False" and ready_["message"] == "no A100 here"
    assert phase(M, status) == "Failed"


def test_registered_node_fills_provider_id_node_name_and_resources():
    status = lifecycle_status(M, None, "m1", Launch.succeeded("m1"), node(), 1, NOW)
    assert status["nodeName"] == "aks-m1-12345678-vmss000000"
    assert status["providerID"] == "azure:///subscriptions/s/vm/0"
    assert status["allocatable"]["nvidia.com/gpu"] == "1"
    assert status["capacity"]["cpu"] == "24"
    assert phase(M, status) == "Ready"


def test_gpu_step_names_the_shortfall():
    cond = initialized(M, registered(M, launched(M, Launch.succeeded("m1")), "m1", node()),
                       node(gpus="2"), 4)
    assert cond["reason"] == "GPUsNotAllocatable" and "2 of 4 nvidia.com/gpu" in cond["message"]
    missing = registered(M, launched(M, Launch.succeeded("m1")), "m1", None)
    assert missing["reason"] == "NodeNotFound"
    assert "kubernetes.azure.com/agentpool=m1" in missing["message"]


def test_transition_times_are_kept_while_the_status_holds():
    first = lifecycle_status(M, None, "m1", Launch.succeeded("m1"), None, 1, NOW)
    second = lifecycle_status(M, first, "m1", Launch.succeeded("m1"), node(), 1, LATER)
    times = {c["type"]: c["lastTransitionTime"] for c in second["conditions"]}
    assert times == {"MachineLaunched": NOW, "MachineRegistered": LATER,
                     "MachineInitialized": LATER, "Ready": LATER}
    again = lifecycle_status(M, second, "m1", Launch.succeeded("m1"), node(), 1, "2030-01-01T00:00:00Z")
    assert not status_changed(second, again)


def test_status_patch_removes_what_no_longer_holds():
    ready_status = lifecycle_status(M, None, "m1", Launch.succeeded("m1"), node(), 1, NOW)
    gone = lifecycle_status(M, ready_status, "m1", Launch.succeeded("m1"), None, 1, LATER)
    patch = status_patch(ready_status, gone)
    assert patch["nodeName"] is None and patch["providerID"] is None
    assert phase(M, gone) == "MachineLaunched"


def test_ready_summarises_the_first_pending_step():
    steps = [{"type": "MachineLaunched", "status": "True", "reason": "Launched", "message": ""},
             {"type": "MachineRegistered", "status": "Unknown", "reason": "NodeNotFound",
              "message": "waiting"}]
    assert ready(M, steps)["reason"] == "NodeNotFound"
    assert phase(M, None) == "Pending"


def test_node_patch_copies_labels_and_taints_once():
    machine = {"metadata": {"labels": {"apps": "phi-3", "kaito.sh/workspace": "ws"}},
               "spec": {"taints": [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}]}}
    existing = {"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}
    target = node(taints=[existing])
    patch = node_patch(machine, target)
    assert patch == {
        "metadata": {"labels": {"apps": "phi-3", "kaito.sh/workspace": "ws"}},
        "spec": {"taints": [existing, {"key": "sku", "value": "gpu", "effect": "NoSchedule"}]},
    }
    target["metadata"]["labels"].update(patch["metadata"]["labels"])
    target["spec"]["taints"] = patch["spec"]["taints"]
    assert node_patch(machine, target) is None


ENV = {
    "ARM_SUBSCRIPTION_ID": "00000000-0000-0000-0000-000000000001",
    "ARM_RESOURCE_GROUP": "rg",
    "AZURE_CLUSTER_NAME": "aks",
    "LOCATION": "eastus",
}


def test_settings_from_env_reads_every_variable():
    settings = settings_from_env(ENV | {
        "AZURE_TENANT_ID": "t", "AZURE_CLIENT_ID": "c", "ARM_ENDPOINT": "https://arm.local:8443",
        "PROVISIONER_GC_GRACE_PERIOD": "10m", "PROVISIONER_POLL_INTERVAL": "250ms",
        "PROVISIONER_MAX_WORKERS": "5",
    })
    assert (settings.subscription_id, settings.resource_group, settings.cluster_name,
            settings.location) == (ENV["ARM_SUBSCRIPTION_ID"], "rg", "aks", "eastus")
    assert (settings.tenant_id, settings.client_id) == ("t", "c")
    assert settings.arm_endpoint == "https://arm.local:8443"
    assert settings.gc_grace_seconds == 600 and settings.poll_seconds == 0.25
    assert settings.max_workers == 5


@pytest.mark.parametrize(
    ("changes", "names"),
    [
        ({"ARM_RESOURCE_GROUP": ""}, ["ARM_RESOURCE_GROUP"]),
        ({"LOCATION": None, "AZURE_CLUSTER_NAME": None}, ["AZURE_CLUSTER_NAME", "LOCATION"]),
        ({"ARM_SUBSCRIPTION_ID": "my-sub"}, ["ARM_SUBSCRIPTION_ID"]),
        ({"ARM_ENDPOINT": "http://plain"}, ["ARM_ENDPOINT"]),
        ({"PROVISIONER_GC_GRACE_PERIOD": "soon"}, ["PROVISIONER_GC_GRACE_PERIOD"]),
        ({"PROVISIONER_POLL_INTERVAL": "0"}, ["PROVISIONER_POLL_INTERVAL"]),
        ({"PROVISIONER_MAX_WORKERS": "0"}, ["PROVISIONER_MAX_WORKERS"]),
        ({"PROVISIONER_NODE_KIND": "karpenter"}, ["PROVISIONER_NODE_KIND"]),
    ],
)
def test_settings_errors_name_the_variable(changes, names):
    env = {k: v for k, v in (ENV | changes).items() if v is not None}
    with pytest.raises(SettingsError) as info:
        settings_from_env(env)
    for name in names:
        assert name in str(info.value)


@pytest.mark.parametrize(("text", "seconds"),
                         [("30", 30), ("0.5", 0.5), ("90s", 90), ("10m", 600), ("1h", 3600),
                          ("250ms", 0.25)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


def test_gc_selects_only_our_old_orphans():
    now = datetime(2024, 6, 1, tzinfo=UTC)
    ours = {"kaito.sh/machine-type": "gpu", "kaito.sh/creation-timestamp": "x"}

    def pool(name, age=None, labels=ours, state="Succeeded"):
        created = now - timedelta(seconds=age) if age is not None else None
        return PoolState(name, state, node_labels=labels, created_at=created)

    pools = [
        pool("old", 3600), pool("young", 10), pool("machine", 3600), pool("unreadable"),
        pool("deleting", 3600, state="Deleting"), pool("system", 3600, labels={}),
        pool("failed", 3600, state="Failed"),
    ]
    assert orphans(pools, {"machine"}, now, timedelta(seconds=600)) == ["failed", "old"]


def test_backoff_honours_retry_after_and_is_capped():
    assert backoff(0, 5, 300, 7.0) == 7.0
    assert [backoff(n, 5, 300, None) for n in range(8)] == [5, 10, 20, 40, 80, 160, 300, 300]


def test_main_names_the_missing_variables(monkeypatch, capsys):
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    assert main(["--metrics-port", "0", "--liveness", ""]) == 2
    out = capsys.readouterr().out
    assert all(name in out for name in ENV)


# -- NodeClaims ----------------------------------------------------------------------------------

N = NODECLAIM_KIND.conditions
UPSTREAM = Path(__file__).resolve().parents[2].parent / "shared" / "karpenter"
#: metav1.Condition's reason pattern, as upstream's NodeClaim CRD has it (non-empty here).
REASON = re.compile(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")


def nodeclaim_body(name: str = "ws1a2b3c4d", **spec: object) -> dict:
    return {
        "apiVersion": "karpenter.sh/v1",
        "kind": "NodeClaim",
        "metadata": {"name": name, "labels": {"kaito.sh/workspace": "phi", "apps": "phi-3",
                                              "karpenter.sh/nodepool": "kaito"}},
        "spec": {
            "requirements": [
                {"key": "node.kubernetes.io/instance-type", "operator": "In",
                 "values": ["Standard_NC24ads_A100_v4"]},
                {"key": "karpenter.sh/nodepool", "operator": "In", "values": ["kaito"]},
                {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
            ],
            "resources": {"requests": {"storage": "120Gi"}},
            "taints": [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}],
            "nodeClassRef": {"group": "karpenter.azure.com", "kind": "AKSNodeClass",
                             "name": "default"},
            **spec,
        },
    }


def test_node_kinds_describe_both_kinds():
    assert node_kinds("machine") == (MACHINE_KIND, NODECLAIM_KIND)
    served, other = node_kinds("nodeclaim")
    assert (served, other) == (NODECLAIM_KIND, MACHINE_KIND)
    assert served.resource == ("karpenter.sh", "v1", "nodeclaims")
    assert other.resource == ("karpenter.sh", "v1alpha5", "machines")
    assert N.order == ("Launched", "Registered", "Initialized", "Ready")
    assert M.order == tuple(ORDER)


def test_settings_node_kind_defaults_to_machine():
    assert settings_from_env(ENV).node_kind == "machine"
    assert settings_from_env(ENV | {"PROVISIONER_NODE_KIND": "nodeclaim"}).node_kind == "nodeclaim"
    assert settings_from_env(ENV | {"PROVISIONER_NODE_KIND": " NodeClaim "}).node_kind == (
        "nodeclaim")
    with pytest.raises(SettingsError, match="PROVISIONER_NODE_KIND must be one of machine, "
                                            "nodeclaim, got 'Machines'"):
        settings_from_env(ENV | {"PROVISIONER_NODE_KIND": "Machines"})


NODECLAIM_CASES = {
    "pending": (Launch.pending("agent pool ws1 is being created"), None, 1),
    "auth": (Launch.pending("check AZURE_CLIENT_ID", "AuthenticationFailed"), None, 1),
    "failed": (Launch.failed("QuotaExceeded", "Operation could not be completed: quota"), None, 1),
    "launched": (Launch.succeeded("ws1"), None, 1),
    "not ready": (Launch.succeeded("ws1"), node(ready_=False), 1),
    "no gpus": (Launch.succeeded("ws1"), node(gpus="0"), 1),
    "ready": (Launch.succeeded("ws1"), node(), 1),
}


@pytest.mark.parametrize("case", sorted(NODECLAIM_CASES))
def test_nodeclaim_status_has_upstream_conditions(case):
    launch, observed, gpus = NODECLAIM_CASES[case]
    status = lifecycle_status(N, None, "ws1", launch, observed, gpus, NOW)
    assert [c["type"] for c in status["conditions"]] == list(N.order)
    for cond in status["conditions"]:
        assert set(cond) == {"type", "status", "reason", "message", "lastTransitionTime"}
        assert REASON.match(cond["reason"]), cond
    NodeClaim.model_validate(nodeclaim_body() | {"status": status})  # our model takes it
    if not UPSTREAM.is_dir():
        pytest.skip(f"Karpenter's published CRDs are not at {UPSTREAM} (checked out elsewhere)")
    from tests.support.crd_check import admit

    crd = yaml.safe_load((UPSTREAM / "karpenter.sh_nodeclaims.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    assert admit(schema, status) == []


def test_nodeclaim_failure_and_phases():
    status = lifecycle_status(N, None, "ws1", Launch.failed("SkuNotAvailable", "no A100 here"),
                              None, 1, NOW)
    assert phase(N, status) == "Failed" and phase(M, status) == "Pending"
    ready_ = lifecycle_status(N, None, "ws1", Launch.succeeded("ws1"), node(), 1, NOW)
    assert phase(N, ready_) == "Ready" and ready_["conditions"][3]["reason"] == "Ready"


def test_pool_spec_from_a_nodeclaim_follows_the_machine_rules():
    claim = NodeClaim.model_validate(nodeclaim_body())
    spec = pool_spec_from_machine(claim, datetime(2024, 6, 1, tzinfo=UTC))
    assert (spec.name, spec.vm_size, spec.os_disk_size_gb) == (
        "ws1a2b3c4d", "Standard_NC24ads_A100_v4", 120)
    assert spec.node_taints == ("sku=gpu:NoSchedule",)
    assert spec.node_labels["apps"] == "phi-3" and spec.node_labels["kaito.sh/machine-type"] == (
        "gpu")
    assert spec.node_labels["kaito.sh/creation-timestamp"] == "20240601T000000Z"
    with pytest.raises(InvalidPoolParameters, match="NodeClaim name 'Ws-1' cannot name"):
        pool_spec_from_machine(NodeClaim.model_validate(nodeclaim_body("Ws-1")), datetime.now(UTC))
    no_type = nodeclaim_body(requirements=[{"key": "kubernetes.io/os", "operator": "In",
                                            "values": ["linux"]}])
    with pytest.raises(InvalidPoolParameters, match="NodeClaim ws1a2b3c4d has no"):
        pool_spec_from_machine(NodeClaim.model_validate(no_type), datetime.now(UTC))
