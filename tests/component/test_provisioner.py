"""The real gpu-provisioner serving Machines (kopf over HTTP) against the API emulator, the real
Azure SDK against the simulated ARM over https, and a simulated AKS that turns Succeeded pools
into Nodes (fixtures and helpers: tests/component/provisioner_fixtures.py).

Every test gets its own emulator, ARM simulator and AKS.  Loopback only, bounded waits only,
short intervals from the settings.
"""

from __future__ import annotations

import random
import time

import httpx
import pytest

from kaito_operator.provisioner.handlers import FINALIZER
from kaito_sandbox.sim.aks import SimulatedAks
from kaito_sandbox.sim.arm import Fault
from tests.component import provisioner_fixtures as fixtures
from tests.component.provisioner_fixtures import (
    CLUSTER,
    HANG,
    MACHINES,
    NODES,
    RG,
    SKU,
    SUB,
    Provisioners,  # noqa: F401 - test_rbac.py uses it through this module
    arm_answers,
    conditions,
    create_machine,
    events_for,
    get_machine,
    gpus_of,
    inject_plan,
    new_name,
    our_pools,
    puts,
    soak_outcome,
    soak_plan,
    wait_condition,
    wait_for,
)

#: The fixtures, bound here so pytest finds them (and tests/component/test_rbac.py can use the
#: helpers above through this module).
api, http, arm, aks, provisioners = (fixtures.api, fixtures.http, fixtures.arm, fixtures.aks,
                                     fixtures.provisioners)

ORDER = ("MachineLaunched", "MachineRegistered", "MachineInitialized", "Ready")


def test_machine_becomes_ready_with_conditions_in_order(api, http, arm, provisioners):
    with SimulatedAks(api.url, arm, gpus_of, apply_pool_labels=False):
        provisioners.start()
        name = new_name()
        create_machine(http, name)
        wait_condition(http, name, "Ready", "True")
    machine = get_machine(http, name)
    status = machine["status"]
    node = http.get(f"{NODES}/{status['nodeName']}").json()
    assert status["nodeName"].startswith(f"aks-{name}-") and status["nodeName"].endswith("vmss000000")
    assert status["providerID"] == node["spec"]["providerID"]
    assert status["providerID"].startswith("azure:///subscriptions/")
    assert status["allocatable"]["nvidia.com/gpu"] == "1"
    assert status["capacity"]["nvidia.com/gpu"] == "1"
    assert [c["type"] for c in status["conditions"]] == list(ORDER)
    times = [c["lastTransitionTime"] for c in status["conditions"]]
    assert times == sorted(times)
    # the provisioner copied the Machine's labels and taints onto the Node
    assert node["metadata"]["labels"]["apps"] == "phi-3"
    assert node["metadata"]["labels"]["kaito.sh/workspace"] == "phi"
    assert {"key": "sku", "value": "gpu", "effect": "NoSchedule"} in node["spec"]["taints"]
    assert FINALIZER in machine["metadata"]["finalizers"]
    # the pool as docs/design.md §4 asks for it, created with exactly one PUT
    pool = arm.pools()[name]["properties"]
    assert pool["vmSize"] == SKU and pool["count"] == 1 and pool["mode"] == "User"
    assert pool["osType"] == "Linux" and pool["osDiskSizeGB"] == 120
    assert pool["nodeTaints"] == ["sku=gpu:NoSchedule"]
    assert pool["nodeLabels"]["apps"] == "phi-3" and "kaito.sh/creation-timestamp" in pool[
        "nodeLabels"]
    assert len(puts(arm, name)) == 1
    metrics = provisioners.running[0].runtime.metrics
    assert metrics.arm.value("create", "201") == 1
    assert metrics.registry.get_sample_value("kaito_provisioner_machines",
                                             {"condition": "Ready"}) == 1


