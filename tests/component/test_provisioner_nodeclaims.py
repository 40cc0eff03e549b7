"""The real gpu-provisioner serving `karpenter.sh/v1` NodeClaims (``node_kind="nodeclaim"``),
against the API emulator, the simulated ARM and a simulated AKS (fixtures and helpers:
tests/component/provisioner_fixtures.py); plus what a switch between the kinds needs: a Machine
from before the switch is still finalized and its pool never garbage-collected, and a cluster
without one kind's CRD does not stop the provisioner.

Statuses are checked against Karpenter's published NodeClaim CRD where the folder
``../shared/karpenter`` is there (skipped with the reason otherwise; never copied).
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import httpx
import pytest
import yaml

from kaito_operator.provisioner.handlers import FINALIZER
from kaito_sandbox.sim.aks import SimulatedAks
from kaito_sandbox.sim.arm import Fault
from kaito_sandbox.sim.kube_api import MACHINE, NODECLAIM, WORKSPACE, KubeApiEmulator
from tests.component import provisioner_fixtures as fixtures
from tests.component.provisioner_fixtures import (
    CLUSTER,
    MACHINES,
    NODECLAIMS,
    NODES,
    RG,
    SKU,
    SUB,
    Provisioners,
    arm_answers,
    conditions,
    create_machine,
    create_nodeclaim,
    creates,
    events_for,
    get_machine,
    get_nodeclaim,
    gpus_of,
    inject_plan,
    new_name,
    nodeclaim_body,
    our_pools,
    puts,
    soak_outcome,
    soak_plan,
    wait_condition,
    wait_for,
)
from tests.support.crd_check import admit

api, http, arm, aks, provisioners = (fixtures.api, fixtures.http, fixtures.arm, fixtures.aks,
                                     fixtures.provisioners)

ORDER = ("Launched", "Registered", "Initialized", "Ready")
UPSTREAM = Path(__file__).resolve().parents[2].parent / "shared" / "karpenter"
OLD = "20200101T000000Z"


def upstream_status_schema() -> dict:
    """The status schema of Karpenter's published NodeClaim CRD; skips when it is absent."""
    crd_file = UPSTREAM / "karpenter.sh_nodeclaims.yaml"
    if not crd_file.is_file():
        pytest.skip(f"Karpenter's published CRDs are not at {UPSTREAM} (this check needs them)")
    crd = yaml.safe_load(crd_file.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return version["schema"]["openAPIV3Schema"]["properties"]["status"]


def wait_claim(http: httpx.Client, name: str, type_: str, status: str,
               timeout: float = 60.0) -> dict:
    return wait_condition(http, name, type_, status, timeout, path=NODECLAIMS)


def versions(http: httpx.Client, name: str, since: str) -> list[dict]:
    """Every version of the NodeClaim written after resourceVersion ``since`` (watch replay)."""
    params = {"watch": "true", "resourceVersion": since, "timeoutSeconds": "1",
              "fieldSelector": f"metadata.name={name}"}
    seen = []
    with http.stream("GET", NODECLAIMS, params=params) as response:
        for line in response.iter_lines():
            if line.strip():
                seen.append(httpx.Response(200, content=line).json()["object"])
    return seen


def seed_old_orphan(arm, name: str = "orphanold") -> str:
    labels = {"kaito.sh/machine-type": "gpu", "kaito.sh/creation-timestamp": OLD}
    arm.seed_pool(SUB, RG, CLUSTER, name, {"vmSize": SKU, "count": 1, "mode": "User",
                                           "nodeLabels": labels})
    return name


def deleted_pools(arm) -> set[str]:
    return {c.pool for c in arm.calls if c.method == "DELETE"}


def test_nodeclaim_becomes_ready_with_conditions_in_order(api, http, arm, provisioners):
    with SimulatedAks(api.url, arm, gpus_of, apply_pool_labels=False):
        provisioners.start(node_kind="nodeclaim")
        name = new_name()
        created = create_nodeclaim(http, name)
        wait_claim(http, name, "Ready", "True")
    claim = get_nodeclaim(http, name)
    status = claim["status"]
    node = http.get(f"{NODES}/{status['nodeName']}").json()
    assert status["nodeName"].startswith(f"aks-{name}-")
    assert status["providerID"] == node["spec"]["providerID"]
    assert status["allocatable"]["nvidia.com/gpu"] == "1"
    assert status["capacity"]["nvidia.com/gpu"] == "1"
    assert [c["type"] for c in status["conditions"]] == list(ORDER)
    assert all(c["reason"] and "message" in c for c in status["conditions"])
    times = [c["lastTransitionTime"] for c in status["conditions"]]
    assert times == sorted(times)
    assert node["metadata"]["labels"]["apps"] == "phi-3"
    assert node["metadata"]["labels"]["karpenter.sh/nodepool"] == "kaito"
    assert {"key": "sku", "value": "gpu", "effect": "NoSchedule"} in node["spec"]["taints"]
    assert FINALIZER in claim["metadata"]["finalizers"]
    assert claim["spec"] == created["spec"]  # the provisioner writes the status only
    pool = arm.pools()[name]["properties"]
    assert pool["vmSize"] == SKU and pool["osDiskSizeGB"] == 120
    assert pool["nodeTaints"] == ["sku=gpu:NoSchedule"]
    assert len(puts(arm, name)) == 1
    metrics = provisioners.running[0].runtime.metrics
    assert metrics.registry.get_sample_value("kaito_provisioner_machines",
                                             {"condition": "Ready"}) == 1


def test_every_status_written_validates_against_upstream_and_keeps_order(api, http, arm, aks,
                                                                         provisioners):
    schema = upstream_status_schema()
    provisioners.start(node_kind="nodeclaim")
    name = new_name()
    created = create_nodeclaim(http, name)
    wait_claim(http, name, "Ready", "True")
    history = [v for v in versions(http, name, created["metadata"]["resourceVersion"])
               if v.get("status")]
    assert history
    first_true: dict[str, int] = {}
    for index, version in enumerate(history):
        assert admit(schema, version["status"]) == [], version["status"]
        conds = conditions(version)
        for position, type_ in enumerate(ORDER):
            if conds.get(type_, {}).get("status") == "True":
                first_true.setdefault(type_, index)
                assert all(conds[e]["status"] == "True" for e in ORDER[:position]), conds
    assert list(first_true) == list(ORDER)
    assert sorted(first_true.values()) == list(first_true.values())


@pytest.mark.parametrize(("make", "reason", "message"), [
    (Fault.quota, "QuotaExceeded", "exceeding approved standardNCADSA100v4Family"),
    (Fault.failed_operation, "SkuNotAvailable", "Allocation failed"),
])
def test_permanent_fault_fails_the_nodeclaim_once(api, http, arm, aks, provisioners, make, reason,
                                                  message):
    name = new_name()
    arm.inject("put", make(times=None), pool=name)
    provisioners.start(node_kind="nodeclaim")
    create_nodeclaim(http, name)

    def failed() -> dict[str, dict] | None:
        conds = conditions(get_nodeclaim(http, name))
        launched, ready = conds.get("Launched"), conds.get("Ready")
        return conds if launched and launched["status"] == "False" and ready and ready[
            "status"] == "False" else None

    conds = wait_for(failed, what="Launched=False and Ready=False")
    assert conds["Launched"]["reason"] == reason and message in conds["Launched"]["message"]
    assert message in conds["Ready"]["message"]
    warnings = wait_for(lambda: [e for e in events_for(http, name) if e["type"] == "Warning"],
                        what="a Warning Event")
    assert message in warnings[0]["message"]
    assert warnings[0]["involvedObject"]["kind"] == "NodeClaim"
    calls = len(arm.calls)
    time.sleep(0.6)  # six poll intervals: nothing more may be asked of ARM for this NodeClaim
    assert [c for c in arm.calls[calls:] if c.pool == name] == []
    assert len(puts(arm, name)) == 1
    http.delete(f"{NODECLAIMS}/{name}")
    wait_for(lambda: get_nodeclaim(http, name) is None, what="the NodeClaim to go")
    assert our_pools(arm) == {}


def test_restart_mid_create_adopts_the_same_pool(api, http, arm, aks, provisioners):
    arm.lro_polls = None  # the pool stays Creating until the test lets it finish
    first = provisioners.start(node_kind="nodeclaim")
    name = new_name()
    create_nodeclaim(http, name)
    wait_for(lambda: arm.pools().get(name), what="the PUT")
    wait_claim(http, name, "Launched", "Unknown")
    first.stop()
    created_at = arm.pools()[name]["properties"]["nodeLabels"]["kaito.sh/creation-timestamp"]
    arm.lro_polls = 2
    provisioners.start(node_kind="nodeclaim")
    wait_claim(http, name, "Ready", "True")
    assert len(puts(arm, name)) == 1
    assert list(our_pools(arm)) == [name]
    assert our_pools(arm)[name]["properties"]["nodeLabels"][
        "kaito.sh/creation-timestamp"] == created_at


def test_deletion_deletes_the_pool_and_the_node(api, http, arm, provisioners):
    aks = SimulatedAks(api.url, arm, gpus_of).start()
    provisioners.start(node_kind="nodeclaim")
    name = new_name()
    create_nodeclaim(http, name)
    wait_claim(http, name, "Ready", "True")
    node_name = get_nodeclaim(http, name)["status"]["nodeName"]
    aks.stop()  # nobody but the provisioner removes the Node when the pool goes
    http.delete(f"{NODECLAIMS}/{name}")
    wait_for(lambda: get_nodeclaim(http, name) is None, what="the NodeClaim to go")
    assert arm.pools() == {}
    assert http.get(f"{NODES}/{node_name}").status_code == 404


def test_machine_from_before_the_switch_is_still_finalized(api, http, arm, aks, provisioners):
    before = provisioners.start(node_kind="machine")
    legacy = new_name()
    create_machine(http, legacy)
    wait_condition(http, legacy, "Ready", "True")
    before.stop()
    machine = get_machine(http, legacy)
    # No grace: garbage collection would take the Machine's pool at once if it were an orphan.
    orphan = seed_old_orphan(arm)
    after = provisioners.start(node_kind="nodeclaim", gc_grace_seconds=0,
                               gc_interval_seconds=0.1)
    claim = new_name()
    create_nodeclaim(http, claim)
    wait_claim(http, claim, "Ready", "True")
    wait_for(lambda: orphan in deleted_pools(arm), what="a garbage-collection pass")
    assert set(our_pools(arm)) >= {legacy, claim}  # that pass saw both and took neither
    assert deleted_pools(arm) == {orphan}
    assert after.runtime.metrics.registry.get_sample_value(
        "kaito_provisioner_pools_garbage_collected_total") >= 1
    # the NodeClaim provisioner leaves the Machine's status alone
    assert conditions(get_machine(http, legacy)) == conditions(machine)
    node_name = machine["status"]["nodeName"]
    http.delete(f"{MACHINES}/{legacy}")
    wait_for(lambda: get_machine(http, legacy) is None, what="the legacy Machine to go")
    assert legacy not in arm.pools()
    wait_for(lambda: http.get(f"{NODES}/{node_name}").status_code == 404, what="its Node to go")
    assert claim in arm.pools() and len(puts(arm, legacy)) == 1


@pytest.mark.parametrize("broken", [
    {"spec.nodeClassRef": None},                       # no NodeClass: not a v1 NodeClaim
    {"spec.requirements": "Standard_NC6s_v3"},         # a string where a list belongs
    {"spec.resources": {"requests": {"storage": "a lot"}}},
], ids=["no-node-class", "requirements-not-a-list", "bad-storage"])
def test_malformed_nodeclaim_fails_once_and_creates_nothing(api, http, arm, aks, provisioners,
                                                            broken):
    """A NodeClaim the API server would have refused (the emulator does not validate schemas)
    ends with Launched=False and the reason, without a pool or a retry loop; the provisioner
    keeps serving the others."""
    bad, good = new_name(), new_name()
    body = nodeclaim_body(bad)
    for path, value in broken.items():
        node = body
        *parents, last = path.split(".")
        for key in parents:
            node = node[key]
        if value is None:
            del node[last]
        else:
            node[last] = value
    provisioners.start(node_kind="nodeclaim")
    assert http.post(NODECLAIMS, json=body).status_code == 201
    create_nodeclaim(http, good)
    launched = wait_condition(http, bad, "Launched", "False", path=NODECLAIMS)
    assert launched["reason"] == "InvalidPoolParameters" and bad in launched["message"]
    wait_condition(http, good, "Ready", "True", path=NODECLAIMS)
    assert puts(arm, bad) == []
    http.delete(f"{NODECLAIMS}/{bad}")
    wait_for(lambda: get_nodeclaim(http, bad) is None, what="the malformed NodeClaim to go")


def test_only_workspace_nodeclaims_are_finalized_by_a_machine_provisioner(api, http, arm, aks,
                                                                          provisioners):
    provisioners.start(node_kind="machine")
    ours, karpenters = new_name(), new_name()
    create_nodeclaim(http, ours)
    create_nodeclaim(http, karpenters, labels={"karpenter.sh/nodepool": "default"})
    wait_for(lambda: FINALIZER in (get_nodeclaim(http, ours)["metadata"].get("finalizers")
                                   or []), what="the finalizer on the Workspace's NodeClaim")
    machine = new_name()
    create_machine(http, machine)  # the provisioner's own kind, to know it has looked at all
    wait_condition(http, machine, "Ready", "True")
    assert FINALIZER not in (get_nodeclaim(http, karpenters)["metadata"].get("finalizers") or [])
    assert not conditions(get_nodeclaim(http, ours))  # never provisioned, only finalized
    assert ours not in arm.pools() and karpenters not in arm.pools()
    http.delete(f"{NODECLAIMS}/{ours}")
    wait_for(lambda: get_nodeclaim(http, ours) is None, what="the NodeClaim to be released")
    assert set(our_pools(arm)) == {machine}


@pytest.mark.parametrize(("node_kind", "served"), [("machine", MACHINE), ("nodeclaim", NODECLAIM)])
def test_a_cluster_without_the_other_crd(arm, node_kind, served):
    """Only the served kind's CRD (Karpenter's cluster has no Machine, an old one no NodeClaim):
    start-up, garbage collection (the other kind's list is a 404) and a full lifecycle work."""
    path, create, launched = ((MACHINES, create_machine, "MachineLaunched")
                              if node_kind == "machine"
                              else (NODECLAIMS, create_nodeclaim, "Launched"))
    with KubeApiEmulator(kaito_kinds=False, extra_types=(WORKSPACE, served)) as api, \
            httpx.Client(base_url=api.url, timeout=10.0) as http, \
            SimulatedAks(api.url, arm, gpus_of):
        other = NODECLAIMS if node_kind == "machine" else MACHINES
        assert http.get(other).status_code == 404
        started = Provisioners(api, arm)
        try:
            orphan = seed_old_orphan(arm)
            started.start(node_kind=node_kind, gc_grace_seconds=0, gc_interval_seconds=0.1)
            wait_for(lambda: orphan in deleted_pools(arm), what="garbage collection to run")
            name = new_name()
            create(http, name)
            wait_condition(http, name, launched, "True", path=path)
            wait_condition(http, name, "Ready", "True", path=path)
            assert name in arm.pools()  # collection kept going and did not take it
            http.delete(f"{path}/{name}")
            wait_for(lambda: http.get(f"{path}/{name}").status_code == 404, what="the release")
            assert our_pools(arm) == {}
        finally:
            started.stop_all()


def test_soak_fifty_nodeclaims_with_random_faults_and_restarts(api, http, arm, aks, provisioners,
                                                               capsys):
    rng = random.Random(20240601)  # the Machine soak's seed: the same plan of faults
    names = [f"soak{i:03d}" for i in range(50)]
    plan = soak_plan(rng, names)
    injected = inject_plan(arm, plan)
    started = time.monotonic()
    running = provisioners.start(node_kind="nodeclaim", max_workers=20)
    restarts = 0

    def restart() -> None:
        nonlocal running, restarts
        running.stop()
        running = provisioners.start(node_kind="nodeclaim", max_workers=20)
        restarts += 1

    for name in names:
        create_nodeclaim(http, name)

    def settled(at_least: int):
        def check() -> dict[str, str] | None:
            outcome = soak_outcome(http.get(NODECLAIMS).json()["items"], "Launched")
            return outcome if len(outcome) >= at_least else None
        return check

    def timed_out() -> bool:  # an injected hang has run into the request timeout
        counted = running.runtime.metrics.arm.snapshot()
        return any(code == "timeout" for (_, code) in counted)

    # Restart while passes, timers and ARM operations are in flight: first once a hang has
    # timed out (so the timeout path is taken too) and 10 NodeClaims settled, then at 30.
    wait_for(timed_out, timeout=60, what="an ARM request to time out")
    for stage in (10, 30):
        wait_for(settled(stage), timeout=180, what=f"{stage} NodeClaims settled")
        restart()
    outcome = wait_for(settled(len(names)), timeout=180, what="every NodeClaim Ready or failed")
    provisioned = time.monotonic() - started
    for name, (kind, _) in plan.items():
        assert outcome[name] == ("failed" if kind == "permanent" else "ready"), (name, plan[name])
    for name in names:
        http.delete(f"{NODECLAIMS}/{name}")
    wait_for(lambda: len(http.get(NODECLAIMS).json()["items"]) <= 35, timeout=120,
             what="the first NodeClaims to be released")
    restart()  # and once mid-deletion
    wait_for(lambda: not http.get(NODECLAIMS).json()["items"], timeout=120,
             what="every NodeClaim to be released")
    leaked = len(our_pools(arm))
    nodes = len(http.get(NODES).json()["items"])
    duplicates = sum(count - 1 for count in creates(arm).values() if count > 1)
    elapsed = time.monotonic() - started
    calls = arm.calls
    counted: dict[tuple[str, str], float] = {}
    for thread in provisioners.running:
        for key, value in thread.runtime.metrics.arm.snapshot().items():
            counted[key] = counted.get(key, 0.0) + value
    faulty, timeouts = arm_answers(counted)
    with capsys.disabled():
        print(
            f"\nsoak: nodeclaims={len(names)} ready={sum(v == 'ready' for v in outcome.values())} "
            f"failed={sum(v == 'failed' for v in outcome.values())} faults_injected={injected} "
            f"provisioner_restarts={restarts} arm_calls={len(calls)} (provisioners counted "
            f"{sum(counted.values()):.0f}: {faulty:.0f} error answers, {timeouts:.0f} timeouts) "
            f"pool_creates={sum(creates(arm).values())} duplicate_pools={duplicates} "
            f"provisioned_in={provisioned:.1f}s total_time={elapsed:.1f}s "
            f"pools_leaked={leaked} nodes_left={nodes}"
        )
    assert leaked == 0 and arm.pools() == {}
    assert duplicates == 0
    assert nodes == 0
