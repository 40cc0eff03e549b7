"""The Azure side of the gpu-provisioner: the real Azure SDK against the simulated ARM over https.

Loopback only, bounded waits only.  Each test gets a fresh simulator (fresh certificate, no
pools, no faults) so faults and call counts never leak between tests.
"""

from __future__ import annotations

import asyncio
import http.client
import ssl
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
from azure.core.credentials import AccessToken, AccessTokenInfo
from azure.core.exceptions import ClientAuthenticationError
from azure.mgmt.containerservice.aio import ContainerServiceClient

from kaito_operator.api.machine import Machine
from kaito_operator.provisioner.azure import AzurePools, CreateResult, DeleteResult
from kaito_operator.provisioner.errors import (
    AuthenticationFailed,
    ErrorClass,
    InvalidPoolParameters,
    OperationInProgress,
    PermanentPoolError,
    PoolNotOwned,
    QuotaExceeded,
    RetryableArmError,
    SkuNotAvailable,
    classify_error,
    parse_retry_after,
)
from kaito_operator.provisioner.pools import (
    LABEL_CREATION_TIMESTAMP,
    LABEL_MACHINE_TYPE,
    PoolSpec,
    parse_quantity_gib,
    pool_spec_from_machine,
)
from kaito_sandbox.sim.arm import ArmSimulator, Fault, PoolEvent

SUB, RG, CLUSTER = "00000000-0000-0000-0000-000000000001", "rg-kaito", "aks-kaito"
NOW = datetime(2024, 6, 1, 10, 0, 0, tzinfo=UTC)
OURS = {LABEL_MACHINE_TYPE: "gpu", LABEL_CREATION_TIMESTAMP: "20240601T100000Z"}


class StaticCredential:
    """An azure-core async token credential with a fixed token (none ships with azure-identity)."""

    def __init__(self, token: str = "test-token", fail: bool = False) -> None:
        self.token, self.fail = token, fail

    async def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        if self.fail:
            raise ClientAuthenticationError("WorkloadIdentityCredential: no token file")
        return AccessToken(self.token, int(time.time()) + 3600)

    async def get_token_info(self, *scopes: str, options: object = None) -> AccessTokenInfo:
        if self.fail:
            raise ClientAuthenticationError("WorkloadIdentityCredential: no token file")
        return AccessTokenInfo(self.token, int(time.time()) + 3600)

    async def close(self) -> None:
        pass

    async def __aenter__(self) -> StaticCredential:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        pass


#: Per request to the simulator: long enough for a loaded machine, short enough for the test
#: that makes a request hang past it.
REQUEST_TIMEOUT = 2.0


def make_pools(arm: ArmSimulator, credential: StaticCredential | None = None) -> AzurePools:
    return AzurePools(
        credential or StaticCredential(),
        subscription_id=SUB,
        resource_group=RG,
        cluster_name=CLUSTER,
        arm_endpoint=arm.base_url,
        connection_verify=str(arm.ca_path),
        polling_interval=0,
        request_timeout=REQUEST_TIMEOUT,
        call_timeout=3 * REQUEST_TIMEOUT,
        identity="service account kube-system/gpu-provisioner",
    )


def spec(name: str = "ws1a2b3c", vm_size: str = "Standard_NC24ads_A100_v4") -> PoolSpec:
    return PoolSpec(name, vm_size, dict(OURS, app="phi-3"), ("sku=gpu:NoSchedule",), 120)


@pytest.fixture
def arm() -> Iterator[ArmSimulator]:
    with ArmSimulator(lro_polls=3, token="test-token", max_hang_s=2 * REQUEST_TIMEOUT) as sim:
        yield sim


@pytest.fixture
async def pools(arm: ArmSimulator) -> AsyncIterator[AzurePools]:
    async with make_pools(arm) as client:
        yield client


async def wait_for_state(pools: AzurePools, name: str, want: str | None, polls: int = 20) -> None:
    for _ in range(polls):
        state = await pools.get_pool(name)
        if (state.provisioning_state if state else None) == want:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"pool {name} never reached {want}")


def puts(arm: ArmSimulator) -> int:
    return sum(1 for call in arm.calls if call.method == "PUT")


# -- pure: the pool body ---------------------------------------------------------------------


