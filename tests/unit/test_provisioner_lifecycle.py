"""Pure parts of the gpu-provisioner: lifecycle steps, Node patches, settings, GC selection."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from kaito_operator.provisioner.gc import orphans
from kaito_operator.provisioner.lifecycle import (
    Launch,
    initialized,
    launched,
    machine_status,
    node_patch,
    phase,
    ready,
    registered,
    status_changed,
    status_patch,
)
from kaito_operator.provisioner.operator import main
from kaito_operator.provisioner.pools import PoolState
from kaito_operator.provisioner.reconcile import backoff
from kaito_operator.provisioner.settings import (
    SettingsError,
    parse_duration,
    settings_from_env,
)

NOW = "2024-06-01T10:00:00Z"
LATER = "2024-06-01T10:05:00Z"
ORDER = ["MachineLaunched", "MachineRegistered", "MachineInitialized", "Ready"]


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
    status = machine_status(None, "m1", launch, observed, gpus, NOW)
    assert [c["type"] for c in status["conditions"]] == ORDER
    assert [c["status"] for c in status["conditions"]] == want
    # a later step is True only when every earlier one is
    for index, cond in enumerate(status["conditions"]):
        if cond["status"] == "True":
            assert all(c["status"] == "True" for c in status["conditions"][:index])


def test_failure_carries_the_cloud_message_to_ready():
    status = machine_status(None, "m1", Launch.failed("SkuNotAvailable", "no A100 here"),
                            None, 1, NOW)
    launched_, *_, ready_ = status["conditions"]
    assert launched_["reason"] == "SkuNotAvailable" and launched_["message"] == "no A100 here"
    assert ready_["status"] == "False" and ready_["message"] == "no A100 here"
    assert phase(status) == "Failed"


def test_registered_node_fills_provider_id_node_name_and_resources():
    status = machine_status(None, "m1", Launch.succeeded("m1"), node(), 1, NOW)
    assert status["nodeName"] == "aks-m1-12345678-vmss000000"
    assert status["providerID"] == "azure:///subscriptions/s/vm/0"
    assert status["allocatable"]["nvidia.com/gpu"] == "1"
    assert status["capacity"]["cpu"] == "24"
    assert phase(status) == "Ready"


def test_gpu_step_names_the_shortfall():
    cond = initialized(registered(launched(Launch.succeeded("m1")), "m1", node()), node(gpus="2"),
                       4)
    assert cond["reason"] == "GPUsNotAllocatable" and "2 of 4 nvidia.com/gpu" in cond["message"]
    missing = registered(launched(Launch.succeeded("m1")), "m1", None)
    assert missing["reason"] == "NodeNotFound"
    assert "kubernetes.azure.com/agentpool=m1" in missing["message"]


def test_transition_times_are_kept_while_the_status_holds():
    first = machine_status(None, "m1", Launch.succeeded("m1"), None, 1, NOW)
    second = machine_status(first, "m1", Launch.succeeded("m1"), node(), 1, LATER)
    times = {c["type"]: c["lastTransitionTime"] for c in second["conditions"]}
    assert times == {"MachineLaunched": NOW, "MachineRegistered": LATER,
                     "MachineInitialized": LATER, "Ready": LATER}
    again = machine_status(second, "m1", Launch.succeeded("m1"), node(), 1, "2030-01-01T00:00:00Z")
    assert not status_changed(second, again)


def test_status_patch_removes_what_no_longer_holds():
    ready_status = machine_status(None, "m1", Launch.succeeded("m1"), node(), 1, NOW)
    gone = machine_status(ready_status, "m1", Launch.succeeded("m1"), None, 1, LATER)
    patch = status_patch(ready_status, gone)
    assert patch["nodeName"] is None and patch["providerID"] is None
    assert phase(gone) == "MachineLaunched"


def test_ready_summarises_the_first_pending_step():
    steps = [{"type": "MachineLaunched", "status": "True", "reason": "Launched", "message": ""},
             {"type": "MachineRegistered", "status": "Unknown", "reason": "NodeNotFound",
              "message": "waiting"}]
    assert ready(steps)["reason"] == "NodeNotFound"
    assert phase(None) == "Pending"


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
