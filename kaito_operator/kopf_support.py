"""What both kopf operators (workspace controller, gpu-provisioner) share: their start-up
connection and logging, and `KopfThread`, which runs either in a thread of its own logged in
to a given API server without credentials, as the tests, the benchmark and the demo do next
to an emulator (the console scripts run them in the main thread instead)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any, Self

import kopf

from kaito_operator.kube import Connection

Login = Callable[..., kopf.ConnectionInfo | None]
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def connect_with(login: Login, settings: kopf.OperatorSettings, logger: Any) -> Connection:
    """Our client's connection from the same login handler kopf uses (called at start-up)."""
    info = login(settings=settings, logger=logger)
    if info is None:
        raise kopf.PermanentError("no Kubernetes credentials: not in a pod, no kubeconfig")
    return Connection.from_kopf(info)


def setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT)


class KopfThread:
    def __init__(
        self,
        build_registry: Callable[[Login], kopf.OperatorRegistry],
        server: str,
        namespaces: Sequence[str] = (),
        name: str = "operator",
    ) -> None:
        self._build, self._server = build_registry, server
        self._namespaces = list(namespaces)
        self._name = name
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.error: BaseException | None = None

    def _login(self, **_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=self._server, insecure=True)

    def _run(self) -> None:
        try:
            asyncio.run(
                kopf.operator(
                    registry=self._build(self._login),
                    standalone=True,
                    clusterwide=not self._namespaces,
                    namespaces=self._namespaces,
                    stop_flag=self._stop,
                    ready_flag=self._ready,
                )
            )
        except BaseException as exc:  # noqa: BLE001 - reported to the caller via .error
            self.error = exc

    def start(self, timeout: float = 30.0) -> Self:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"the {self._name} did not start: {self.error!r}")
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
