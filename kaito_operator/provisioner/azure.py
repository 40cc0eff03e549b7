"""AKS agent pools through the Azure SDK: the only module that imports it.

Every call is short: long-running operations are *started* (``polling=False``) and their progress
is read back later with :meth:`AzurePools.get_pool`, so no handler ever waits minutes and a
restarted provisioner picks up where ARM is (the pool's ``provisioningState``), not where it was.
The SDK's own retries are off by default (``retry_total=0``): a 429 would otherwise sleep inside
the call for its ``Retry-After``; instead the error carries ``retry_after`` to the controller,
which schedules the retry.  Every failure leaves this module as a :class:`ProvisionerError`
built by :func:`classify`, never as an azure-core exception.
"""

from __future__ import annotations

import asyncio
import enum
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.pipeline import PipelineResponse
from azure.mgmt.containerservice.aio import ContainerServiceClient
from azure.mgmt.containerservice.models import (
    AgentPool,
    AgentPoolManagedClusterAgentPoolProfileProperties,
)

from kaito_operator.provisioner.errors import (
    ErrorClass,
    OperationInProgress,
    PermanentPoolError,
    PoolNotOwned,
    ProvisionerError,
    auth_hint,
    classify_error,
    error_for,
    parse_retry_after,
)
from kaito_operator.provisioner.metrics import ArmCallCounter
from kaito_operator.provisioner.pools import (
    LABEL_CREATION_TIMESTAMP,
    PoolSpec,
    PoolState,
    parse_timestamp,
)

__all__ = [
    "AzurePools",
    "Credential",
    "CreateResult",
    "DeleteResult",
    "classify",
    "default_credential",
    "describe",
]

T = TypeVar("T")
#: The credential the provisioner authenticates to ARM with (its owner closes it).
Credential = AsyncTokenCredential
#: How long to wait before looking again at a pool that is being deleted or is busy.
BUSY_RETRY_AFTER = 10.0


class CreateResult(enum.Enum):
    STARTED = "started"  # our PUT was accepted; watch get_pool() for Succeeded
    IN_PROGRESS = "in-progress"  # the pool is already being created (or ARM said 409)
    SUCCEEDED = "succeeded"  # the pool exists and is ready


class DeleteResult(enum.Enum):
    STARTED = "started"
    IN_PROGRESS = "in-progress"
    GONE = "gone"


def describe(exc: BaseException) -> tuple[int | None, str | None, str]:
    """(HTTP status, ARM error code, message) of an azure-core exception."""
    status: int | None = None
    code: str | None = None
    message = str(exc)
    if isinstance(exc, HttpResponseError):
        status = exc.status_code
        message = exc.message or message
        err = exc.error
        if err is not None and (err.code or err.message):
            code, message = err.code, err.message or message
        elif exc.response is not None:
            code, message = _body_error(exc.response.text(), code, message)
    return status, code, message


def _body_error(text: str, code: str | None, message: str) -> tuple[str | None, str]:
    try:
        body = json.loads(text)
    except ValueError:
        return code, message
    err = body.get("error", body) if isinstance(body, dict) else {}
    if not isinstance(err, dict):
        return code, message
    return err.get("code") or code, err.get("message") or message


def classify(exc: BaseException) -> ErrorClass:
    """The class of any failure an SDK call can raise (see ``errors.classify_error``)."""
    if isinstance(exc, ClientAuthenticationError):
        return ErrorClass.AUTHENTICATION  # 401s and azure-identity credential failures alike
    if isinstance(exc, HttpResponseError):
        return classify_error(*describe(exc))
    return ErrorClass.RETRYABLE  # timeouts, connection errors, other AzureErrors


def _result_code(exc: BaseException) -> str:
    if isinstance(exc, HttpResponseError) and exc.status_code is not None:
        return str(exc.status_code)
    if isinstance(exc, ClientAuthenticationError):
        return "credential"
    if isinstance(exc, TimeoutError | asyncio.TimeoutError) or "Timeout" in type(exc).__name__:
        return "timeout"
    return "transport"


