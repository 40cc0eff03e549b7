"""Agent pools and operations as the simulated ARM endpoint (`kaito_sandbox.sim.arm`) stores
them, and the AKS preflight checks of a pool's body."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kaito_sandbox.sim.arm_faults import PoolEvent

__all__ = [
    "BUSY_STATES",
    "READ_ONLY_PROPERTIES",
    "Operation",
    "Pool",
    "PoolKey",
    "iso_time",
    "pool_key",
    "preflight_error",
]

#: (subscription, resource group, cluster, pool name), in lowercase.
PoolKey = tuple[str, str, str, str]

_POOL_NAME = re.compile(r"^[a-z][a-z0-9]{0,11}$")
#: Properties ARM sets itself: dropped from a PUT body.
READ_ONLY_PROPERTIES = (
    "provisioningState",
    "powerState",
    "currentOrchestratorVersion",
    "nodeImageVersion",
)
#: Provisioning states during which ARM refuses another PUT of the pool (409).
BUSY_STATES = ("Creating", "Updating", "Deleting")


@dataclass
class Pool:
    """One agent pool as ARM stores it; ``op`` is the id of its latest operation."""

    cluster: tuple[str, str, str]  # (subscription, resource group, cluster) as first written
    name: str
    props: dict[str, Any]
    op: str | None = None

    def body(self) -> dict[str, Any]:
        sub, rg, cluster = self.cluster
        return {
            "id": f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ContainerService"
            f"/managedClusters/{cluster}/agentPools/{self.name}",
            "name": self.name,
            "type": "Microsoft.ContainerService/managedClusters/agentPools",
            "properties": json.loads(json.dumps(self.props)),
        }

    def event(self) -> PoolEvent:
        props = self.props
        return PoolEvent(
            subscription=self.cluster[0],
            resource_group=self.cluster[1],
            cluster=self.cluster[2],
            name=self.name,
            vm_size=props.get("vmSize", ""),
            node_labels=dict(props.get("nodeLabels") or {}),
            node_taints=tuple(props.get("nodeTaints") or ()),
            os_disk_size_gb=props.get("osDiskSizeGB"),
        )


@dataclass
class Operation:
    """A long-running create or delete of one pool."""

    id: str
    kind: str  # "create" | "delete"
    key: PoolKey
    started: float
    observed: int = 0
    status: str = "InProgress"
    error: dict[str, str] | None = None
    fail_with: dict[str, str] | None = None


def pool_key(sub: str, rg: str, cluster: str, name: str) -> PoolKey:
    """ARM names are case-insensitive: the key of a pool is in lowercase."""
    return (sub.lower(), rg.lower(), cluster.lower(), name.lower())


def iso_time(monotonic: float) -> str:
    """A ``time.monotonic()`` reading as an ARM timestamp."""
    wall = time.time() - (time.monotonic() - monotonic)
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(wall))


def preflight_error(name: str, props: Mapping[str, Any]) -> str | None:
    """The AKS preflight checks a provisioner can get wrong; None when the body passes."""
    if not _POOL_NAME.match(name):
        return (
            f"Agent pool name {name!r} is invalid: it must start with a lowercase letter and "
            "contain at most 12 lowercase letters and numbers."
        )
    if not props.get("vmSize"):
        return "properties.vmSize is required."
    disk = props.get("osDiskSizeGB")
    if disk is not None and not (isinstance(disk, int) and 30 <= disk <= 2048):
        return f"properties.osDiskSizeGB {disk!r} is invalid: it must be between 30 and 2048."
    if props.get("mode", "User") not in ("User", "System", "Gateway"):
        return f"properties.mode {props.get('mode')!r} is invalid."
    for taint in props.get("nodeTaints") or []:
        if not re.match(r"^[^=:\s]+(=[^:\s]*)?:(NoSchedule|PreferNoSchedule|NoExecute)$", taint):
            return f"properties.nodeTaints entry {taint!r} is invalid."
    return None