def machine(name: str = "ws1a2b3c", storage: str | int | None = "120Gi", **spec_extra) -> Machine:
    spec: dict = {
        "requirements": [
            {
                "key": "node.kubernetes.io/instance-type",
                "operator": "In",
                "values": ["Standard_NC6s_v3"],
            },
            {"key": "karpenter.sh/provisioner-name", "operator": "In", "values": ["default"]},
        ],
        "taints": [
            {"key": "sku", "value": "gpu", "effect": "NoSchedule"},
            {"key": "dedicated", "effect": "NoExecute"},
        ],
        **spec_extra,
    }
    if storage is not None:
        spec["resources"] = {"requests": {"storage": storage}}
    return Machine.model_validate(
        {
            "metadata": {"name": name, "labels": {"kaito.sh/workspace": "phi-3", "apps": "phi-3"}},
            "spec": spec,
        }
    )


def test_pool_spec_from_machine():
    got = pool_spec_from_machine(machine(), NOW)
    assert got == PoolSpec(
        name="ws1a2b3c",
        vm_size="Standard_NC6s_v3",
        node_labels={
            "kaito.sh/workspace": "phi-3",
            "apps": "phi-3",
            "kaito.sh/machine-type": "gpu",
            "kaito.sh/creation-timestamp": "20240601T100000Z",
        },
        node_taints=("sku=gpu:NoSchedule", "dedicated:NoExecute"),
        os_disk_size_gb=120,
        count=1,
        mode="User",
        os_type="Linux",
    )
    assert pool_spec_from_machine(machine(storage=None), NOW).os_disk_size_gb is None


@pytest.mark.parametrize(
    ("quantity", "gib"),
    [
        ("120Gi", 120),
        ("100G", 94),
        ("64424509440", 60),
        (64424509440, 60),
        ("1e11", 94),
        ("1.5Ti", 1536),
        ("500Mi", 1),
        ("30Gi", 30),
    ],
)
def test_storage_quantities_round_up_to_gib(quantity, gib):
    assert parse_quantity_gib(quantity) == gib


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"name": "Workspace-Phi"}, "cannot name an AKS agent pool"),
        ({"name": "abcdefghijklm"}, "at most 12"),
        ({"storage": "lots"}, "storage request"),
        ({"storage": "0Gi"}, "storage request"),
        ({"requirements": []}, "instance-type"),
    ],
)
def test_invalid_machines_are_permanent(changes, fragment):
    with pytest.raises(InvalidPoolParameters, match=fragment):
        pool_spec_from_machine(machine(**changes), NOW)


# -- pure: the classification table -------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "message", "klass"),
    [
        (
            400,
            "QuotaExceeded",
            "exceeding approved Total Regional Cores quota",
            ErrorClass.QUOTA_EXCEEDED,
        ),
        (
            409,
            "OperationNotAllowed",
            "results in exceeding approved quota",
            ErrorClass.QUOTA_EXCEEDED,
        ),
        (400, "ErrCode_InsufficientVCPUQuota", "", ErrorClass.QUOTA_EXCEEDED),
        (400, "InsufficientSubnetSize", "", ErrorClass.QUOTA_EXCEEDED),
        (400, "SkuNotAvailable", "", ErrorClass.SKU_NOT_AVAILABLE),
        (None, "ZonalAllocationFailed", "", ErrorClass.SKU_NOT_AVAILABLE),
        (None, "AllocationFailed", "", ErrorClass.SKU_NOT_AVAILABLE),
        (None, "OverconstrainedAllocationRequest", "", ErrorClass.SKU_NOT_AVAILABLE),
        (400, "InvalidParameter", "", ErrorClass.INVALID_PARAMETERS),
        (400, "BadRequest", "", ErrorClass.INVALID_PARAMETERS),
        (400, "SomethingNew", "", ErrorClass.INVALID_PARAMETERS),
        (None, "InvalidParameter", "", ErrorClass.INVALID_PARAMETERS),
        (429, "TooManyRequests", "", ErrorClass.RETRYABLE),
        (500, "InternalServerError", "", ErrorClass.RETRYABLE),
        (503, None, "", ErrorClass.RETRYABLE),
        (408, None, "", ErrorClass.RETRYABLE),
        (None, None, "timeout", ErrorClass.RETRYABLE),
        (None, "InternalOperationError", "", ErrorClass.RETRYABLE),
        (401, "InvalidAuthenticationToken", "", ErrorClass.AUTHENTICATION),
        (403, "AuthorizationFailed", "", ErrorClass.AUTHENTICATION),
        (404, "NotFound", "", ErrorClass.NOT_FOUND),
        (409, "OperationNotAllowed", "in progress create node pool operation", ErrorClass.CONFLICT),
        (409, "Conflict", "", ErrorClass.CONFLICT),
    ],
)
def test_classification_table(status, code, message, klass):
    assert classify_error(status, code, message) is klass
    assert klass.permanent == (
        klass
        in {ErrorClass.QUOTA_EXCEEDED, ErrorClass.SKU_NOT_AVAILABLE, ErrorClass.INVALID_PARAMETERS}
    )


