"""Shared pieces of the gpu-provisioner component tests (tests/component/test_provisioner*.py):
the real provisioner (kopf over HTTP) against the API emulator, the real Azure SDK against the
simulated ARM over https, and a simulated AKS that turns Succeeded pools into Nodes.

Every test gets its own emulator, ARM simulator and AKS (Machines, NodeClaims and Nodes are
cluster-scoped, so sharing the session emulator would let other tests' objects in).  Loopback
only, bounded waits only, short intervals from the settings.  Test modules import the fixtures
they use from here.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
from azure.core.credentials import AccessToken, AccessTokenInfo
from azure.core.exceptions import ClientAuthenticationError

from kaito_operator.catalog import load_catalog
from kaito_operator.provisioner.operator import ProvisionerThread
from kaito_operator.provisioner.runtime import ProvisionerRuntime
from kaito_operator.provisioner.settings import ProvisionerSettings
from kaito_sandbox.sim.aks import SimulatedAks
from kaito_sandbox.sim.arm import ArmSimulator, Fault
from kaito_sandbox.sim.kube_api import KubeApiEmulator
from tests.support.waiting import wait_for

SUB, RG, CLUSTER = "00000000-0000-0000-0000-000000000001", "rg-kaito", "aks-kaito"
SKU = "Standard_NC24ads_A100_v4"
MACHINES = "/apis/karpenter.sh/v1alpha5/machines"
NODECLAIMS = "/apis/karpenter.sh/v1/nodeclaims"
NODES = "/api/v1/nodes"
CATALOG = load_catalog()


class StaticCredential:
    """An azure-core async token credential with a fixed token; ``fail`` makes it refuse."""

    def __init__(self, token: str = "test-token") -> None:
        self.token, self.fail = token, False

    def _check(self) -> None:
        if self.fail:
            raise ClientAuthenticationError("WorkloadIdentityCredential: no token file")

    async def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        self._check()
        return AccessToken(self.token, int(time.time()) + 3600)

    async def get_token_info(self, *scopes: str, options: object = None) -> AccessTokenInfo:
        self._check()
        return AccessTokenInfo(self.token, int(time.time()) + 3600)

    async def close(self) -> None:
        pass


def gpus_of(sku: str) -> int:
    found = CATALOG.sku(sku)
    return found.gpu_count if found else 0


#: ARM request timeout of the provisioners under test: a loaded 2-core machine answers well
#: within it (at 1 s, a third of the soak's requests timed out under load and were retried);
#: injected hangs last longer, so they still time out.
REQUEST_TIMEOUT = 3.0
HANG = REQUEST_TIMEOUT + 1.0


@pytest.fixture
def api() -> Iterator[KubeApiEmulator]:
    with KubeApiEmulator() as emulator:
        yield emulator


@pytest.fixture
def http(api: KubeApiEmulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api.url, timeout=10.0) as client:
        yield client


@pytest.fixture
def arm() -> Iterator[ArmSimulator]:
    with ArmSimulator(lro_polls=2, token="test-token", max_hang_s=HANG + 1) as sim:
        yield sim


@pytest.fixture
def aks(api: KubeApiEmulator, arm: ArmSimulator) -> Iterator[SimulatedAks]:
    with SimulatedAks(api.url, arm, gpus_of) as sim:
        yield sim


def make_settings(arm: ArmSimulator, **changes: Any) -> ProvisionerSettings:
    base = ProvisionerSettings(
        subscription_id=SUB,
        resource_group=RG,
        cluster_name=CLUSTER,
        location="eastus",
        arm_endpoint=arm.base_url,
        arm_ca_bundle=str(arm.ca_path),
        gc_grace_seconds=3600,
        gc_interval_seconds=0.3,
        poll_seconds=0.1,
        backoff_base_seconds=0.1,
        backoff_max_seconds=1.0,
        auth_retry_seconds=0.5,
        request_timeout_seconds=REQUEST_TIMEOUT,
        call_timeout_seconds=1.5 * REQUEST_TIMEOUT,
    )
    return replace(base, **changes)


class Provisioners:
    """Starts provisioners for a test and stops whatever is still running at the end."""

    def __init__(self, api: KubeApiEmulator, arm: ArmSimulator) -> None:
        self.api, self.arm = api, arm
        self.credential = StaticCredential()
        self.running: list[ProvisionerThread] = []

    def start(self, **changes: Any) -> ProvisionerThread:
        runtime = ProvisionerRuntime(make_settings(self.arm, **changes), self.credential, CATALOG)
        thread = ProvisionerThread(runtime, self.api.url).start()
        self.running.append(thread)
        return thread

    def stop_all(self) -> None:
        for thread in self.running:
            thread.stop()
        self.running.clear()


@pytest.fixture
def provisioners(api: KubeApiEmulator, arm: ArmSimulator) -> Iterator[Provisioners]:
    started = Provisioners(api, arm)
    yield started
    started.stop_all()


def machine_body(name: str, sku: str = SKU, labels: dict[str, str] | None = None) -> dict:
    return {
        "apiVersion": "karpenter.sh/v1alpha5",
        "kind": "Machine",
        "metadata": {"name": name, "labels": labels or {"kaito.sh/workspace": "phi",
                                                        "apps": "phi-3"}},
        "spec": {
            "requirements": [
                {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": [sku]},
                {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
            ],
            "taints": [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}],
            "resources": {"requests": {"storage": "120Gi"}},
            "machineTemplateRef": {"name": name},
        },
    }


def new_name() -> str:
    return "m" + uuid.uuid4().hex[:9]


def create_machine(http: httpx.Client, name: str, **kwargs: Any) -> dict:
    response = http.post(MACHINES, json=machine_body(name, **kwargs))
    assert response.status_code == 201, response.text
    return response.json()


def nodeclaim_body(name: str, sku: str = SKU, labels: dict[str, str] | None = None) -> dict:
    """A NodeClaim as the workspace controller writes one (common brief, contract C1)."""
    labels = labels or {"kaito.sh/workspace": "phi", "kaito.sh/workspacenamespace": "default",
                        "apps": "phi-3", "karpenter.sh/nodepool": "kaito"}
    return {
        "apiVersion": "karpenter.sh/v1",
        "kind": "NodeClaim",
        "metadata": {"name": name, "labels": labels,
                     "annotations": {"karpenter.sh/do-not-disrupt": "true"}},
        "spec": {
            "requirements": [
                {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": [sku]},
                {"key": "karpenter.sh/nodepool", "operator": "In", "values": ["kaito"]},
                {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
                {"key": "apps", "operator": "In", "values": ["phi-3"]},
            ],
            "resources": {"requests": {"storage": "120Gi"}},
            "taints": [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}],
            "nodeClassRef": {"group": "karpenter.azure.com", "kind": "AKSNodeClass",
                             "name": "default"},
            "expireAfter": "Never",
        },
    }


def create_nodeclaim(http: httpx.Client, name: str, **kwargs: Any) -> dict:
    response = http.post(NODECLAIMS, json=nodeclaim_body(name, **kwargs))
    assert response.status_code == 201, response.text
    return response.json()


def get_object(http: httpx.Client, path: str, name: str) -> dict | None:
    response = http.get(f"{path}/{name}")
    return None if response.status_code == 404 else response.json()


def get_machine(http: httpx.Client, name: str) -> dict | None:
    return get_object(http, MACHINES, name)


def get_nodeclaim(http: httpx.Client, name: str) -> dict | None:
    return get_object(http, NODECLAIMS, name)


def conditions(machine: dict | None) -> dict[str, dict]:
    return {c["type"]: c for c in ((machine or {}).get("status") or {}).get("conditions") or []}


def wait_condition(http, name, type_, status, timeout=60.0, path=MACHINES) -> dict:
    """Wait until the object (a Machine unless ``path`` says otherwise) has the condition."""
    def check():
        found = conditions(get_object(http, path, name)).get(type_)
        return found if found and found["status"] == status else None

    return wait_for(check, timeout, f"{name} {type_}={status}")


def creates(arm: ArmSimulator) -> dict[str, int]:
    """Per pool name: how many PUTs created it anew (201); above 1 is a duplicate pool."""
    counted: dict[str, int] = {}
    for call in arm.calls:
        if call.method == "PUT" and call.status == 201:
            counted[call.pool] = counted.get(call.pool, 0) + 1
    return counted


def our_pools(arm: ArmSimulator) -> dict[str, dict]:
    return {name: pool for name, pool in arm.pools().items()
            if pool["properties"].get("nodeLabels", {}).get("kaito.sh/machine-type") == "gpu"}


def puts(arm: ArmSimulator, pool: str) -> list:
    return [c for c in arm.calls if c.method == "PUT" and c.pool == pool]


def events_for(http: httpx.Client, name: str) -> list[dict]:
    items = http.get("/api/v1/namespaces/default/events").json()["items"]
    return [e for e in items if e["involvedObject"]["name"] == name]


def soak_plan(rng: random.Random, names: list[str]) -> dict[str, tuple[str, list]]:
    """Per Machine: ``clean``, ``transient`` (1–3 retryable faults on any operation, deletion
    included) or ``permanent`` (a permanent PUT fault, maybe after a retryable one)."""
    transient = [
        ("put", lambda: Fault.throttle(retry_after=0.2)),
        ("put", lambda: Fault.server_error()),
        ("put", lambda: Fault.conflict()),
        ("put", lambda: Fault.hang(seconds=HANG)),
        ("put", lambda: Fault.failed_operation("InternalOperationError", "transient failure")),
        ("get", lambda: Fault.throttle(retry_after=0.1)),
        ("get", lambda: Fault.server_error()),
        ("get", lambda: Fault.hang(seconds=HANG)),
        ("delete", lambda: Fault.throttle(retry_after=0.2)),
        ("delete", lambda: Fault.server_error()),
    ]
    permanent = [Fault.quota, Fault.sku_not_available, Fault.invalid_parameter,
                 Fault.failed_operation]
    plan = {}
    for name in names:
        roll = rng.random()
        if roll < 0.3:
            plan[name] = ("clean", [])
        elif roll < 0.8:
            picks = [rng.choice(transient) for _ in range(rng.randint(1, 3))]
            plan[name] = ("transient", [(op, make()) for op, make in picks])
        else:
            faults = [("put", Fault.server_error())] if rng.random() < 0.5 else []
            plan[name] = ("permanent", [*faults, ("put", rng.choice(permanent)())])
    return plan


def inject_plan(arm: ArmSimulator, plan: dict[str, tuple[str, list]]) -> int:
    """Arm every fault of a soak plan on its pool; returns how many were injected."""
    for name, (_, faults) in plan.items():
        for operation, fault in faults:
            arm.inject(operation, fault, pool=name)
    return sum(len(faults) for _, faults in plan.values())


def soak_outcome(items: list[dict], launched: str) -> dict[str, str]:
    """`ready` or `failed` (launch condition False, with the cloud's message) by object name,
    for the objects that have settled."""
    outcome = {}
    for item in items:
        conds = conditions(item)
        if conds.get("Ready", {}).get("status") == "True":
            outcome[item["metadata"]["name"]] = "ready"
        elif conds.get(launched, {}).get("status") == "False":
            assert conds[launched]["message"], item
            outcome[item["metadata"]["name"]] = "failed"
    return outcome


def arm_answers(counted: dict[tuple[str, str], float]) -> tuple[float, float]:
    """(error answers but 404, timeouts) among the ARM requests a provisioner counted."""
    timeouts = sum(v for (_, code), v in counted.items() if code == "timeout")
    errors = sum(v for (_, code), v in counted.items()
                 if code.isdigit() and code != "404" and int(code) >= 400)
    return errors, timeouts