def _state(pool: AgentPool) -> PoolState:
    labels = dict(pool.node_labels or {})
    error = pool.status.provisioning_error if pool.status else None
    return PoolState(
        name=pool.name or "",
        provisioning_state=_text(pool.provisioning_state) or "Unknown",
        vm_size=pool.vm_size,
        count=pool.count,
        node_labels=labels,
        node_taints=tuple(pool.node_taints or ()),
        power_state=_text(pool.power_state.code) if pool.power_state else None,
        created_at=parse_timestamp(labels.get(LABEL_CREATION_TIMESTAMP)),
        error_code=error.code if error else None,
        error_message=error.message if error else None,
    )


def _text(value: object) -> str | None:
    """SDK enums are str subclasses that print as ``Code.RUNNING``: keep the wire value."""
    return None if value is None else str(getattr(value, "value", value))


def _body(spec: PoolSpec) -> AgentPool:
    props = AgentPoolManagedClusterAgentPoolProfileProperties(
        vm_size=spec.vm_size,
        count=spec.count,
        mode=spec.mode,
        os_type=spec.os_type,
        os_disk_size_gb=spec.os_disk_size_gb,
        node_labels=dict(spec.node_labels),
        node_taints=list(spec.node_taints) or None,
    )
    return AgentPool(properties=props)


class AzurePools:
    """Agent pools of one AKS cluster; use as ``async with`` or call :meth:`close`."""

    def __init__(
        self,
        credential: AsyncTokenCredential,
        *,
        subscription_id: str,
        resource_group: str,
        cluster_name: str,
        arm_endpoint: str | None = None,
        credential_scopes: Sequence[str] | None = None,
        connection_verify: bool | str = True,
        polling_interval: float = 30.0,
        request_timeout: float = 20.0,
        call_timeout: float = 60.0,
        retry_total: int = 0,
        counter: ArmCallCounter | None = None,
        identity: str = "the gpu-provisioner's Kubernetes service account",
    ) -> None:
        kwargs: dict[str, Any] = {}
        if arm_endpoint:
            kwargs["base_url"] = arm_endpoint
            kwargs["credential_scopes"] = list(
                credential_scopes or [arm_endpoint.rstrip("/") + "/.default"]
            )
        elif credential_scopes:
            kwargs["credential_scopes"] = list(credential_scopes)
        self._client = ContainerServiceClient(
            credential,
            subscription_id,
            connection_verify=connection_verify,
            connection_timeout=request_timeout,
            read_timeout=request_timeout,
            polling_interval=polling_interval,
            retry_total=retry_total,
            **kwargs,
        )
        self.resource_group = resource_group
        self.cluster_name = cluster_name
        self.counter = counter if counter is not None else ArmCallCounter()
        self._call_timeout = call_timeout
        self._hint = auth_hint(resource_group, subscription_id, identity)

    async def __aenter__(self) -> AzurePools:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._client.close()

    async def get_pool(self, name: str) -> PoolState | None:
        """The pool's state, or None when it does not exist."""
        try:
            pool = await self._call(
                "get",
                lambda hook: self._client.agent_pools.get(
                    self.resource_group, self.cluster_name, name, raw_response_hook=hook
                ),
            )
        except ProvisionerError as exc:
            if exc.status == 404:
                return None
            raise
        return _state(pool)

    async def list_pools(self) -> list[PoolState]:
        """Every pool of the cluster (ours and others: filter on :attr:`PoolState.owned`)."""

        async def run(hook: Callable[[PipelineResponse[Any, Any]], None]) -> list[AgentPool]:
            pager = self._client.agent_pools.list(
                self.resource_group, self.cluster_name, raw_response_hook=hook
            )
            return [pool async for pool in pager]

        return [_state(pool) for pool in await self._call("list", run)]

    async def begin_create_pool(self, spec: PoolSpec) -> CreateResult:
        """Start creating the pool unless it exists or is on its way; never waits for it.

        A Failed pool whose error is permanent raises that error (no endless re-PUTs); one that
        failed for a transient reason is PUT again, which makes AKS reconcile it.
        """
        existing = await self.get_pool(spec.name)
        if existing is not None:
            if not existing.owned:
                raise PoolNotOwned(
                    f"agent pool {spec.name} exists without the kaito labels; not touching it"
                )
            if existing.succeeded:
                return CreateResult.SUCCEEDED
            if existing.busy:
                return CreateResult.IN_PROGRESS
            if existing.provisioning_state == "Deleting":
                raise OperationInProgress(
                    f"agent pool {spec.name} is being deleted", retry_after=BUSY_RETRY_AFTER
                )
            if isinstance(failure := existing.failure(), PermanentPoolError):
                raise failure
        try:
            await self._call(
                "create",
                lambda hook: self._client.agent_pools.begin_create_or_update(
                    self.resource_group,
                    self.cluster_name,
                    spec.name,
                    _body(spec),
                    polling=False,
                    raw_response_hook=hook,
                ),
            )
        except OperationInProgress:
            return CreateResult.IN_PROGRESS
        return CreateResult.STARTED

    async def begin_delete_pool(self, name: str) -> DeleteResult:
        """Start deleting one of our pools; a missing pool is already gone.  Never waits."""
        existing = await self.get_pool(name)
        if existing is None:
            return DeleteResult.GONE
        if not existing.owned:
            raise PoolNotOwned(f"agent pool {name} exists without the kaito labels; not deleting")
        if existing.provisioning_state == "Deleting":
            return DeleteResult.IN_PROGRESS
        try:
            await self._call(
                "delete",
                lambda hook: self._client.agent_pools.begin_delete(
                    self.resource_group,
                    self.cluster_name,
                    name,
                    polling=False,
                    raw_response_hook=hook,
                ),
            )
        except ProvisionerError as exc:
            if exc.status == 404:
                return DeleteResult.GONE
            raise
        return DeleteResult.STARTED

    async def _call(
        self,
        operation: str,
        run: Callable[[Callable[[PipelineResponse[Any, Any]], None]], Awaitable[T]],
    ) -> T:
        """Run one SDK call under a deadline; count it; turn failures into our errors."""
        seen: list[int] = []

        def hook(response: PipelineResponse[Any, Any]) -> None:
            seen.append(response.http_response.status_code)

        try:
            async with asyncio.timeout(self._call_timeout):
                result = await run(hook)
        except (AzureError, TimeoutError, OSError) as exc:
            self.counter.record(operation, _result_code(exc))
            raise self._translate(exc) from exc
        self.counter.record(operation, str(seen[-1]) if seen else "ok")
        return result

    def _translate(self, exc: BaseException) -> ProvisionerError:
        klass = classify(exc)
        status, code, message = describe(exc)
        if isinstance(exc, TimeoutError | ServiceRequestError | ServiceResponseError):
            message = f"ARM call did not complete: {type(exc).__name__}: {message or 'timeout'}"
        retry_after = None
        if isinstance(exc, HttpResponseError) and exc.response is not None:
            response: Any = exc.response  # typed as a protocol without headers; all have them
            retry_after = parse_retry_after(dict(response.headers))
        if klass is ErrorClass.CONFLICT and retry_after is None:
            retry_after = BUSY_RETRY_AFTER
        return error_for(
            klass, message, code=code, status=status, retry_after=retry_after, hint=self._hint
        )


