"""Run an app under a real uvicorn server on 127.0.0.1 in a background thread (real sockets).

The in-process ASGI transport cannot show what a socket client sees (chunked framing, a body
shorter than its ``Content-Length``, a response sent before the body was read) nor whether the
event loop stays free while other connections send megabytes. The server gets its own event
loop in its own thread; tests talk to it with ordinary blocking clients.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

__all__ = ["live_server", "raw_exchange"]


@contextmanager
def live_server(app: Any, *, start_timeout_s: float = 60.0) -> Iterator[str]:
    """Serve ``app`` on a free loopback port; yields the base URL, stops the server after."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    host, port = sock.getsockname()[:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def raw_exchange(base_url: str, head: bytes, body_parts: Iterator[bytes] | list[bytes],
                 *, timeout_s: float = 30.0) -> tuple[int, bytes, int]:
    """Send ``head`` then ``body_parts`` on one connection; return (status, response, parts sent).

    Stops sending when the server has answered or closed the connection; the response is read
    until it is complete (by its ``Content-Length``), the server closes, or ``timeout_s`` passes.
    """
    host, port = base_url.removeprefix("http://").split(":")
    sent = 0
    with socket.create_connection((host, int(port)), timeout=timeout_s) as conn:
        try:
            conn.sendall(head)
        except OSError:  # the server answered and closed before taking all of it
            body_parts = []
        conn.setblocking(False)
        response = b""
        for part in body_parts:
            response += _read_available(conn)
            if response:
                break
            try:
                conn.setblocking(True)
                conn.sendall(part)
                sent += 1
            except OSError:
                break
            finally:
                conn.setblocking(False)
        conn.settimeout(timeout_s)
        while b"\r\n\r\n" not in response or not _complete(response):
            try:
                chunk = conn.recv(65536)
            except (TimeoutError, OSError):
                break
            if not chunk:
                break
            response += chunk
    status = int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/") else 0
    return status, response, sent


def _read_available(conn: socket.socket) -> bytes:
    try:
        return conn.recv(65536)
    except (BlockingIOError, InterruptedError):
        return b""
    except OSError:
        return b""


def _complete(response: bytes) -> bool:
    head, _, body = response.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip())
    return False
