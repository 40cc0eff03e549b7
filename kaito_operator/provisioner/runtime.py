"""Scheduling of Machine passes: one at a time per Machine, many Machines at once, no waits.

Every trigger (the Machine changed, its Node changed, a requeue timer fired) funnels into
:meth:`ProvisionerRuntime.trigger`: it starts a task unless one is running for that Machine, in
which case the running one goes round once more.  A pass that waits on Azure returns at once
with a delay, and the runtime arms a timer (``loop.call_later``) for it: fifty Machines whose
pools are being created hold no handler and no coroutine while ARM works.  The finalizer step
takes the same per-Machine lock, so a create never races the delete of the same pool.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from azure.core.credentials_async import AsyncTokenCredential

from kaito_operator.catalog import Catalog
from kaito_operator.kube import MACHINES, Connection, KubeClient
from kaito_operator.provisioner.azure import AzurePools
from kaito_operator.provisioner.gc import GarbageCollector
from kaito_operator.provisioner.metrics import ProvisionerMetrics
from kaito_operator.provisioner.pools import AGENTPOOL_NODE_LABEL
from kaito_operator.provisioner.reconcile import Outcome, Reconciler, backoff
from kaito_operator.provisioner.settings import ProvisionerSettings

__all__ = ["ProvisionerRuntime"]

log = logging.getLogger(__name__)

#: Events come in bursts (the Machine, then kopf's annotations, then the Node): a short pause
#: before each pass lets one pass see them all.
DEBOUNCE_SECONDS = 0.02


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class _State:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    dirty: bool = False
    running: bool = False
    attempts: int = 0
    phase: str = "Pending"
    timer: asyncio.TimerHandle | None = None
    due: float = 0.0


class ProvisionerRuntime:
    """What the kopf handlers call; create it, then :meth:`start` inside the operator's loop."""

    def __init__(
        self,
        settings: ProvisionerSettings,
        credential: AsyncTokenCredential,
        catalog: Catalog,
        *,
        connection_verify: bool | str | None = None,
        metrics: ProvisionerMetrics | None = None,
        clock: Callable[[], datetime] = utc_now,
        run_gc: bool = True,
    ) -> None:
        self.settings, self.catalog, self.clock = settings, catalog, clock
        self.metrics = metrics or ProvisionerMetrics()
        self._credential = credential
        verify = settings.arm_ca_bundle or True
        self._verify = connection_verify if connection_verify is not None else verify
        self._run_gc = run_gc
        self._states: dict[str, _State] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots: asyncio.Semaphore | None = None
        self._kube: KubeClient | None = None
        self._azure: AzurePools | None = None
        self.reconciler: Reconciler | None = None
        self.gc: GarbageCollector | None = None

    async def start(self, connection: Connection) -> None:
        s = self.settings
        self._kube = KubeClient(connection, user_agent="kaito-gpu-provisioner")
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
        self._slots = asyncio.Semaphore(s.max_workers)
        self.reconciler = Reconciler(self._kube, self._azure, s, self.catalog, self.metrics,
                                     self.clock)
        self.gc = GarbageCollector(self._azure, self._kube, self.metrics, self.clock,
                                   s.gc_grace_seconds, s.gc_interval_seconds)
        if self._run_gc:
            self._spawn(self.gc.run())

    async def stop(self) -> None:
        for state in self._states.values():
            if state.timer is not None:
                state.timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._azure is not None:
            await self._azure.close()
        if self._kube is not None:
            await self._kube.close()

    async def close_credential(self) -> None:
        """Close the credential (the process owns it; tests pass their own and keep it)."""
        close = getattr(self._credential, "close", None)
        if close is not None:
            await close()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _state(self, name: str) -> _State:
        return self._states.setdefault(name, _State())

    def forget(self, name: str) -> None:
        state = self._states.pop(name, None)
        if state is not None and state.timer is not None:
            state.timer.cancel()
        self._export()

    # -- triggers ------------------------------------------------------------------------
    def trigger(self, name: str) -> None:
        state = self._state(name)
        if state.running:
            state.dirty = True
            return
        state.running = True
        self._spawn(self._drain(name, state))

    def node_changed(self, labels: dict[str, str]) -> None:
        """A Node of one of our pools changed: look at its Machine, if we know it."""
        pool = labels.get(AGENTPOOL_NODE_LABEL)
        if pool and pool in self._states:
            self.trigger(pool)

    def requeue(self, name: str, delay: float) -> None:
        """Look at the Machine again in ``delay`` seconds (an earlier timer wins)."""
        loop = asyncio.get_running_loop()
        state = self._state(name)
        due = loop.time() + delay
        if state.timer is not None and not state.timer.cancelled() and state.due <= due:
            return
        if state.timer is not None:
            state.timer.cancel()
        state.due = due
        state.timer = loop.call_later(delay, self._fire, name)

    def _fire(self, name: str) -> None:
        state = self._states.get(name)
        if state is not None:
            state.timer = None
            self.trigger(name)

    async def _drain(self, name: str, state: _State) -> None:
        try:
            while True:
                await asyncio.sleep(DEBOUNCE_SECONDS)
                state.dirty = False
                await self._pass(name, state)
                if not state.dirty:
                    break
        finally:
            state.running = False

    async def _pass(self, name: str, state: _State) -> None:
        assert self._slots is not None and self._kube is not None and self.reconciler
        async with self._slots, state.lock:
            try:
                body = await self._kube.get_or_none(MACHINES, name)
                if body is None:
                    self.forget(name)
                    return
                if body["metadata"].get("deletionTimestamp"):
                    return  # the finalizer drives it from here
                outcome = await self.reconciler.reconcile(body, state.attempts)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - one Machine must not stop the others
                log.warning("Machine %s: pass failed (%s: %s); retrying", name,
                            type(exc).__name__, exc)
                self.metrics.errors.labels(error=type(exc).__name__).inc()
                outcome = Outcome(self._backoff(state), state.phase, retrying=True)
        state.attempts = state.attempts + 1 if outcome.retrying else 0
        state.phase = outcome.phase
        self._export()
        if outcome.delay is not None and name in self._states:
            self.requeue(name, outcome.delay)

    def _backoff(self, state: _State) -> float:
        s = self.settings
        return backoff(state.attempts, s.backoff_base_seconds, s.backoff_max_seconds, None)

    def _export(self) -> None:
        self.metrics.set_phases(dict(Counter(s.phase for s in self._states.values())))

    # -- deletion ------------------------------------------------------------------------
    async def finalize(self, body: dict[str, Any]) -> float | None:
        """One finalizer step; the delay before the next one, or None when it may be released.

        Takes the Machine's lock but not a worker slot: passes hold a slot while they wait for
        the lock, so the other order could deadlock.
        """
        assert self.reconciler is not None
        name = body["metadata"]["name"]
        state = self._state(name)
        async with state.lock:
            delay, failed = await self.reconciler.finalize(body, state.attempts)
        state.attempts = state.attempts + 1 if failed else 0
        if delay is None:
            self.forget(name)
            return None
        return delay * random.uniform(0.9, 1.1) if failed else delay