def versions(http: httpx.Client, name: str, since: str) -> list[dict]:
    """Every version of the Machine written after resourceVersion ``since`` (watch replay)."""
    params = {"watch": "true", "resourceVersion": since, "timeoutSeconds": "1",
              "fieldSelector": f"metadata.name={name}"}
    seen = []
    with http.stream("GET", MACHINES, params=params) as response:
        for line in response.iter_lines():
            if line.strip():
                seen.append(httpx.Response(200, content=line).json()["object"])
    return seen


def test_conditions_are_never_seen_out_of_order(api, http, arm, aks, provisioners):
    provisioners.start()
    name = new_name()
    created = create_machine(http, name)
    wait_condition(http, name, "Ready", "True")
    history = versions(http, name, created["metadata"]["resourceVersion"])
    first_true: dict[str, int] = {}
    for index, version in enumerate(history):
        conds = conditions(version)
        for position, type_ in enumerate(ORDER):
            if conds.get(type_, {}).get("status") == "True":
                first_true.setdefault(type_, index)
                earlier = ORDER[:position]
                assert all(conds[e]["status"] == "True" for e in earlier), (type_, conds)
    assert list(first_true) == list(ORDER)
    assert sorted(first_true.values()) == list(first_true.values())


def test_restart_mid_create_adopts_the_same_pool(api, http, arm, aks, provisioners):
    arm.lro_polls = None  # the pool stays Creating until the test lets it finish
    first = provisioners.start()
    name = new_name()
    create_machine(http, name)
    wait_for(lambda: arm.pools().get(name), what="the PUT")
    wait_condition(http, name, "MachineLaunched", "Unknown")
    first.stop()
    created_at = arm.pools()[name]["properties"]["nodeLabels"]["kaito.sh/creation-timestamp"]
    arm.lro_polls = 2
    provisioners.start()
    wait_condition(http, name, "Ready", "True")
    assert len(puts(arm, name)) == 1
    assert list(our_pools(arm)) == [name]
    assert our_pools(arm)[name]["properties"]["nodeLabels"][
        "kaito.sh/creation-timestamp"] == created_at


PERMANENT = {
    "quota": (Fault.quota, "QuotaExceeded", "exceeding approved standardNCADSA100v4Family"),
    "sku": (Fault.sku_not_available, "SkuNotAvailable", "currently not available in location"),
    "invalid": (Fault.invalid_parameter, "InvalidPoolParameters", "properties.vmSize is invalid"),
    "allocation": (Fault.failed_operation, "SkuNotAvailable", "Allocation failed"),
}


@pytest.mark.parametrize("kind", sorted(PERMANENT))
def test_permanent_faults_fail_the_machine_once(api, http, arm, aks, provisioners, kind):
    make, reason, message = PERMANENT[kind]
    name = new_name()
    arm.inject("put", make(times=None), pool=name)  # would fail every time it were retried
    provisioners.start()
    create_machine(http, name)

    def failed() -> dict[str, dict] | None:
        conds = conditions(get_machine(http, name))  # one read: both from the same version
        launched, ready = conds.get("MachineLaunched"), conds.get("Ready")
        return conds if launched and launched["status"] == "False" and ready and ready[
            "status"] == "False" else None

    conds = wait_for(failed, what="MachineLaunched=False and Ready=False")
    launched, ready = conds["MachineLaunched"], conds["Ready"]
    assert launched["reason"] == reason and message in launched["message"]
    assert message in ready["message"]
    warnings = wait_for(lambda: [e for e in events_for(http, name) if e["type"] == "Warning"],
                        what="a Warning Event")
    assert message in warnings[0]["message"]
    calls = len(arm.calls)
    time.sleep(0.6)  # six poll intervals: nothing more may be asked of ARM for this Machine
    assert [c for c in arm.calls[calls:] if c.pool == name] == []
    assert len(puts(arm, name)) == 1
    http.delete(f"{MACHINES}/{name}")  # and a failed pool does not leak
    wait_for(lambda: get_machine(http, name) is None, what="the Machine to go")
    assert our_pools(arm) == {}