def test_retry_after_forms():
    assert parse_retry_after({"Retry-After": "7"}) == 7
    assert parse_retry_after({"retry-after-ms": "1500", "Retry-After": "9"}) == 1.5
    date = format_datetime(datetime.fromtimestamp(1_000_030, UTC), usegmt=True)
    assert parse_retry_after({"Retry-After": date}, now=1_000_000) == pytest.approx(30)
    assert parse_retry_after({}) is None
    assert parse_retry_after({"Retry-After": "soon"}) is None


# -- the SDK against the simulator: happy paths --------------------------------------------------


async def test_create_then_poll_until_succeeded(arm: ArmSimulator, pools: AzurePools):
    ready: list[PoolEvent] = []
    arm.on_pool_succeeded.append(ready.append)
    assert await pools.begin_create_pool(spec()) is CreateResult.STARTED
    state = await pools.get_pool("ws1a2b3c")
    assert state is not None and state.provisioning_state == "Creating" and not ready
    await wait_for_state(pools, "ws1a2b3c", "Succeeded")
    state = await pools.get_pool("ws1a2b3c")
    assert state.owned and state.vm_size == "Standard_NC24ads_A100_v4" and state.count == 1
    assert state.power_state == "Running" and state.created_at == NOW
    assert state.node_taints == ("sku=gpu:NoSchedule",)
    props = arm.pools()["ws1a2b3c"]["properties"]
    assert (props["mode"], props["osType"], props["osDiskSizeGB"]) == ("User", "Linux", 120)
    assert props["nodeLabels"] == dict(OURS, app="phi-3")
    assert [(e.name, e.vm_size, e.node_labels["app"]) for e in ready] == [
        ("ws1a2b3c", "Standard_NC24ads_A100_v4", "phi-3")
    ]
    assert pools.counter.value("create", "201") == 1
    assert pools.counter.value("get", "404") == 1  # the GET-first of begin_create_pool


async def test_create_is_idempotent(arm: ArmSimulator, pools: AzurePools):
    assert await pools.begin_create_pool(spec()) is CreateResult.STARTED
    assert await pools.begin_create_pool(spec()) is CreateResult.IN_PROGRESS
    assert puts(arm) == 1
    await wait_for_state(pools, "ws1a2b3c", "Succeeded")
    assert await pools.begin_create_pool(spec()) is CreateResult.SUCCEEDED
    assert puts(arm) == 1


async def test_conflict_on_put_means_in_progress(arm: ArmSimulator, pools: AzurePools):
    arm.inject("put", Fault.conflict())
    assert await pools.begin_create_pool(spec()) is CreateResult.IN_PROGRESS
    assert pools.counter.value("create", "409") == 1


async def test_delete_until_gone(arm: ArmSimulator, pools: AzurePools):
    gone: list[PoolEvent] = []
    arm.on_pool_deleted.append(gone.append)
    await pools.begin_create_pool(spec())
    await wait_for_state(pools, "ws1a2b3c", "Succeeded")
    assert await pools.begin_delete_pool("ws1a2b3c") is DeleteResult.STARTED
    assert await pools.begin_delete_pool("ws1a2b3c") is DeleteResult.IN_PROGRESS
    await wait_for_state(pools, "ws1a2b3c", None)
    assert [e.name for e in gone] == ["ws1a2b3c"] and arm.pools() == {}
    assert await pools.begin_delete_pool("ws1a2b3c") is DeleteResult.GONE
    assert sum(1 for call in arm.calls if call.method == "DELETE") == 1


async def test_delete_during_creation(arm: ArmSimulator, pools: AzurePools):
    succeeded: list[PoolEvent] = []
    arm.on_pool_succeeded.append(succeeded.append)
    await pools.begin_create_pool(spec())
    assert await pools.begin_delete_pool("ws1a2b3c") is DeleteResult.STARTED
    await wait_for_state(pools, "ws1a2b3c", None)
    assert succeeded == [] and arm.pools() == {}


