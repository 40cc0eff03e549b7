"""WATCH streams with real API server semantics.

kmock 0.8 ignores ``?resourceVersion=``, ``timeoutSeconds`` and selectors on watches, and loses
events between its snapshot and its subscription.  Here the watch subscribes and then lists or
replays the history in the same synchronous step on the emulator's loop, so nothing is lost;
a version older than the bounded history answers an ``ERROR`` event with 410 Expired (kopf then
re-lists, as with a real server).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from kaito_sandbox.sim import errors
from kaito_sandbox.sim.routing import Target
from kaito_sandbox.sim.selectors import FieldSelector, LabelSelector, SelectorError
from kaito_sandbox.sim.store import ResourceType, Store, WatchEvent

__all__ = ["DEFAULT_WATCH_TIMEOUT", "WatchHub"]

DEFAULT_WATCH_TIMEOUT = 1800.0  # the apiserver's --min-request-timeout
_STOP = object()  # sentinel that ends live watch streams when the emulator stops


@dataclass(frozen=True)
class _Filter:
    rtype: ResourceType
    namespace: str | None
    labels: LabelSelector
    fields: FieldSelector

    def matches(self, obj: dict[str, Any]) -> bool:
        return self.labels.matches(obj) and self.fields.matches(obj)

    def apply(self, event: WatchEvent) -> dict[str, Any] | None:
        """Selector transitions: objects that start/stop matching are ADDED/DELETED here."""
        if event.type_key != self.rtype.key:
            return None
        if self.namespace is not None and event.namespace != self.namespace:
            return None
        now = self.matches(event.obj)
        if event.type != "MODIFIED" or event.prev is None:
            return {"type": event.type, "object": event.obj} if now else None
        before = self.matches(event.prev)
        if now and before:
            return {"type": "MODIFIED", "object": event.obj}
        if now or before:
            return {"type": "ADDED" if now else "DELETED", "object": event.obj}
        return None


@dataclass
class WatchHub:
    """Opens watch streams on a store and ends them all on shutdown."""

    store: Store
    _queues: set[asyncio.Queue[Any]] = field(default_factory=set)

    def open(
        self, rtype: ResourceType, target: Target, params: dict[str, str]
    ) -> AsyncIterator[Any]:
        """Validate, subscribe and snapshot now (synchronously); the iterator streams the rest."""
        try:
            name_selector = f"metadata.name={target.name}" if target.name else None
            field_text = ",".join(s for s in (params.get("fieldSelector"), name_selector) if s)
            flt = _Filter(
                rtype,
                target.namespace,
                LabelSelector.parse(params.get("labelSelector")),
                FieldSelector.parse(field_text, rtype.plural),
            )
            timeout = float(params.get("timeoutSeconds") or DEFAULT_WATCH_TIMEOUT)
            since_rv = int(params.get("resourceVersion") or 0)
        except (SelectorError, ValueError) as e:
            raise errors.bad_request(str(e)) from None
        initial_events = params.get("sendInitialEvents") == "true"
        queue: asyncio.Queue[Any] = asyncio.Queue()
        token = self.store.subscribe(queue.put_nowait)
        initial: list[dict[str, Any]] = []
        if since_rv == 0 or initial_events:
            objs = self.store.list(rtype, target.namespace, flt.labels, flt.fields)
            initial = [{"type": "ADDED", "object": obj} for obj in objs]
            if initial_events:
                meta = {
                    "resourceVersion": str(self.store.rv),
                    "annotations": {"k8s.io/initial-events-end": "true"},
                }
                initial.append(
                    {
                        "type": "BOOKMARK",
                        "object": {
                            "kind": rtype.kind,
                            "apiVersion": rtype.api_version,
                            "metadata": meta,
                        },
                    }
                )
        else:
            replay = self.store.events_since(since_rv)
            if replay is None:
                self.store.unsubscribe(token)
                return self._expired(since_rv)
            initial = [out for event in replay if (out := flt.apply(event)) is not None]
        return self._stream(queue, token, initial, flt, timeout)

    def close_all(self) -> None:
        """End every live watch stream, so that the server can stop quickly."""
        for queue in list(self._queues):
            queue.put_nowait(_STOP)

    async def _expired(self, since_rv: int) -> AsyncIterator[Any]:
        yield b""
        why = f"too old resource version: {since_rv} ({self.store.history_floor})"
        yield {"type": "ERROR", "object": errors.ApiError(410, "Expired", why).body()}

    async def _stream(
        self,
        queue: asyncio.Queue[Any],
        token: int,
        initial: list[dict[str, Any]],
        flt: _Filter,
        timeout: float,
    ) -> AsyncIterator[Any]:
        self._queues.add(queue)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            yield b""  # send the headers now: clients wait for them before reading events
            for event in initial:
                yield event
            while (remaining := deadline - loop.time()) > 0:
                try:
                    item = await asyncio.wait_for(queue.get(), remaining)
                except TimeoutError:
                    return
                if item is _STOP:
                    return
                out = flt.apply(item)
                if out is not None:
                    yield out
        finally:
            self.store.unsubscribe(token)
            self._queues.discard(queue)
