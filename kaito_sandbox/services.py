"""Services on loopback: each Service gets a local port that forwards to a Ready pod of its
selector (what kube-proxy does, for one machine)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any


class ServiceProxies:
    """TCP forwarders in a thread of their own; `backend(key)` names the port to reach."""

    def __init__(self, backend: Callable[[str], int | None]) -> None:
        self._backend = backend
        self._loop = asyncio.new_event_loop()
        self._servers: dict[str, asyncio.AbstractServer] = {}
        self.ports: dict[str, int] = {}
        self._thread = threading.Thread(target=self._loop.run_forever, name="sandbox-services",
                                        daemon=True)

    def start(self) -> ServiceProxies:
        self._thread.start()
        return self

    def stop(self) -> None:
        async def close() -> None:
            for server in self._servers.values():
                server.close()
            self._loop.stop()

        asyncio.run_coroutine_threadsafe(close(), self._loop)
        self._thread.join(10)

    def ensure(self, key: str) -> int:
        """The local port of Service `ns/name` (opened on first use)."""
        if key not in self.ports:
            future = asyncio.run_coroutine_threadsafe(self._open(key), self._loop)
            self.ports[key] = future.result(10)
        return self.ports[key]

    def close(self, key: str) -> None:
        server = self._servers.pop(key, None)
        self.ports.pop(key, None)
        if server is not None:
            self._loop.call_soon_threadsafe(server.close)

    async def _open(self, key: str) -> int:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            port = self._backend(key)
            if port is None:
                writer.close()
                return
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                writer.close()
                return
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        self._servers[key] = server
        return int(server.sockets[0].getsockname()[1])


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


def selects(service: dict[str, Any], pod: dict[str, Any]) -> bool:
    selector = service.get("spec", {}).get("selector") or {}
    labels = pod["metadata"].get("labels") or {}
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())
