"""A simulated ARM agent-pools endpoint over https on loopback (docs/design.md §7).

The real Azure SDK talks to it unchanged: bearer token required on every call, any api-version,
long-running operations as AKS does them (PUT → 201 + ``Azure-AsyncOperation``; DELETE → 202 +
``Location``, polled 202 … 204), provisioning states (Creating → Succeeded/Failed, Deleting), and
ARM error bodies ``{"error": {"code", "message"}}``.  Faults are injected per operation
(``get``, ``put``, ``delete``, ``list``, ``poll``) and pool name.

An operation completes after ``lro_polls`` observations (polls of the operation, GETs or LISTs
of its pool) or ``lro_seconds``, whichever is set and comes first; the seconds also tick with
nobody looking, so a simulated AKS fed by ``on_pool_succeeded`` can create Nodes by itself.
Callbacks run on a server thread, outside the simulator's lock.

Deviations kept on purpose: no paging of LIST, no etags, no ``Retry-After`` on operation polls,
no managed-cluster resource (any cluster name exists), validation of a few fields only.

This module holds the ARM semantics: what each request does to pools and operations.  The
records and the preflight checks are in `kaito_sandbox.sim.arm_pools`, the fault types in
`kaito_sandbox.sim.arm_faults` (``Fault``, ``PoolEvent`` and ``CallRecord`` are part of this
module's API too), the https listener and request front door in `kaito_sandbox.sim.arm_http`.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from kaito_sandbox.sim.arm_faults import CallRecord, Fault, FaultTable, PoolEvent, _error, _Reply
from kaito_sandbox.sim.arm_http import HttpsEndpoint, Route, reject, route
from kaito_sandbox.sim.arm_pools import (
    BUSY_STATES,
    READ_ONLY_PROPERTIES,
    Operation,
    Pool,
    PoolKey,
    iso_time,
    pool_key,
    preflight_error,
)

__all__ = ["ArmSimulator", "CallRecord", "Fault", "PoolEvent"]

class ArmSimulator:
    """The endpoint in a background thread: ``with ArmSimulator() as arm: arm.base_url``."""

    def __init__(
        self,
        *,
        lro_polls: int | None = 2,
        lro_seconds: float | None = None,
        token: str | None = None,
        location: str = "eastus",
        unavailable_skus: tuple[str, ...] = (),
        pool_quota: int | None = None,
        max_hang_s: float = 5.0,
        cert_dir: Path | None = None,
        host: str = "127.0.0.1",
        startup_timeout: float = 5.0,
        shutdown_timeout: float = 5.0,
    ) -> None:
        self.lro_polls, self.lro_seconds = lro_polls, lro_seconds
        self.token, self.location = token, location
        self.unavailable_skus, self.pool_quota = set(unavailable_skus), pool_quota
        self.max_hang_s = max_hang_s
        self.faults = FaultTable()
        self.on_pool_succeeded: list[Callable[[PoolEvent], None]] = []
        self.on_pool_deleted: list[Callable[[PoolEvent], None]] = []
        self._cert_dir, self._host = cert_dir, host
        self._startup_timeout, self._shutdown_timeout = startup_timeout, shutdown_timeout
        self._lock = threading.RLock()
        self._pools: dict[PoolKey, Pool] = {}
        self._ops: dict[str, Operation] = {}
        self._calls: list[CallRecord] = []
        self._stopping = threading.Event()
        self._http: HttpsEndpoint | None = None
        self.base_url = ""
        self.ca_path = Path()

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> ArmSimulator:
        self._http = HttpsEndpoint(
            self, self._host, self._cert_dir, self._startup_timeout, self._shutdown_timeout
        )
        self.ca_path, self.base_url = self._http.bind()
        self._stopping.clear()
        self._http.serve()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._http is not None:
            self._http.stop()
            self._http = None

    def __enter__(self) -> ArmSimulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- test and sandbox API --------------------------------------------------------------
    def inject(self, operation: str, fault: Fault, pool: str = "*") -> None:
        """Answer the next ``fault.times`` matching calls with ``fault``."""
        self.faults.add(operation, pool, fault)

    def clear_faults(self) -> None:
        self.faults.clear()

    @property
    def calls(self) -> list[CallRecord]:
        with self._lock:
            return list(self._calls)

    def clear_calls(self) -> None:
        with self._lock:
            self._calls.clear()

    def pools(self) -> dict[str, dict[str, Any]]:
        """Every pool's ARM body by name (all clusters)."""
        with self._lock:
            return {p.name: p.body() for p in self._pools.values()}

    def seed_pool(
        self,
        subscription: str,
        resource_group: str,
        cluster: str,
        name: str,
        properties: Mapping[str, Any],
        state: str = "Succeeded",
    ) -> None:
        """Put a pool in place without an operation (a system pool, someone else's pool)."""
        props = {**properties, "provisioningState": state, "powerState": {"code": "Running"}}
        with self._lock:
            key = pool_key(subscription, resource_group, cluster, name)
            self._pools[key] = Pool((subscription, resource_group, cluster), name, props)

    def complete_operations(self) -> None:
        """Finish every running operation now (tests that do not want to poll)."""
        with self._lock:
            events = [self._finish(op) for op in self._ops.values() if op.status == "InProgress"]
        self._fire(events)

    # -- request handling (server threads) -------------------------------------------------
    def tick(self) -> None:
        """Complete operations whose time is up (called by the server loop every 50 ms)."""
        if self.lro_seconds is None:
            return
        with self._lock:
            events = [self._finish(op) for op in self._ops.values() if self._due(op)]
        self._fire(events)

    def handle(self, method: str, target: str, headers: Mapping[str, str], raw: bytes) -> _Reply:
        """Answer one request; ``headers`` have lowercase names."""
        where = route(method, target)
        fault = self.faults.take(where.operation, where.name)
        if fault is not None and fault.hang_s:
            self._stopping.wait(min(fault.hang_s, self.max_hang_s))
            fault = None if fault.status == 0 else fault
        events: list[tuple[str, PoolEvent] | None] = []
        reply = self._answer(method, where, headers, raw, fault, events)
        with self._lock:
            self._calls.append(
                CallRecord(
                    method, where.path, reply.status, where.operation, where.name, time.monotonic()
                )
            )
        self._fire(events)
        return reply

    def _answer(
        self,
        method: str,
        where: Route,
        headers: Mapping[str, str],
        raw: bytes,
        fault: Fault | None,
        events: list[tuple[str, PoolEvent] | None],
    ) -> _Reply:
        refused = reject(headers, where.query, self.token)
        if refused is not None:
            return refused
        pools, ops = where.pools, where.ops
        if fault is not None and not fault.fail_operation:
            return fault.reply()
        if ops:
            return self._poll(ops["kind"].lower(), ops["id"], events)
        if pools is None or method not in ("GET", "PUT", "DELETE"):
            return _error(404, "InvalidResourceType", "The resource type could not be found.")
        cluster = (pools["sub"], pools["rg"], pools["cluster"])
        with self._lock:
            if not pools["name"]:
                return self._list(cluster, events)
            key = pool_key(*cluster, pools["name"])
            if method == "GET":
                return self._get(key, events)
            if method == "DELETE":
                return self._delete(key, events)
            return self._put(cluster, pools["name"], raw, fault)

    def _list(self, cluster: tuple[str, str, str], events: list[Any]) -> _Reply:
        prefix = pool_key(*cluster, "")[:3]
        mine = [p for k, p in self._pools.items() if k[:3] == prefix]
        for pool in mine:
            self._observe(pool, events)
        alive = [p.body() for k, p in self._pools.items() if k[:3] == prefix]
        return _Reply(200, {"value": alive})

    def _get(self, key: PoolKey, events: list[Any]) -> _Reply:
        pool = self._pools.get(key)
        if pool is not None:
            self._observe(pool, events)
        pool = self._pools.get(key)
        if pool is None:
            return _error(404, "NotFound", f"agent pool {key[3]} not found")
        return _Reply(200, pool.body())

    def _put(
        self, cluster: tuple[str, str, str], name: str, raw: bytes, fault: Fault | None
    ) -> _Reply:
        key = pool_key(*cluster, name)
        existing = self._pools.get(key)
        if existing is not None and existing.props.get("provisioningState") in BUSY_STATES:
            state = existing.props["provisioningState"].lower().removesuffix("ing")
            return _error(
                409,
                "OperationNotAllowed",
                "Operation is not allowed because there's "
                f"an in progress {state} node pool operation on agent pool {name}.",
            )
        try:
            props = dict(json.loads(raw or b"{}").get("properties") or {})
        except (ValueError, AttributeError):
            return _error(400, "InvalidRequestContent", "The request content is not valid JSON.")
        invalid = preflight_error(name, props)
        if invalid:
            return _error(400, "InvalidParameter", invalid)
        if props["vmSize"] in self.unavailable_skus:
            return _error(
                400,
                "SkuNotAvailable",
                f"The requested VM size {props['vmSize']} is "
                f"currently not available in location '{self.location}'.",
            )
        live = sum(1 for k, p in self._pools.items() if k[:3] == key[:3] and k != key)
        if existing is None and self.pool_quota is not None and live >= self.pool_quota:
            return _error(
                400,
                "QuotaExceeded",
                "Operation could not be completed as it results "
                f"in exceeding approved agent pool quota (limit {self.pool_quota}).",
            )
        for read_only in READ_ONLY_PROPERTIES:
            props.pop(read_only, None)
        props.update(
            provisioningState="Updating" if existing else "Creating",
            powerState={"code": "Running"},
            currentOrchestratorVersion="1.30.0",
            nodeImageVersion="AKSUbuntu-2204gen2containerd-202405.03.0",
        )
        pool = Pool(existing.cluster if existing else cluster, name, props)
        op = self._new_op("create", key)
        if fault is not None:
            op.fail_with = {"code": fault.code, "message": fault.message}
        pool.op = op.id
        self._pools[key] = pool
        url = f"{self._op_url(cluster[0], 'operations', op.id)}"
        return _Reply(200 if existing else 201, pool.body(), {"Azure-AsyncOperation": url})

    def _delete(self, key: PoolKey, events: list[Any]) -> _Reply:
        pool = self._pools.get(key)
        if pool is None:
            return _Reply(204)
        current = self._ops.get(pool.op or "")
        if current is not None and current.kind == "delete" and current.status == "InProgress":
            return _Reply(
                202, None, {"Location": self._op_url(key[0], "operationresults", current.id)}
            )
        if current is not None and current.status == "InProgress":
            current.status = "Canceled"
            current.error = {"code": "OperationPreempted", "message": "Deleted during creation."}
        pool.props["provisioningState"] = "Deleting"
        op = self._new_op("delete", key)
        pool.op = op.id
        return _Reply(
            202, None, {"Location": self._op_url(pool.cluster[0], "operationresults", op.id)}
        )

    def _poll(self, kind: str, op_id: str, events: list[Any]) -> _Reply:
        with self._lock:
            op = self._ops.get(op_id)
            if op is None:
                return _error(404, "NotFound", f"operation {op_id} not found")
            op.observed += 1
            if self._due(op):
                events.append(self._finish(op))
            if kind == "operationresults":
                if op.status == "InProgress":
                    return _Reply(202, None, {"Location": self._op_url(op.key[0], kind, op.id)})
                return _Reply(204)
            body: dict[str, Any] = {
                "id": op.id,
                "name": op.id,
                "status": op.status,
                "startTime": iso_time(op.started),
            }
            if op.error:
                body["error"] = op.error
            return _Reply(200, body)

    # -- operation progress (called under the lock) ----------------------------------------
    def _new_op(self, kind: str, key: PoolKey) -> Operation:
        op = Operation(str(uuid.uuid4()), kind, key, time.monotonic())
        self._ops[op.id] = op
        return op

    def _op_url(self, subscription: str, kind: str, op_id: str) -> str:
        return (
            f"{self.base_url}/subscriptions/{subscription}/providers/Microsoft."
            f"ContainerService/locations/{self.location}/{kind}/{op_id}?api-version=2024-05-01"
        )

    def _observe(self, pool: Pool, events: list[Any]) -> None:
        op = self._ops.get(pool.op or "")
        if op is not None and op.status == "InProgress":
            op.observed += 1
            if self._due(op):
                events.append(self._finish(op))

    def _due(self, op: Operation) -> bool:
        if op.status != "InProgress":
            return False
        by_polls = self.lro_polls is not None and op.observed >= self.lro_polls
        elapsed = time.monotonic() - op.started
        return by_polls or (self.lro_seconds is not None and elapsed >= self.lro_seconds)

    def _finish(self, op: Operation) -> tuple[str, PoolEvent] | None:
        pool = self._pools.get(op.key)
        if op.kind == "delete":
            op.status = "Succeeded"
            if pool is None:
                return None
            del self._pools[op.key]
            return ("deleted", pool.event())
        if op.fail_with is not None:
            op.status, op.error = "Failed", op.fail_with
            if pool is not None:
                pool.props["provisioningState"] = "Failed"
                pool.props["status"] = {"provisioningError": op.fail_with}
            return None
        op.status = "Succeeded"
        if pool is None:
            return None
        pool.props["provisioningState"] = "Succeeded"
        pool.props.pop("status", None)
        return ("succeeded", pool.event())

    def _fire(self, events: list[tuple[str, PoolEvent] | None]) -> None:
        for item in events:
            if item is None:
                continue
            kind, event = item
            for callback in list(
                self.on_pool_succeeded if kind == "succeeded" else self.on_pool_deleted
            ):
                try:
                    callback(event)
                except Exception:  # noqa: BLE001 - a broken listener must not break ARM
                    pass
