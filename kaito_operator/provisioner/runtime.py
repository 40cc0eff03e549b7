"""The gpu-provisioner's runtime: what its kopf handlers call.

Passes run on the shared `KeyScheduler`, keyed by object name (a Machine's or a NodeClaim's,
whichever kind `settings.node_kind` serves; names are pool names, so unique across both): one at
a time per name, many at once, no waits. A pass that waits on Azure returns at once with a
delay, and the scheduler arms a timer for it: fifty Machines whose pools are being created hold
no handler and no coroutine while ARM works. The finalizer step takes the same per-name lock, so
a create never races the delete of the same pool; it serves both kinds (a Machine left from
before a switch to NodeClaims still has its pool deleted). A pass that raises is logged, counted
by class and retried after the backoff (`backoff_base_seconds` doubling to
`backoff_max_seconds`).
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kaito_operator.cache import CachedClient, WatchCache
from kaito_operator.catalog import Catalog
from kaito_operator.controller.backoff import Backoff
from kaito_operator.controller.scheduler import KeyScheduler, KeyState, Next
from kaito_operator.kube import Connection, KubeClient
from kaito_operator.provisioner.azure import AzurePools, Credential
from kaito_operator.provisioner.gc import GarbageCollector
from kaito_operator.provisioner.kinds import node_kinds
from kaito_operator.provisioner.metrics import ProvisionerMetrics
from kaito_operator.provisioner.pools import AGENTPOOL_NODE_LABEL
from kaito_operator.provisioner.reconcile import PROVISIONER_CACHED_KINDS, Reconciler
from kaito_operator.provisioner.settings import ProvisionerSettings

__all__ = ["ProvisionerRuntime"]

log = logging.getLogger(__name__)

#: Events come in bursts (the Machine, then kopf's annotations, then the Node): a short pause
#: before each pass lets one pass see them all.
DEBOUNCE_SECONDS = 0.02


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class MachineState:
    """What the runtime keeps per object besides the scheduler's bookkeeping."""

    phase: str = "Pending"


