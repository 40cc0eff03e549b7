"""A small simulated AKS: the Node of an agent pool joins when ARM reports the pool Succeeded
and goes when the pool is deleted (what the cluster autoscaler and kubelet do for real).

It listens to :class:`~kaito_sandbox.sim.arm.ArmSimulator` callbacks and writes Nodes to the
Kubernetes API over HTTP from a worker thread of its own, so ARM's answers never wait on the
API server, and Nodes join a little after the pool succeeds, as they do on AKS.  Everything is
idempotent (409 on create and 404 on delete are "already so").  Nodes are named as AKS names
them, ``aks-<pool>-<8 digits>-vmss000000``, with the digits derived from the cluster, so the
same pool always gets the same Node name.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from kaito_sandbox.sim.arm import ArmSimulator, PoolEvent
from kaito_sandbox.sim.node_objects import gpu_node

__all__ = ["SimulatedAks", "aks_node", "node_name"]

NODES = "/api/v1/nodes"
AGENTPOOL_LABEL = "kubernetes.azure.com/agentpool"


def node_name(event: PoolEvent) -> str:
    seed = f"{event.subscription}/{event.resource_group}/{event.cluster}".lower()
    digits = int(hashlib.sha256(seed.encode()).hexdigest(), 16) % 10**8
    return f"aks-{event.name}-{digits:08d}-vmss000000"


def _taint(text: str) -> dict[str, str]:
    head, _, effect = text.rpartition(":")
    key, _, value = head.partition("=")
    return {"key": key, "value": value, "effect": effect} if value else {"key": key,
                                                                            "effect": effect}


def aks_node(
    name: str,
    pool: str,
    vm_size: str,
    gpus: int,
    *,
    labels: Mapping[str, str],
    taints: list[dict[str, str]],
    subscription: str,
    resource_group: str,
    cluster: str,
    location: str,
    index: int = 0,
) -> dict[str, Any]:
    """A Ready Node as AKS registers VM `index` of agent pool `pool`: `gpu_node` with AKS's own
    labels (pool, cluster) besides `labels`, and the scale set's provider ID."""
    aks_labels = {
        **labels,
        AGENTPOOL_LABEL: pool,
        "agentpool": pool,
        "beta.kubernetes.io/instance-type": vm_size,
        "kubernetes.azure.com/cluster": f"MC_{resource_group}_{cluster}",
    }
    scale_set = name.rpartition("vmss")[0] + "vmss"
    node_rg = f"mc_{resource_group}_{cluster}_{location}".lower()
    provider_id = (
        f"azure:///subscriptions/{subscription}/resourceGroups/{node_rg}"
        f"/providers/Microsoft.Compute/virtualMachineScaleSets/{scale_set}"
        f"/virtualMachines/{index}"
    )
    return gpu_node(name, vm_size, gpus, aks_labels, taints, provider_id)


class SimulatedAks:
    """Start it with the ARM simulator it follows; ``apply_pool_labels=False`` leaves copying
    the Machine's labels and taints to the provisioner (AKS applies the pool's own)."""

    def __init__(
        self,
        server: str,
        arm: ArmSimulator,
        gpus_of: Callable[[str], int],
        *,
        apply_pool_labels: bool = True,
        timeout: float = 10.0,
    ) -> None:
        self.server, self.arm, self.gpus_of = server, arm, gpus_of
        self.apply_pool_labels = apply_pool_labels
        self.joined: list[str] = []
        self.removed: list[str] = []
        self._timeout = timeout
        self._queue: queue.Queue[tuple[str, PoolEvent] | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    def start(self) -> SimulatedAks:
        self.arm.on_pool_succeeded.append(self._succeeded)
        self.arm.on_pool_deleted.append(self._deleted)
        self._thread = threading.Thread(target=self._loop, name="sim-aks", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        for hooks, hook in ((self.arm.on_pool_succeeded, self._succeeded),
                            (self.arm.on_pool_deleted, self._deleted)):
            if hook in hooks:
                hooks.remove(hook)
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(self._timeout)

    def __enter__(self) -> SimulatedAks:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def idle(self) -> bool:
        """Nothing queued (tests wait on it instead of sleeping)."""
        return self._queue.unfinished_tasks == 0

    def _succeeded(self, event: PoolEvent) -> None:
        self._queue.put(("join", event))

    def _deleted(self, event: PoolEvent) -> None:
        self._queue.put(("remove", event))

    def _loop(self) -> None:
        with httpx.Client(base_url=self.server, timeout=self._timeout) as http:
            while (item := self._queue.get()) is not None:
                try:
                    kind, event = item
                    (self._join if kind == "join" else self._remove)(http, event)
                except httpx.HTTPError:
                    pass  # the API server is stopping; nothing to retry against
                finally:
                    self._queue.task_done()

    def node(self, event: PoolEvent) -> dict[str, Any]:
        """The Node AKS would register for the pool's single VM."""
        return aks_node(
            node_name(event), event.name, event.vm_size, self.gpus_of(event.vm_size),
            labels=event.node_labels if self.apply_pool_labels else {},
            taints=[_taint(t) for t in event.node_taints] if self.apply_pool_labels else [],
            subscription=event.subscription, resource_group=event.resource_group,
            cluster=event.cluster, location=self.arm.location,
        )

    def _join(self, http: httpx.Client, event: PoolEvent) -> None:
        node = self.node(event)
        response = http.post(NODES, json=node)
        if response.status_code not in (201, 409):
            response.raise_for_status()
        if response.status_code == 201:
            self.joined.append(node["metadata"]["name"])

    def _remove(self, http: httpx.Client, event: PoolEvent) -> None:
        name = node_name(event)
        response = http.delete(f"{NODES}/{name}")
        if response.status_code == 200:
            self.removed.append(name)
        elif response.status_code != 404:
            response.raise_for_status()
