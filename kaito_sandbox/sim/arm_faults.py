"""Fault injection and call records for the simulated ARM endpoint (`kaito_sandbox.sim.arm`).

The simulator module holds only pool and operation state; this one holds the
:class:`Fault` a test or the sandbox queues (throttling, 5xx, hangs, quota, SKU, auth errors, an
operation that fails after being accepted), the :class:`FaultTable` that hands them out per
operation and pool name, the :class:`CallRecord` log entry, the :class:`PoolEvent` a simulated
AKS consumes, and the reply type with the ARM error body ``{"error": {"code", "message"}}``.
`Fault`, `PoolEvent` and `CallRecord` are also part of `kaito_sandbox.sim.arm`'s API.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CallRecord", "Fault", "FaultTable", "PoolEvent"]


@dataclass(frozen=True)
class CallRecord:
    """One request as the simulator answered it (``operation``: get/put/delete/list/poll)."""

    method: str
    path: str
    status: int
    operation: str
    pool: str
    at: float = 0.0  # time.monotonic() when it was answered (Retry-After checks)


@dataclass(frozen=True)
class PoolEvent:
    """A pool that reached Succeeded or was deleted: what a simulated AKS needs for its Node."""

    subscription: str
    resource_group: str
    cluster: str
    name: str
    vm_size: str
    node_labels: dict[str, str]
    node_taints: tuple[str, ...]
    os_disk_size_gb: int | None


@dataclass
class Fault:
    """An injected failure; build one with the class methods.  ``times=None``: every call."""

    status: int = 0  # 0 with hang_s: answer normally, late
    code: str = ""
    message: str = ""
    retry_after: float | None = None
    hang_s: float = 0.0  # sleep before answering (longer than the client's timeout)
    fail_operation: bool = False  # accept the PUT, then fail its operation with code/message
    times: int | None = 1

    @classmethod
    def throttle(cls, retry_after: float = 7, times: int | None = 1) -> Fault:
        return cls(
            429, "TooManyRequests", "The request is being throttled.", retry_after, times=times
        )

    @classmethod
    def server_error(cls, times: int | None = 1) -> Fault:
        return cls(500, "InternalServerError", "An internal server error occurred.", times=times)

    @classmethod
    def hang(cls, seconds: float = 2.0, times: int | None = 1) -> Fault:
        return cls(hang_s=seconds, times=times)

    @classmethod
    def quota(cls, times: int | None = 1) -> Fault:
        return cls(
            400,
            "QuotaExceeded",
            "Operation could not be completed as it results in "
            "exceeding approved standardNCADSA100v4Family Cores quota. Additional details "
            "- Location: eastus, Current Limit: 0, Current Usage: 0, Additional Required: "
            "24.",
            times=times,
        )

    @classmethod
    def sku_not_available(cls, times: int | None = 1) -> Fault:
        return cls(
            400,
            "SkuNotAvailable",
            "The requested VM size Standard_NC24ads_A100_v4 is "
            "currently not available in location 'eastus'.",
            times=times,
        )

    @classmethod
    def invalid_parameter(
        cls, message: str = "properties.vmSize is invalid.", times: int | None = 1
    ) -> Fault:
        return cls(400, "InvalidParameter", message, times=times)

    @classmethod
    def conflict(cls, times: int | None = 1) -> Fault:
        return cls(
            409,
            "OperationNotAllowed",
            "Operation is not allowed because there's an in progress create node pool operation.",
            times=times,
        )

    @classmethod
    def unauthorized(cls, times: int | None = 1) -> Fault:
        return cls(401, "InvalidAuthenticationToken", "The access token is invalid.", times=times)

    @classmethod
    def forbidden(cls, times: int | None = 1) -> Fault:
        return cls(
            403,
            "AuthorizationFailed",
            "The client does not have authorization to "
            "perform action 'Microsoft.ContainerService/managedClusters/agentPools/write'.",
            times=times,
        )

    @classmethod
    def failed_operation(
        cls,
        code: str = "ZonalAllocationFailed",
        message: str = "Allocation failed. We do not have sufficient capacity "
        "for the requested VM size in this zone.",
        times: int | None = 1,
    ) -> Fault:
        """Only for ``put``: accepted (201), then the operation and the pool end Failed."""
        return cls(0, code, message, fail_operation=True, times=times)

    def reply(self) -> _Reply:
        headers = {} if self.retry_after is None else {"Retry-After": f"{self.retry_after:g}"}
        return _error(self.status, self.code, self.message, **headers)


class FaultTable:
    """Faults queued per (operation, pool name or "*"); the exact name wins over "*"."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: dict[tuple[str, str], list[Fault]] = {}

    def add(self, operation: str, pool: str, fault: Fault) -> None:
        with self._lock:
            self._queues.setdefault((operation, pool), []).append(fault)

    def clear(self) -> None:
        with self._lock:
            self._queues.clear()

    def take(self, operation: str, pool: str) -> Fault | None:
        with self._lock:
            for key in ((operation, pool), (operation, "*")):
                queue = self._queues.get(key)
                if queue:
                    fault = queue[0]
                    if fault.times is not None:
                        fault.times -= 1
                        if fault.times <= 0:
                            queue.pop(0)
                    return fault
        return None


@dataclass
class _Reply:
    """What the simulator answers: status, JSON body (None: empty) and extra headers."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


def _error(status: int, code: str, message: str, **headers: str) -> _Reply:
    return _Reply(status, {"error": {"code": code, "message": message}}, dict(headers))