def test_pool_without_our_labels_is_never_touched(api, http, arm, aks, provisioners):
    name = new_name()
    arm.seed_pool(SUB, RG, CLUSTER, name, {"vmSize": SKU, "count": 3, "mode": "User"})
    provisioners.start()
    create_machine(http, name)
    launched = wait_condition(http, name, "MachineLaunched", "False")
    assert launched["reason"] == "PoolNotOwned"
    http.delete(f"{MACHINES}/{name}")
    wait_for(lambda: get_machine(http, name) is None, what="the Machine to go")
    assert arm.pools()[name]["properties"]["count"] == 3
    assert not [c for c in arm.calls if c.pool == name and c.method in ("PUT", "DELETE")]


@pytest.mark.parametrize("operation", ["put", "get"])
def test_throttling_is_retried_after_retry_after(api, http, arm, aks, provisioners, operation):
    name = new_name()
    arm.inject(operation, Fault.throttle(retry_after=0.8), pool=name)
    provisioners.start()
    create_machine(http, name)
    wait_condition(http, name, "Ready", "True")
    calls = [c for c in arm.calls if c.pool == name]
    throttled = next(i for i, c in enumerate(calls) if c.status == 429)
    assert calls[throttled + 1].at - calls[throttled].at >= 0.75
    assert len(puts(arm, name)) == 1 + (operation == "put")
    assert provisioners.running[0].runtime.metrics.arm.value(
        "create" if operation == "put" else "get", "429") == 1


@pytest.mark.parametrize("fault", ["server_error", "timeout", "conflict", "retryable_failure"])
def test_transient_faults_are_retried_until_ready(api, http, arm, aks, provisioners, fault):
    name = new_name()
    faults = {
        "server_error": Fault.server_error(times=2),
        "timeout": Fault.hang(seconds=HANG),
        "conflict": Fault.conflict(),
        "retryable_failure": Fault.failed_operation("InternalOperationError", "try again"),
    }
    arm.inject("put", faults[fault], pool=name)
    provisioners.start()
    create_machine(http, name)
    wait_condition(http, name, "Ready", "True")
    assert list(our_pools(arm)) == [name]
    launched = conditions(get_machine(http, name))["MachineLaunched"]
    assert launched["status"] == "True"


@pytest.mark.parametrize("cause", ["credential", "forbidden"])
def test_authentication_failure_is_explained_then_recovers(api, http, arm, aks, provisioners,
                                                           cause):
    name = new_name()
    if cause == "credential":
        provisioners.credential.fail = True
    else:
        arm.inject("put", Fault.forbidden(times=None), pool=name)
    provisioners.start()
    create_machine(http, name)
    launched = wait_condition(http, name, "MachineLaunched", "Unknown")

    def explained() -> dict | None:
        found = conditions(get_machine(http, name)).get("MachineLaunched")  # one read
        return found if found and found["reason"] == "AuthenticationFailed" else None

    launched = wait_for(explained, what="AuthenticationFailed")
    assert "AZURE_CLIENT_ID" in launched["message"] and RG in launched["message"]
    assert wait_for(lambda: [e for e in events_for(http, name)
                             if e["reason"] == "AuthenticationFailed"])
    provisioners.credential.fail = False
    arm.clear_faults()
    wait_condition(http, name, "Ready", "True")


def test_machine_deleted_during_creation_leaks_nothing(api, http, arm, aks, provisioners):
    arm.lro_polls = None  # creation never finishes by itself
    provisioners.start()
    name = new_name()
    create_machine(http, name)
    wait_for(lambda: arm.pools().get(name), what="the PUT")
    arm.lro_polls = 2
    http.delete(f"{MACHINES}/{name}")
    wait_for(lambda: get_machine(http, name) is None, what="the Machine to go")
    assert arm.pools() == {}
    assert [c.method for c in arm.calls if c.pool == name].count("DELETE") >= 1
    assert http.get(NODES).json()["items"] == []