async def test_list_and_ownership(arm: ArmSimulator, pools: AzurePools):
    arm.seed_pool(
        SUB, RG, CLUSTER, "nodepool1", {"vmSize": "Standard_D4s_v5", "mode": "System", "count": 3}
    )
    arm.seed_pool(
        SUB, RG, CLUSTER, "other", {"vmSize": "Standard_D4s_v5", "nodeLabels": {"team": "x"}}
    )
    arm.seed_pool(SUB, RG, "another-cluster", "elsewhere", {"vmSize": "Standard_D4s_v5"})
    await pools.begin_create_pool(spec("ws1"))
    await pools.begin_create_pool(spec("ws2"))
    listed = {p.name: p for p in await pools.list_pools()}
    assert set(listed) == {"nodepool1", "other", "ws1", "ws2"}
    assert {name for name, p in listed.items() if p.owned} == {"ws1", "ws2"}
    assert listed["nodepool1"].count == 3 and listed["other"].created_at is None
    with pytest.raises(PoolNotOwned):
        await pools.begin_delete_pool("other")
    with pytest.raises(PoolNotOwned):
        await pools.begin_create_pool(spec("other"))
    assert "other" in arm.pools() and all(call.method != "DELETE" for call in arm.calls)


async def test_time_based_operations_complete_unobserved():
    with ArmSimulator(lro_polls=None, lro_seconds=0.2) as arm:
        ready: list[PoolEvent] = []
        arm.on_pool_succeeded.append(ready.append)
        async with make_pools(arm) as pools:
            await pools.begin_create_pool(spec())
            deadline = time.monotonic() + 60  # the simulator's timer thread, on a busy machine
            while not ready and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            assert [e.name for e in ready] == ["ws1a2b3c"]


async def test_simulator_speaks_the_sdk_lro_protocol(arm: ArmSimulator):
    """The SDK's own pollers (Azure-AsyncOperation for PUT, Location for DELETE) complete."""
    client = ContainerServiceClient(
        StaticCredential(),
        SUB,
        base_url=arm.base_url,
        credential_scopes=["https://sim/.default"],
        connection_verify=str(arm.ca_path),
        polling_interval=0,
        retry_total=0,
    )
    async with client:
        body = {"properties": {"vmSize": "Standard_NC6s_v3", "count": 1, "mode": "User"}}
        poller = await client.agent_pools.begin_create_or_update(RG, CLUSTER, "sdkpool", body)
        assert (await poller.result()).provisioning_state == "Succeeded"
        poller = await client.agent_pools.begin_delete(RG, CLUSTER, "sdkpool")
        await poller.result()
    assert arm.pools() == {}
    assert any("/operations/" in c.path for c in arm.calls)
    assert [c.status for c in arm.calls if "/operationresults/" in c.path][-1] == 204


# -- faults, each classified as specified -------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "error", "fragment"),
    [
        (Fault.quota(), QuotaExceeded, "exceeding approved standardNCADSA100v4Family Cores quota"),
        (Fault.sku_not_available(), SkuNotAvailable, "not available in location 'eastus'"),
        (
            Fault.invalid_parameter("properties.vmSize is invalid."),
            InvalidPoolParameters,
            "vmSize is invalid",
        ),
    ],
)
async def test_permanent_faults_carry_the_cloud_message(arm, pools, fault, error, fragment):
    arm.inject("put", fault)
    with pytest.raises(error, match=fragment) as info:
        await pools.begin_create_pool(spec())
    assert isinstance(info.value, PermanentPoolError) and info.value.status == 400
    assert info.value.code == fault.code


async def test_simulator_validation_and_capacity_are_permanent(
    arm: ArmSimulator, pools: AzurePools
):
    with pytest.raises(InvalidPoolParameters, match="osDiskSizeGB"):
        await pools.begin_create_pool(PoolSpec("ws1", "Standard_NC6s_v3", OURS, (), 10))
    arm.unavailable_skus.add("Standard_ND96asr_v4")
    with pytest.raises(SkuNotAvailable, match="Standard_ND96asr_v4"):
        await pools.begin_create_pool(spec("ws2", "Standard_ND96asr_v4"))
    arm.pool_quota = 1
    await pools.begin_create_pool(spec("ws3"))
    with pytest.raises(QuotaExceeded, match="quota"):
        await pools.begin_create_pool(spec("ws4"))
    assert set(arm.pools()) == {"ws3"}


