"""Garbage collection of orphaned agent pools: ours, Machine gone, older than a grace period.

The finalizer deletes a Machine's pool in the normal case; this catches what it cannot: a
Machine force-deleted (finalizer removed by hand), a PUT that landed after its Machine went, a
provisioner that crashed between the two.  Pools are listed *before* Machines, so a pool created
for a Machine that exists is always matched by the Machine list that follows; that holds for the
watch cache too, since a pool is only created by a pass for a Machine the cache already holds.
A pool without our labels, or whose age cannot be read, is never touched.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from kaito_operator.cache import Client
from kaito_operator.kube import MACHINES, ApiError
from kaito_operator.provisioner.azure import AzurePools
from kaito_operator.provisioner.errors import ProvisionerError
from kaito_operator.provisioner.metrics import ProvisionerMetrics
from kaito_operator.provisioner.pools import PoolState

__all__ = ["GarbageCollector", "orphans"]

log = logging.getLogger(__name__)


def orphans(
    pools: Iterable[PoolState], machines: set[str], now: datetime, grace: timedelta
) -> list[str]:
    """Names of the pools garbage collection may delete (pure)."""
    found = []
    for pool in pools:
        if not pool.owned or pool.name in machines or pool.created_at is None:
            continue
        if pool.provisioning_state == "Deleting" or now - pool.created_at < grace:
            continue
        found.append(pool.name)
    return sorted(found)


class GarbageCollector:
    """One pass with :meth:`collect`; :meth:`run` loops forever at ``interval`` seconds."""

    def __init__(
        self,
        azure: AzurePools,
        kube: Client,
        metrics: ProvisionerMetrics,
        clock: Callable[[], datetime],
        grace_seconds: float,
        interval_seconds: float,
    ) -> None:
        self._azure, self._kube, self._metrics = azure, kube, metrics
        self._clock = clock
        self._grace = timedelta(seconds=grace_seconds)
        self._interval = interval_seconds

    async def collect(self) -> list[str]:
        """Delete every orphan found now; returns the names whose deletion was started."""
        pools = await self._azure.list_pools()
        self._metrics.pools_owned.set(sum(1 for p in pools if p.owned))
        machines = {m["metadata"]["name"] for m in await self._kube.list(MACHINES)}
        started = []
        for name in orphans(pools, machines, self._clock(), self._grace):
            try:
                await self._azure.begin_delete_pool(name)
            except ProvisionerError as exc:
                log.warning("garbage collection could not delete agent pool %s: %s", name, exc)
                continue
            log.info("garbage collection: deleting orphaned agent pool %s", name)
            self._metrics.pools_collected.inc()
            started.append(name)
        return started

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.collect()
            except asyncio.CancelledError:
                raise
            except (ProvisionerError, ApiError, OSError) as exc:
                log.warning("garbage collection pass failed: %s", exc)
            except Exception:  # noqa: BLE001 - the loop must outlive one bad pass
                log.exception("garbage collection pass failed")