def default_credential(tenant_id: str | None, client_id: str | None) -> AsyncTokenCredential:
    """Production identity: workload identity in the cluster (``AZURE_FEDERATED_TOKEN_FILE``),
    else managed identity or a developer login, pinned to the configured tenant and client."""
    from azure.identity.aio import DefaultAzureCredential

    kwargs: dict[str, Any] = {}
    if client_id:
        kwargs["workload_identity_client_id"] = client_id
        kwargs["managed_identity_client_id"] = client_id
    if tenant_id:
        kwargs["workload_identity_tenant_id"] = tenant_id
        kwargs["additionally_allowed_tenants"] = [tenant_id]
    return DefaultAzureCredential(**kwargs)


class SimulatedCloudCredential:
    """A fixed bearer token for a simulated ARM endpoint (the local sandbox).

    There is no identity provider to ask without a cloud; `main()` uses this only when
    ``KAITO_SIMULATED_ARM_TOKEN`` is set, and only together with an ``ARM_ENDPOINT`` on
    loopback, so it can never send a made-up token to real Azure."""

    def __init__(self, token: str) -> None:
        self._token = token

    async def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        return AccessToken(self._token, int(time.time()) + 3600)

    async def get_token_info(self, *scopes: str, options: Any = None) -> Any:
        from azure.core.credentials import AccessTokenInfo

        return AccessTokenInfo(self._token, int(time.time()) + 3600)

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> SimulatedCloudCredential:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None
