"""Scheduling of reconciles: one at a time per Workspace, many Workspaces at once.

Every trigger (the Workspace changed, a child changed, the timer fired) funnels into
`trigger(namespace, name)`. It starts a task unless one is already running for that
Workspace, in which case the running one goes round once more. So handlers return at once,
a burst of child events costs one extra pass, and a hundred Workspaces provisioning at the
same time do not queue behind each other.

A pass that raises is shown on the Workspace (WorkspaceReady=False with the error; a Warning
Event only when the reason or message is new) and retried after a backoff delay that grows
with each failure in a row and resets on success. While a retry is pending, child events and
the timer do not start passes; a change of the Workspace itself (`urgent`) does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kaito_operator.catalog import Catalog
from kaito_operator.kube import MACHINES, WORKSPACES, ApiError, Connection, KubeClient
from kaito_operator.settings import Settings
from kaito_operator.workspace.failures import Backoff, describe_failure
from kaito_operator.workspace.metrics import OperatorMetrics
from kaito_operator.workspace.names import WORKSPACE_LABEL, WORKSPACE_NAMESPACE_LABEL
from kaito_operator.workspace.reconcile import Deps, reconcile, show_failure, shown_failure

log = logging.getLogger(__name__)

Key = tuple[str, str]

#: A Workspace that is ready is still looked at this often (drift repair).
RESYNC_SECONDS = 300.0
#: Children change in bursts (pod, then Deployment status, then Events): a short pause
#: before each pass lets one pass see them all.
DEBOUNCE_SECONDS = 0.1


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class _State:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    dirty: bool = False
    urgent: bool = False
    """A pass was asked for that must not wait for a pending retry."""
    running: bool = False
    settled: bool = False
    ready: bool = False
    last: float = 0.0
    failures: int = 0
    """Passes that failed in a row."""
    retry: asyncio.TimerHandle | None = None
    """The pending retry of a failed pass."""
    shown: tuple[str, str] | None = None
    """(reason, message) of the failure last shown; the same one is not announced again."""

    def cancel_retry(self) -> None:
        if self.retry is not None:
            self.retry.cancel()
            self.retry = None


class WorkspaceRuntime:
    """What the kopf handlers call; create it, then `start()` inside the operator's loop."""

    def __init__(
        self,
        catalog: Catalog,
        settings: Settings,
        now: Callable[[], str] = utc_now,
        metrics: OperatorMetrics | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.catalog = catalog
        self.settings = settings
        self.metrics = metrics or OperatorMetrics()
        self.backoff = backoff or Backoff()
        self._now = now
        self._states: dict[Key, _State] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._client: KubeClient | None = None
        self._slots: asyncio.Semaphore | None = None

    async def start(self, connection: Connection) -> None:
        self._client = KubeClient(connection)
        self._slots = asyncio.Semaphore(self.settings.max_workers)

    async def stop(self) -> None:
        for state in self._states.values():
            state.cancel_retry()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.close()

    @property
    def deps(self) -> Deps:
        assert self._client is not None, "WorkspaceRuntime.start() was not called"
        return Deps(self._client, self.catalog, self.settings, self._now)

    def _state(self, key: Key) -> _State:
        return self._states.setdefault(key, _State())

    def forget(self, key: Key) -> None:
        state = self._states.pop(key, None)
        if state is not None:
            state.cancel_retry()
        self._export_states()

    def due(self, key: Key) -> bool:
        """Should the timer trigger a pass? Yes while anything is pending, else rarely; never
        while a failed pass waits for its retry."""
        state = self._state(key)
        if state.retry is not None:
            return False
        return not state.settled or time.monotonic() - state.last > RESYNC_SECONDS

    def retry_pending(self, key: Key) -> bool:
        """Is a failed pass of this Workspace waiting for its retry?"""
        state = self._states.get(key)
        return state is not None and state.retry is not None

    def trigger(self, namespace: str, name: str, urgent: bool = False) -> None:
        """Run a pass soon. Unless `urgent`, nothing happens while a retry is pending."""
        key = (namespace, name)
        state = self._state(key)
        if state.retry is not None and not urgent:
            return
        if state.running:
            state.dirty = True
            state.urgent = state.urgent or urgent
            return
        state.running = True
        task = asyncio.get_running_loop().create_task(self._drain(key, state))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def trigger_for_labels(self, labels: dict[str, str], namespace: str | None) -> None:
        """Map a child (by its labels) back to its Workspace."""
        name = labels.get(WORKSPACE_LABEL)
        ns = labels.get(WORKSPACE_NAMESPACE_LABEL) or namespace
        if name and ns:
            self.trigger(ns, name)

    def _retry(self, key: Key) -> None:
        state = self._states.get(key)
        if state is None:
            return
        state.retry = None
        self.trigger(*key, urgent=True)

    async def _drain(self, key: Key, state: _State) -> None:
        try:
            while True:
                await asyncio.sleep(DEBOUNCE_SECONDS)
                state.dirty = state.urgent = False
                await self._pass(key, state)
                if not state.dirty or (state.retry is not None and not state.urgent):
                    break
        finally:
            state.running = False

    async def _pass(self, key: Key, state: _State) -> None:
        assert self._slots is not None
        async with self._slots, state.lock:
            started = time.monotonic()
            body: dict[str, Any] | None = None
            try:
                body = await self.deps.client.get_or_none(WORKSPACES, key[1], key[0])
                if body is None or body["metadata"].get("deletionTimestamp"):
                    self._succeeded(state)
                    return
                outcome = await reconcile(body, self.deps)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - never let one Workspace stop the operator
                await self._failed(key, state, body, exc)
                return
            finally:
                self.metrics.reconcile_seconds.observe(time.monotonic() - started)
            self._succeeded(state)
            state.settled, state.ready = outcome.settled, outcome.ready
            state.last = time.monotonic()
            self.metrics.reconciles.labels(result="ready" if outcome.ready else "pending").inc()
            self._export_states()

    @staticmethod
    def _succeeded(state: _State) -> None:
        state.failures = 0
        state.shown = None
        state.cancel_retry()

    async def _failed(
        self, key: Key, state: _State, body: dict[str, Any] | None, exc: Exception
    ) -> None:
        """Show the failure on the Workspace (never raising) and schedule the retry."""
        self.metrics.reconcile_errors.inc()
        self.metrics.reconciles.labels(result="error").inc()
        state.settled = state.ready = False
        state.failures += 1
        delay = self.backoff.delay(state.failures)
        reason, message = describe_failure(exc)
        if isinstance(exc, ApiError):
            log.warning("[%s/%s] reconcile failed (%s): %s; retry %d in %.1f s",
                        *key, reason, message, state.failures, delay)
        else:
            log.error("[%s/%s] reconcile failed: %s; retry %d in %.1f s",
                      *key, message, state.failures, delay, exc_info=exc)
        state.cancel_retry()
        state.retry = asyncio.get_running_loop().call_later(delay, self._retry, key)
        if body is None:
            return  # the Workspace could not even be read: nothing to write the failure on
        failure = (reason, message)
        announce = failure != state.shown and failure != shown_failure(body)
        try:
            await show_failure(body, reason, message, self.deps, announce)
        except asyncio.CancelledError:
            raise
        except Exception as report:  # noqa: BLE001 - the retry will try to show it again
            log.warning("[%s/%s] could not write the failure to the status: %s",
                        *key, describe_failure(report)[1])
            return
        state.shown = failure
        self._export_states()

    def _export_states(self) -> None:
        ready = sum(s.ready for s in self._states.values())
        self.metrics.workspaces.labels(state="ready").set(ready)
        self.metrics.workspaces.labels(state="pending").set(len(self._states) - ready)

    async def finalize(self, body: dict[str, Any]) -> int:
        """Delete the Workspace's Machines; returns how many still exist."""
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        async with self._state(key).lock:
            labels = {WORKSPACE_LABEL: meta["name"], WORKSPACE_NAMESPACE_LABEL: meta["namespace"]}
            machines = await self.deps.client.list(MACHINES, labels=labels)
            for machine in machines:
                if not machine["metadata"].get("deletionTimestamp"):
                    await self.deps.client.delete(MACHINES, machine["metadata"]["name"])
        if not machines:
            self.forget(key)
        return len(machines)