class ProvisionerRuntime:
    """What the kopf handlers call; create it, then :meth:`start` inside the operator's loop."""

    def __init__(
        self,
        settings: ProvisionerSettings,
        credential: Credential,
        catalog: Catalog,
        *,
        connection_verify: bool | str | None = None,
        metrics: ProvisionerMetrics | None = None,
        clock: Callable[[], datetime] = utc_now,
        run_gc: bool = True,
    ) -> None:
        self.settings, self.catalog, self.clock = settings, catalog, clock
        self.node_kind, self.other_kind = node_kinds(settings.node_kind)
        """The kind provisioned, and the other kind (labelled objects only finalized)."""
        self._finalizing: set[str] = set()
        self.metrics = metrics or ProvisionerMetrics()
        self._credential = credential
        verify = settings.arm_ca_bundle or True
        self._verify = connection_verify if connection_verify is not None else verify
        self._run_gc = run_gc
        self.cache = WatchCache(PROVISIONER_CACHED_KINDS)
        """Fed by the watches (`register_cache` in `build_registry`); the passes read from it."""
        self._kube: CachedClient | None = None
        self._azure: AzurePools | None = None
        self.reconciler: Reconciler | None = None
        self.gc: GarbageCollector | None = None
        cap = settings.backoff_max_seconds
        backoff = Backoff(initial=min(settings.backoff_base_seconds, cap), factor=2.0, cap=cap)
        self._scheduler: KeyScheduler[str, MachineState] = KeyScheduler(
            self._pass, self._failed, MachineState, debounce=DEBOUNCE_SECONDS,
            max_workers=settings.max_workers, backoff=backoff,
        )

    async def start(self, connection: Connection) -> None:
        s = self.settings
        self._kube = CachedClient(KubeClient(connection, user_agent="kaito-gpu-provisioner"),
                                  self.cache)
        self._azure = AzurePools(
            self._credential,
            subscription_id=s.subscription_id,
            resource_group=s.resource_group,
            cluster_name=s.cluster_name,
            arm_endpoint=s.arm_endpoint,
            connection_verify=self._verify,
            request_timeout=s.request_timeout_seconds,
            call_timeout=s.call_timeout_seconds,
            counter=self.metrics.arm,
        )
        self._scheduler.start()
        self.reconciler = Reconciler(self.node_kind, self._kube, self._azure, s, self.catalog,
                                     self.metrics, self.clock)
        kinds = (self.node_kind.kind, self.other_kind.kind)
        self.gc = GarbageCollector(self._azure, self._kube, self.metrics, self.clock,
                                   s.gc_grace_seconds, s.gc_interval_seconds, kinds)
        if self._run_gc:
            self._scheduler.spawn(self.gc.run())

    async def stop(self) -> None:
        await self._scheduler.stop()
        if self._azure is not None:
            await self._azure.close()
        if self._kube is not None:
            await self._kube.close()

    async def close_credential(self) -> None:
        """Close the credential (the process owns it; tests pass their own and keep it)."""
        close = getattr(self._credential, "close", None)
        if close is not None:
            await close()

    def forget(self, name: str) -> None:
        self._scheduler.forget(name)
        self._export()

    # -- triggers ------------------------------------------------------------------------
    def trigger(self, name: str) -> None:
        """Look at the object soon; a change never waits out the backoff of a failed pass."""
        self._scheduler.trigger(name, urgent=True)

    def node_changed(self, labels: dict[str, str]) -> None:
        """A Node of one of our pools changed: look at the object of the pool's name, if we
        know it (of the kind served; one of the other kind is only finalized)."""
        pool = labels.get(AGENTPOOL_NODE_LABEL)
        if pool and pool in self._scheduler:
            self.trigger(pool)

    def requeue(self, name: str, delay: float) -> None:
        """Look at the object again in ``delay`` seconds (an earlier timer wins)."""
        self._scheduler.requeue(name, delay)

    async def _pass(self, name: str, state: KeyState[MachineState]) -> Next | None:
        assert self._kube is not None and self.reconciler is not None
        body = await self._kube.get_or_none(self.node_kind.kind, name)
        if body is None:
            if name not in self._finalizing:  # keep the lock of a finalizer step under way
                self.forget(name)
            return None
        if body["metadata"].get("deletionTimestamp"):
            return None  # the finalizer drives it from here
        outcome = await self.reconciler.reconcile(body, state.failures)
        state.data.phase = outcome.phase
        self._export()
        return Next(outcome.delay, failed=outcome.retrying)

    async def _failed(
        self, name: str, state: KeyState[MachineState], exc: Exception, delay: float
    ) -> None:
        log.warning("%s %s: pass failed (%s: %s); retrying in %.1f s", self.node_kind.title,
                    name, type(exc).__name__, exc, delay)
        self.metrics.errors.labels(error=type(exc).__name__).inc()

    def _export(self) -> None:
        phases = Counter(s.data.phase for s in self._scheduler.states())
        self.metrics.set_phases(dict(phases), self.node_kind.conditions.order)

    # -- deletion ------------------------------------------------------------------------
    async def finalize(self, body: dict[str, Any]) -> float | None:
        """One finalizer step of a Machine or a NodeClaim (either kind); the delay before the
        next one, or None when it may be released.

        Takes the name's lock but not a worker slot: passes hold a slot while they wait for
        the lock, so the other order could deadlock.
        """
        assert self.reconciler is not None
        name = body["metadata"]["name"]
        state = self._scheduler.state(name)
        self._finalizing.add(name)  # until released: passes then leave the name's state be
        async with state.lock:
            delay, failed = await self.reconciler.finalize(body, state.failures)
        state.failures = state.failures + 1 if failed else 0
        if delay is None:
            self._finalizing.discard(name)
            self.forget(name)
            return None
        return delay * random.uniform(0.9, 1.1) if failed else delay
