"""Fault injection for the emulated API server: answer chosen requests with an error.

A test adds an :class:`ApiFault` (e.g. "create deployments in namespace t-1 answers 422") to
the emulator's :class:`ApiFaultTable`; every request it matches is answered with a ``Status``
body carrying that code, reason and message instead of being served, until the fault is
removed or its ``times`` are used up.  The table is shared between the test's thread and the
emulator's loop, so every access holds a lock.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from kaito_sandbox.sim.errors import ApiError

__all__ = ["ApiFault", "ApiFaultTable"]

#: The Status reason the API server sends with each code (when the fault names none).
_REASONS = {
    400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
    409: "Conflict", 422: "Invalid", 429: "TooManyRequests", 500: "InternalError",
    503: "ServiceUnavailable", 504: "Timeout",
}


@dataclass(eq=False)
class ApiFault:
    """Which requests fail and how.  ``None`` in a selector field matches anything."""

    verb: str
    """RBAC verb: create, get, list, patch, update, delete, watch."""
    plural: str
    """Resource, e.g. ``deployments``."""
    status: int
    message: str
    reason: str | None = None
    group: str | None = None
    namespace: str | None = None
    name: str | None = None
    """The object's name (for create: the name in the request body)."""
    subresource: str | None = None
    """``status`` to fail only status writes; None matches the object and its subresources."""
    times: int | None = None
    """How many requests it fails; None: every matching request until removed."""
    hits: int = field(default=0, init=False)
    """How many requests it has failed so far."""

    def matches(self, verb: str, group: str, plural: str, namespace: str | None,
                name: str | None, subresource: str | None) -> bool:
        return (
            verb == self.verb and plural == self.plural
            and (self.group is None or group == self.group)
            and (self.namespace is None or namespace == self.namespace)
            and (self.name is None or name == self.name)
            and (self.subresource is None or subresource == self.subresource)
        )

    def error(self) -> ApiError:
        return ApiError(self.status, self.reason or _REASONS.get(self.status, "InternalError"),
                        self.message)


class ApiFaultTable:
    """The faults in force, first added first matched."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[ApiFault] = []

    def add(self, fault: ApiFault) -> ApiFault:
        if not 400 <= fault.status <= 599:
            raise ValueError(f"a fault answers 4xx or 5xx, not {fault.status}")
        with self._lock:
            self._faults.append(fault)
        return fault

    def remove(self, fault: ApiFault) -> None:
        with self._lock:
            if fault in self._faults:
                self._faults.remove(fault)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def take(self, verb: str, group: str, plural: str, namespace: str | None,
             name: str | None, subresource: str | None) -> ApiError | None:
        """The error to answer this request with (counting it), or None to serve it."""
        with self._lock:
            for fault in self._faults:
                if fault.matches(verb, group, plural, namespace, name, subresource):
                    fault.hits += 1
                    if fault.times is not None:
                        fault.times -= 1
                        if fault.times <= 0:
                            self._faults.remove(fault)
                    return fault.error()
        return None
