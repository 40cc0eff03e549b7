"""Garbage collection of orphaned agent pools: ours, owner gone, older than a grace period.

A pool's owner is the Machine *or* NodeClaim of its name: both kinds are listed whichever the
provisioner serves, so a pool of a Machine left from before a switch to NodeClaims (or the other
way round) is never collected while its object exists.  A kind whose CRD the cluster lacks
(the list answers 404) has no objects; any other listing error skips the pass, since collecting
on a partial view would delete live pools.

The finalizer deletes an object's pool in the normal case; this catches what it cannot: an
object force-deleted (finalizer removed by hand), a PUT that landed after its object went, a
provisioner that crashed between the two.  Pools are listed *before* the objects, so a pool
created for an object that exists is always matched by the lists that follow; that holds for
the watch cache too, since a pool is only created by a pass for an object the cache already
holds.  A pool without our labels, or whose age cannot be read, is never touched.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta

from kaito_operator.cache import Client
from kaito_operator.kube import MACHINES, NODECLAIMS, ApiError, Kind
from kaito_operator.provisioner.azure import AzurePools
from kaito_operator.provisioner.errors import ProvisionerError
from kaito_operator.provisioner.metrics import ProvisionerMetrics
from kaito_operator.provisioner.pools import PoolState

__all__ = ["GarbageCollector", "orphans"]

log = logging.getLogger(__name__)


def orphans(
    pools: Iterable[PoolState], owners: set[str], now: datetime, grace: timedelta
) -> list[str]:
    """Names of the pools garbage collection may delete (pure); ``owners``: the names of every
    Machine and NodeClaim."""
    found = []
    for pool in pools:
        if not pool.owned or pool.name in owners or pool.created_at is None:
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
        kinds: Sequence[Kind] = (MACHINES, NODECLAIMS),
    ) -> None:
        self._azure, self._kube, self._metrics = azure, kube, metrics
        self._kinds = tuple(kinds)
        self._clock = clock
        self._grace = timedelta(seconds=grace_seconds)
        self._interval = interval_seconds

    async def collect(self) -> list[str]:
        """Delete every orphan found now; returns the names whose deletion was started."""
        pools = await self._azure.list_pools()
        self._metrics.pools_owned.set(sum(1 for p in pools if p.owned))
        owners = await self._owners()
        started = []
        for name in orphans(pools, owners, self._clock(), self._grace):
            try:
                await self._azure.begin_delete_pool(name)
            except ProvisionerError as exc:
                log.warning("garbage collection could not delete agent pool %s: %s", name, exc)
                continue
            log.info("garbage collection: deleting orphaned agent pool %s", name)
            self._metrics.pools_collected.inc()
            started.append(name)
        return started

    async def _owners(self) -> set[str]:
        """Names of every object of the kinds; raises on any listing error but a 404."""
        names: set[str] = set()
        for kind in self._kinds:
            try:
                items = await self._kube.list(kind)
            except ApiError as exc:
                if exc.status != 404:
                    raise
                continue  # the cluster does not serve this kind: none of it exists
            names.update(item["metadata"]["name"] for item in items)
        return names

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