async def test_failed_operation_is_classified_and_not_retried(arm: ArmSimulator, pools: AzurePools):
    arm.inject("put", Fault.failed_operation())
    assert await pools.begin_create_pool(spec()) is CreateResult.STARTED
    await wait_for_state(pools, "ws1a2b3c", "Failed")
    failure = (await pools.get_pool("ws1a2b3c")).failure()
    assert isinstance(failure, SkuNotAvailable) and "sufficient capacity" in failure.message
    with pytest.raises(SkuNotAvailable):
        await pools.begin_create_pool(spec())
    assert puts(arm) == 1


async def test_transiently_failed_pool_is_put_again(arm: ArmSimulator, pools: AzurePools):
    arm.inject("put", Fault.failed_operation("InternalOperationError", "Something went wrong."))
    await pools.begin_create_pool(spec())
    await wait_for_state(pools, "ws1a2b3c", "Failed")
    assert isinstance((await pools.get_pool("ws1a2b3c")).failure(), RetryableArmError)
    assert await pools.begin_create_pool(spec()) is CreateResult.STARTED
    await wait_for_state(pools, "ws1a2b3c", "Succeeded")
    assert puts(arm) == 2


async def test_throttling_honours_retry_after(arm: ArmSimulator, pools: AzurePools):
    arm.inject("get", Fault.throttle(retry_after=7))
    started = time.monotonic()
    with pytest.raises(RetryableArmError) as info:
        await pools.get_pool("ws1a2b3c")
    assert info.value.retry_after == 7 and info.value.status == 429
    assert time.monotonic() - started < 6, "the SDK must not sleep out Retry-After itself"
    assert pools.counter.value("get", "429") == 1
    assert await pools.get_pool("ws1a2b3c") is None


@pytest.mark.parametrize("operation", ["get", "put", "delete", "list"])
async def test_server_errors_are_retryable(arm: ArmSimulator, pools: AzurePools, operation):
    await pools.begin_create_pool(spec())
    arm.inject(operation, Fault.server_error())
    call = {
        "get": lambda: pools.get_pool("ws1a2b3c"),
        "put": lambda: pools.begin_create_pool(spec("ws2")),
        "delete": lambda: pools.begin_delete_pool("ws1a2b3c"),
        "list": pools.list_pools,
    }[operation]
    with pytest.raises(RetryableArmError, match="internal server error") as info:
        await call()
    assert info.value.status == 500 and not isinstance(info.value, OperationInProgress)


async def test_timeouts_are_retryable(arm: ArmSimulator, pools: AzurePools):
    arm.inject("get", Fault.hang(1.8 * REQUEST_TIMEOUT))
    started = time.monotonic()
    with pytest.raises(RetryableArmError, match="did not complete"):
        await pools.get_pool("ws1a2b3c")
    assert time.monotonic() - started < 1.7 * REQUEST_TIMEOUT
    assert pools.counter.value("get", "timeout") == 1


async def test_conflict_on_delete_is_retryable(arm: ArmSimulator, pools: AzurePools):
    await pools.begin_create_pool(spec())
    arm.inject("delete", Fault.conflict())
    with pytest.raises(OperationInProgress) as info:
        await pools.begin_delete_pool("ws1a2b3c")
    assert info.value.retry_after and info.value.retry_after > 0


AUTH_SETTINGS = (
    "AZURE_CLIENT_ID",
    "AZURE_TENANT_ID",
    "federated identity credential",
    "role assignment",
    RG,
)


@pytest.mark.parametrize("case", ["fault-401", "wrong-token", "forbidden", "credential"])
async def test_authentication_errors_name_the_settings(arm: ArmSimulator, case):
    credential = StaticCredential(
        token="wrong" if case == "wrong-token" else "test-token", fail=case == "credential"
    )
    if case == "fault-401":
        arm.inject("get", Fault.unauthorized())
    if case == "forbidden":
        arm.inject("get", Fault.forbidden())
    async with make_pools(arm, credential) as pools:
        with pytest.raises(AuthenticationFailed) as info:
            await pools.get_pool("ws1a2b3c")
    for setting in AUTH_SETTINGS:
        assert setting in info.value.message
    assert "kube-system/gpu-provisioner" in info.value.message


async def test_every_call_needs_a_bearer_token(arm: ArmSimulator):
    port = int(arm.base_url.rsplit(":", 1)[1])
    ctx = ssl.create_default_context(cafile=str(arm.ca_path))
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=5)
    try:
        conn.request(
            "GET",
            f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.ContainerService/managedClusters/{CLUSTER}/agentPools?api-version=2099-01-01",
        )
        response = conn.getresponse()
        assert response.status == 401 and b"InvalidAuthenticationToken" in response.read()
    finally:
        conn.close()
