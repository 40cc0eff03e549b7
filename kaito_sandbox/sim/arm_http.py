"""HTTPS plumbing of the simulated ARM endpoint (`kaito_sandbox.sim.arm`).

The TLS listener on loopback with a fresh throwaway CA, its server thread (which also drives the
backend's ``tick``), the tracking of open sockets so ``stop`` can cut hung clients loose, the
per-connection handler that turns a request into the backend's ``handle``, and the request front
door: which ARM operation a URL names, and the bearer-token and api-version checks every call
must pass before faults or pools are looked at.  The backend is anything with ``handle`` and
``tick`` (:class:`ArmBackend`); the ARM semantics live in `kaito_sandbox.sim.arm`.
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import tempfile
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from kaito_sandbox.sim.arm_faults import _error, _Reply
from kaito_sandbox.sim.certs import write_server_cert

__all__ = ["ArmBackend", "HttpsEndpoint", "Route", "reject", "route"]

_PROVIDER = r"/providers/Microsoft\.ContainerService"
_POOLS = re.compile(
    rf"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+){_PROVIDER}"
    r"/managedClusters/(?P<cluster>[^/]+)/agentPools(?:/(?P<name>[^/]+))?/?$",
    re.IGNORECASE,
)
_OPS = re.compile(
    rf"^/subscriptions/(?P<sub>[^/]+){_PROVIDER}/locations/(?P<loc>[^/]+)"
    r"/(?P<kind>operations|operationresults)/(?P<id>[^/]+)$",
    re.IGNORECASE,
)


class ArmBackend(Protocol):
    """What the listener serves: one answer per request, and a clock tick every 50 ms."""

    def handle(
        self, method: str, target: str, headers: Mapping[str, str], raw: bytes
    ) -> _Reply: ...

    def tick(self) -> None: ...


@dataclass(frozen=True)
class Route:
    """A request target taken apart: ``operation`` is get/put/delete/list/poll (or the method
    in lowercase), ``name`` the pool it names ("" for lists and polls)."""

    path: str
    query: dict[str, list[str]]
    pools: re.Match[str] | None
    ops: re.Match[str] | None
    operation: str
    name: str


def route(method: str, target: str) -> Route:
    """Which ARM operation ``method`` on ``target`` is (faults are keyed by it)."""
    url = urlsplit(target)
    path, query = url.path, parse_qs(url.query)
    pools, ops = _POOLS.match(path), _OPS.match(path)
    operation = {"GET": "get", "PUT": "put", "DELETE": "delete"}.get(method, method.lower())
    if pools and not pools["name"]:
        operation = "list"
    if ops:
        operation = "poll"
    name = pools["name"] if pools and pools["name"] else ""
    return Route(path, query, pools, ops, operation, name)


def reject(
    headers: Mapping[str, str], query: Mapping[str, list[str]], token: str | None
) -> _Reply | None:
    """The 401 (no bearer token, or not ``token`` when one is set) or 400 (no api-version)
    that ARM answers before anything else; None when the request may go on."""
    auth = headers.get("authorization", "")
    if not auth.startswith("Bearer ") or (token and auth[7:] != token):
        return _error(
            401,
            "InvalidAuthenticationToken",
            "The access token is missing or invalid.",
            **{
                "WWW-Authenticate": 'Bearer authorization_uri="https://login.microsoftonline'
                '.com/common", error="invalid_token"'
            },
        )
    if "api-version" not in query:
        return _error(400, "MissingApiVersionParameter", "The api-version is required.")
    return None


class HttpsEndpoint:
    """One run of the listener for ``sim``: ``bind`` (certificate, socket), then ``serve``
    (thread; returns once a connection succeeds), then ``stop``."""

    def __init__(
        self,
        sim: ArmBackend,
        host: str,
        cert_dir: Path | None,
        startup_timeout: float,
        shutdown_timeout: float,
    ) -> None:
        self.sim, self.host, self.cert_dir = sim, host, cert_dir
        self.startup_timeout, self.shutdown_timeout = startup_timeout, shutdown_timeout
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    def bind(self) -> tuple[Path, str]:
        """Write the certificates and open the socket; returns (CA path, base URL)."""
        if self.cert_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="arm-sim-")
        cert = write_server_cert(self.cert_dir or Path(self._tmp.name))  # type: ignore[union-attr]
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert.cert_path, cert.key_path)
        self._server = _Server((self.host, 0), self.sim, ctx, self)
        return cert.ca_path, f"https://{self.host}:{self._server.server_address[1]}"

    def serve(self) -> None:
        assert self._server is not None, "bind() first"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            daemon=True,
            name="arm-simulator",
        )
        self._thread.start()
        with socket.create_connection(
            (self.host, self._server.server_address[1]), timeout=self.startup_timeout
        ):
            pass

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            with self._lock:
                for sock in list(self._sockets):
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(self.shutdown_timeout)
        self._server = self._thread = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def track(self, sock: socket.socket, add: bool = True) -> None:
        with self._lock:
            (self._sockets.add if add else self._sockets.discard)(sock)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(
        self,
        address: tuple[str, int],
        sim: ArmBackend,
        ctx: ssl.SSLContext,
        endpoint: HttpsEndpoint,
    ) -> None:
        super().__init__(address, _Handler)
        self.sim, self.ctx, self.endpoint = sim, ctx, endpoint

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = self.socket.accept()
        # The TLS handshake happens on the handler's thread, never on the accept loop.
        tls = self.ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        self.endpoint.track(tls)
        return tls, addr

    def shutdown_request(self, request: Any) -> None:
        self.endpoint.track(request, add=False)
        super().shutdown_request(request)

    def service_actions(self) -> None:
        self.sim.tick()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that time out and hang up are part of the scenarios: stay quiet."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: avoid 40 ms delayed ACKs
    timeout = 60  # longer than aiohttp's 15 s keep-alive, so the client closes idle sockets
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        headers = {name.lower(): value for name, value in self.headers.items()}
        reply = self.server.sim.handle(self.command, self.path, headers, raw)
        payload = b"" if reply.body is None else json.dumps(reply.body).encode()
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("x-ms-request-id", str(uuid.uuid4()))
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_PUT = do_DELETE = do_POST = do_PATCH = _serve