def test_lingering_node_is_deleted_with_the_machine(api, http, arm, provisioners):
    aks = SimulatedAks(api.url, arm, gpus_of).start()
    provisioners.start()
    name = new_name()
    create_machine(http, name)
    node_name = wait_condition(http, name, "Ready", "True") and get_machine(http, name)[
        "status"]["nodeName"]
    aks.stop()  # nobody removes the Node when the pool goes
    http.delete(f"{MACHINES}/{name}")
    wait_for(lambda: get_machine(http, name) is None, what="the Machine to go")
    assert arm.pools() == {}
    assert http.get(f"{NODES}/{node_name}").status_code == 404


def test_gc_deletes_only_our_old_orphans(api, http, arm, aks, provisioners):
    ours = {"kaito.sh/machine-type": "gpu"}
    old, new = "20200101T000000Z", time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    props = {"vmSize": SKU, "count": 1, "mode": "User"}
    seeds = {
        "orphanold": {**ours, "kaito.sh/creation-timestamp": old},
        "orphannew": {**ours, "kaito.sh/creation-timestamp": new},
        "gooldformat": {**ours, "kaito.sh/creation-timestamp": "2020-01-01T00-00-00Z"},
        "withmachine": {**ours, "kaito.sh/creation-timestamp": old},
        "system": {},
        "someoneelse": {"kaito.sh/creation-timestamp": old},
    }
    for pool, labels in seeds.items():
        arm.seed_pool(SUB, RG, CLUSTER, pool, {**props, "nodeLabels": labels})
    create_machine(http, "withmachine")
    runtime = provisioners.start(gc_grace_seconds=60, gc_interval_seconds=0.1).runtime
    wait_for(lambda: "orphanold" not in arm.pools() and "gooldformat" not in arm.pools(),
             what="the old orphans to go")
    wait_condition(http, "withmachine", "MachineLaunched", "True")  # adopted, not collected
    time.sleep(0.4)  # a few more passes of garbage collection
    assert set(arm.pools()) == {"orphannew", "withmachine", "system", "someoneelse"}
    deleted = {c.pool for c in arm.calls if c.method == "DELETE"}
    assert deleted == {"orphanold", "gooldformat"}
    assert runtime.metrics.registry.get_sample_value("kaito_provisioner_pools_owned") == 2


def test_soak_fifty_machines_with_random_faults(api, http, arm, aks, provisioners, capsys):
    rng = random.Random(20240601)
    names = [f"soak{i:03d}" for i in range(50)]
    plan = soak_plan(rng, names)
    injected = inject_plan(arm, plan)
    started = time.monotonic()
    runtime = provisioners.start(max_workers=20).runtime
    for name in names:
        create_machine(http, name)

    def settled() -> dict[str, str] | None:
        outcome = soak_outcome(http.get(MACHINES).json()["items"], "MachineLaunched")
        return outcome if len(outcome) == len(names) else None

    outcome = wait_for(settled, timeout=180, what="every Machine Ready or failed")
    provisioned = time.monotonic() - started
    for name, (kind, _) in plan.items():
        assert outcome[name] == ("failed" if kind == "permanent" else "ready"), (name, plan[name])
    for name in names:
        http.delete(f"{MACHINES}/{name}")
    wait_for(lambda: not http.get(MACHINES).json()["items"], timeout=120,
             what="every Machine to be released")
    leaked = len(our_pools(arm))
    nodes = len(http.get(NODES).json()["items"])
    elapsed = time.monotonic() - started
    calls = arm.calls
    counted = runtime.metrics.arm.snapshot()
    faulty, timeouts = arm_answers(counted)
    with capsys.disabled():
        print(
            f"\nsoak: machines={len(names)} ready={sum(v == 'ready' for v in outcome.values())} "
            f"failed={sum(v == 'failed' for v in outcome.values())} faults_injected={injected} "
            f"arm_calls={len(calls)} (provisioner counted {sum(counted.values()):.0f}: "
            f"{faulty:.0f} error answers, {timeouts:.0f} timeouts) "
            f"provisioned_in={provisioned:.1f}s total_time={elapsed:.1f}s "
            f"pools_leaked={leaked} nodes_left={nodes}"
        )
    assert leaked == 0 and arm.pools() == {}
    assert nodes == 0
