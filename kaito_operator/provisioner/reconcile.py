"""One idempotent pass over one Machine or NodeClaim, and its finalizer step (docs/design.md §4).

A pass never waits for Azure: it starts what is missing (the pool), reads where things are (the
pool's provisioning state, the Node: from the watch cache in the operator), writes the object's
status and says when to look again (:class:`Outcome`).  Which kind it serves, and so which
condition types it writes, comes from its :class:`~.kinds.NodeKind`; the finalizer step only
deletes the pool and its Nodes, so it serves an object of either kind.  Every failure of a pass
or a finalizer step goes through :meth:`_failed` / :func:`backoff`: the one place that turns the
error classes of ``errors`` into conditions, Events and retry delays.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from kaito_operator.cache import Client
from kaito_operator.catalog import Catalog
from kaito_operator.controller.backoff import retry_delay as backoff
from kaito_operator.kube import MACHINES, NODECLAIMS, NODES
from kaito_operator.provisioner.azure import AzurePools, CreateResult, DeleteResult
from kaito_operator.provisioner.errors import (
    AuthenticationFailed,
    InvalidPoolParameters,
    PermanentPoolError,
    PoolNotOwned,
    ProvisionerError,
    RetryableArmError,
)
from kaito_operator.provisioner.kinds import NodeKind
from kaito_operator.provisioner.lifecycle import (
    Launch,
    lifecycle_status,
    node_patch,
    phase,
    status_changed,
    status_patch,
)
from kaito_operator.provisioner.metrics import ProvisionerMetrics
from kaito_operator.provisioner.pools import AGENTPOOL_NODE_LABEL, pool_spec_from_machine
from kaito_operator.provisioner.settings import ProvisionerSettings

__all__ = ["COMPONENT", "PROVISIONER_CACHED_KINDS", "Outcome", "Reconciler", "backoff"]

log = logging.getLogger(__name__)
COMPONENT = "kaito-gpu-provisioner"
#: What the provisioner reads from its watches instead of the API (all of them watched: both
#: node kinds whichever it serves, for the legacy finalizer and garbage collection).
PROVISIONER_CACHED_KINDS = (MACHINES, NODECLAIMS, NODES)


@dataclass(frozen=True)
class Outcome:
    """``delay``: look again after that many seconds (None: only when something changes);
    ``retrying``: the pass failed for a transient reason (the backoff grows)."""

    delay: float | None
    phase: str = "Pending"
    retrying: bool = False


def _time(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


class Reconciler:
    """The steps for objects of ``node_kind``; holds no per-object state (the runtime keeps
    attempts and timers)."""

    def __init__(
        self,
        node_kind: NodeKind,
        kube: Client,
        azure: AzurePools,
        settings: ProvisionerSettings,
        catalog: Catalog,
        metrics: ProvisionerMetrics,
        clock: Callable[[], datetime],
    ) -> None:
        self.node_kind = node_kind
        self.kube, self.azure, self.settings = kube, azure, settings
        self.catalog, self.metrics, self.clock = catalog, metrics, clock

    # -- create and register ------------------------------------------------------------
    async def reconcile(self, body: Mapping[str, Any], attempts: int) -> Outcome:
        if phase(self.node_kind.conditions, body.get("status")) == "Failed":
            return Outcome(None, "Failed")  # permanent for this object: no retry loop
        try:
            return await self._converge(body)
        except ProvisionerError as exc:
            return await self._failed(body, exc, attempts)

    async def _converge(self, body: Mapping[str, Any]) -> Outcome:
        name = body["metadata"]["name"]
        try:
            machine = self.node_kind.parse(body)
        except ValidationError as exc:
            raise InvalidPoolParameters(f"{self.node_kind.title} {name} is invalid: {exc}") from exc
        spec = pool_spec_from_machine(machine, self.clock())
        result = await self.azure.begin_create_pool(spec)
        if result is not CreateResult.SUCCEEDED:
            if result is CreateResult.STARTED:
                await self._event(body, "Normal", "CreatingAgentPool",
                                  f"creating agent pool {name} ({spec.vm_size})")
            await self._write(body, Launch.pending(f"agent pool {name} is being created"), None)
            return Outcome(self.settings.poll_seconds)
        nodes = await self.kube.list(NODES, labels={AGENTPOOL_NODE_LABEL: name})
        node = min(nodes, key=lambda n: n["metadata"]["name"]) if nodes else None
        if node is not None and (patch := node_patch(body, node)) is not None:
            node = await self.kube.patch(NODES, node["metadata"]["name"], patch)
        status = await self._write(body, Launch.succeeded(name), node)
        reached = phase(self.node_kind.conditions, status)
        done = reached == self.node_kind.conditions.ready
        return Outcome(None if done else self.settings.poll_seconds, reached)

    def _gpus(self, body: Mapping[str, Any]) -> int:
        """The GPUs of the object's instance type (0: none named, unknown, or the object is too
        malformed to read: its failure is being written)."""
        try:
            vm_size = self.node_kind.parse(body).instance_type
        except ValidationError:
            return 0
        sku = self.catalog.sku(vm_size) if vm_size else None
        return sku.gpu_count if sku else 0

    async def _write(
        self, body: Mapping[str, Any], launch: Launch, node: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        """Patch the object's status to what is observed now (nothing when it is already so)."""
        current = body.get("status") or {}
        name = body["metadata"]["name"]
        desired = lifecycle_status(self.node_kind.conditions, current, name, launch, node,
                                   self._gpus(body), _time(self.clock()))
        if status_changed(current, desired):
            await self.kube.patch(self.node_kind.kind, name,
                                  {"status": status_patch(current, desired)}, status=True)
        return desired

    # -- errors: the one place -----------------------------------------------------------
    async def _failed(self, body: Mapping[str, Any], exc: ProvisionerError,
                      attempts: int) -> Outcome:
        name = body["metadata"]["name"]
        self.metrics.errors.labels(error=type(exc).__name__).inc()
        title = self.node_kind.title
        current = phase(self.node_kind.conditions, body.get("status"))
        if isinstance(exc, PermanentPoolError):
            log.warning("%s %s failed for good: %s", title, name, exc.message)
            await self._write(body, Launch.failed(type(exc).__name__, exc.message), None)
            await self._event(body, "Warning", "ProvisioningFailed", exc.message)
            return Outcome(None, "Failed")
        if isinstance(exc, AuthenticationFailed):
            log.error("%s %s: %s", title, name, exc.message)
            if current == "Pending":  # never turn a running object's conditions back
                launch = Launch.pending(exc.message, "AuthenticationFailed")
                before = (body.get("status") or {}).get("conditions")
                if (await self._write(body, launch, None))["conditions"] != before:
                    await self._event(body, "Warning", "AuthenticationFailed", exc.message)
            return Outcome(self.settings.auth_retry_seconds, current)
        retry_after = exc.retry_after if isinstance(exc, RetryableArmError) else None
        delay = backoff(attempts, self.settings.backoff_base_seconds,
                        self.settings.backoff_max_seconds, retry_after)
        log.info("%s %s: %s (%s); retrying in %.1f s", title, name, exc.message,
                 exc.code or exc.status or "no response", delay)
        return Outcome(delay, current, retrying=True)

    async def _event(self, body: Mapping[str, Any], type_: str, reason: str,
                     message: str) -> None:
        await self.kube.event(body, type_, reason, message, _time(self.clock()),
                              component=COMPONENT)

    # -- deletion ------------------------------------------------------------------------
    async def finalize(self, body: Mapping[str, Any], attempts: int) -> tuple[float | None, bool]:
        """One step of deleting the pool of ``body`` (a Machine or a NodeClaim, of either kind):
        (delay before the next step or None when the finalizer may go, whether the step failed
        transiently)."""
        name = body["metadata"]["name"]
        try:
            result = await self.azure.begin_delete_pool(name)
        except PoolNotOwned as exc:
            await self._event(body, "Warning", "AgentPoolNotOwned", exc.message)
            return None, False  # someone else's pool: release the object, touch nothing
        except AuthenticationFailed as exc:
            await self._event(body, "Warning", "AuthenticationFailed", exc.message)
            return self.settings.auth_retry_seconds, False
        except ProvisionerError as exc:
            self.metrics.errors.labels(error=type(exc).__name__).inc()
            retry_after = exc.retry_after if isinstance(exc, RetryableArmError) else None
            return backoff(attempts, self.settings.backoff_base_seconds,
                           self.settings.backoff_max_seconds, retry_after), True
        if result is DeleteResult.STARTED:
            await self._event(body, "Normal", "DeletingAgentPool", f"deleting agent pool {name}")
        if result is not DeleteResult.GONE:
            return self.settings.poll_seconds, False
        for node in await self.kube.list(NODES, labels={AGENTPOOL_NODE_LABEL: name}):
            await self.kube.delete(NODES, node["metadata"]["name"])  # AKS left it behind
        return None, False
