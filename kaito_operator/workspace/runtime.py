"""The workspace controller's runtime: what its kopf handlers call.

Passes run on the shared `KeyScheduler`, keyed by (namespace, name): one at a time per
Workspace, many Workspaces at once, a burst of child events costing one extra pass. A ready
Workspace is still looked at every `RESYNC_SECONDS` (drift repair).

A pass that raises is shown on the Workspace (WorkspaceReady=False with the error; a Warning
Event only when the reason or message is new) and retried after the backoff delay, which grows
with each failure in a row and resets on success. While a retry is pending, child events and
the timer start no passes; a change of the Workspace itself (`urgent`) does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kaito_operator.cache import CachedClient, WatchCache
from kaito_operator.catalog import Catalog
from kaito_operator.controller.backoff import Backoff
from kaito_operator.controller.failures import describe_failure
from kaito_operator.controller.scheduler import KeyScheduler, KeyState, Next
from kaito_operator.kube import WORKSPACES, ApiError, Connection, KubeClient
from kaito_operator.settings import Settings
from kaito_operator.workspace.metrics import OperatorMetrics
from kaito_operator.workspace.names import WORKSPACE_LABEL, WORKSPACE_NAMESPACE_LABEL
from kaito_operator.workspace.provisioning import OWNED_KINDS, list_owned
from kaito_operator.workspace.reconcile import (
    WORKSPACE_CACHED_KINDS,
    Deps,
    reconcile,
    show_failure,
    shown_failure,
)

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
class WorkspaceState:
    """What the runtime keeps per Workspace besides the scheduler's bookkeeping."""

    settled: bool = False
    ready: bool = False
    last: float = 0.0
    """monotonic time of the last pass that completed."""
    failed_body: dict[str, Any] | None = None
    """The Workspace as the pass that raised read it, for the failure hook to write on (None:
    it could not be read)."""
    shown: tuple[str, str] | None = None
    """(reason, message) of the failure last shown; the same one is not announced again."""


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
        self._now = now
        self.cache = WatchCache(WORKSPACE_CACHED_KINDS)
        """Fed by the watches (`register_cache` in `build_registry`); the passes read from it."""
        self._client: CachedClient | None = None
        self._scheduler: KeyScheduler[Key, WorkspaceState] = KeyScheduler(
            self._pass, self._failed, WorkspaceState, debounce=DEBOUNCE_SECONDS,
            max_workers=settings.max_workers, backoff=backoff or Backoff(),
        )

    @property
    def backoff(self) -> Backoff:
        return self._scheduler.backoff

    def watch_scope(self, namespaces: Sequence[str]) -> None:
        """The namespaces kopf watches (none: the whole cluster), so the cache knows what it
        covers; call it with what `kopf.operator` gets."""
        self.cache.watch_scope(clusterwide=not namespaces, namespaces=namespaces)

    async def start(self, connection: Connection) -> None:
        self._client = CachedClient(KubeClient(connection), self.cache)
        self._scheduler.start()

    async def stop(self) -> None:
        await self._scheduler.stop()
        if self._client is not None:
            await self._client.close()

    @property
    def client(self) -> CachedClient:
        if self._client is None:
            raise RuntimeError("WorkspaceRuntime.start() was not called")
        return self._client

    @property
    def deps(self) -> Deps:
        return Deps(self.client, self.catalog, self.settings, self._now)

    def forget(self, key: Key) -> None:
        self._scheduler.forget(key)
        self._export_states()

    def due(self, key: Key) -> bool:
        """Should the timer trigger a pass? Yes while anything is pending, else rarely; never
        while a failed pass waits for its retry."""
        if self._scheduler.retry_pending(key):
            return False
        state = self._scheduler.state(key).data
        return not state.settled or time.monotonic() - state.last > RESYNC_SECONDS

    def retry_pending(self, key: Key) -> bool:
        """Is a failed pass of this Workspace waiting for its retry?"""
        return self._scheduler.retry_pending(key)

    def trigger(self, namespace: str, name: str, urgent: bool = False) -> None:
        """Run a pass soon. Unless `urgent`, nothing happens while a retry is pending."""
        self._scheduler.trigger((namespace, name), urgent)

    def trigger_for_labels(self, labels: dict[str, str], namespace: str | None) -> None:
        """Map a child (by its labels) back to its Workspace."""
        name = labels.get(WORKSPACE_LABEL)
        ns = labels.get(WORKSPACE_NAMESPACE_LABEL) or namespace
        if name and ns:
            self.trigger(ns, name)

    async def _pass(self, key: Key, state: KeyState[WorkspaceState]) -> Next:
        ws = state.data
        started = time.monotonic()
        body: dict[str, Any] | None = None
        try:
            body = await self.client.get_or_none(WORKSPACES, key[1], key[0])
            if body is None or body["metadata"].get("deletionTimestamp"):
                ws.shown = None
                return Next()
            outcome = await reconcile(body, self.deps)
        except Exception:
            ws.failed_body = body
            raise
        finally:
            self.metrics.reconcile_seconds.observe(time.monotonic() - started)
        ws.shown = None
        ws.settled, ws.ready = outcome.settled, outcome.ready
        ws.last = time.monotonic()
        self.metrics.reconciles.labels(result="ready" if outcome.ready else "pending").inc()
        self._export_states()
        return Next()

    async def _failed(
        self, key: Key, state: KeyState[WorkspaceState], exc: Exception, delay: float
    ) -> None:
        """Show the failure on the Workspace (never raising); the scheduler retries it."""
        ws = state.data
        self.metrics.reconcile_errors.inc()
        self.metrics.reconciles.labels(result="error").inc()
        ws.settled = ws.ready = False
        reason, message = describe_failure(exc)
        if isinstance(exc, ApiError):
            log.warning("[%s/%s] reconcile failed (%s): %s; retry %d in %.1f s",
                        *key, reason, message, state.failures, delay)
        else:
            log.error("[%s/%s] reconcile failed: %s; retry %d in %.1f s",
                      *key, message, state.failures, delay, exc_info=exc)
        self._export_states()
        body, ws.failed_body = ws.failed_body, None
        if body is None:
            return  # the Workspace could not even be read: nothing to write the failure on
        failure = (reason, message)
        announce = failure != ws.shown and failure != shown_failure(body)
        try:
            await show_failure(body, reason, message, self.deps, announce)
        except Exception as report:  # noqa: BLE001 - the retry will try to show it again
            log.warning("[%s/%s] could not write the failure to the status: %s",
                        *key, describe_failure(report)[1])
            return
        ws.shown = failure

    def _export_states(self) -> None:
        states = [s.data for s in self._scheduler.states()]
        ready = sum(s.ready for s in states)
        self.metrics.workspaces.labels(state="ready").set(ready)
        self.metrics.workspaces.labels(state="pending").set(len(states) - ready)

    async def finalize(self, body: dict[str, Any]) -> int:
        """Delete the Workspace's node objects of every kind (Machines and NodeClaims, whatever
        mode created them); returns how many still exist."""
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        remaining = 0
        async with self._scheduler.state(key).lock:
            for kind, _ in OWNED_KINDS:
                # Objects with finalizers are seen as the API server has them, not as watched;
                # a kind the cluster does not serve has none.
                found = await list_owned(self.client.api, kind, meta["namespace"], meta["name"])
                for obj in found:
                    if not obj["metadata"].get("deletionTimestamp"):
                        await self.client.delete(kind, obj["metadata"]["name"])
                remaining += len(found)
        if not remaining:
            self.forget(key)
        return remaining
