"""Starting a kopf operator: the one path both operators' `main()` and test threads take.

- `cluster_login`: the in-cluster service account, else the kubeconfig;
- `add_lifecycle`: the login, start-up and clean-up handlers of a registry; the start-up
  handler applies `configure_kopf` (kopf's bookkeeping under the operator's own annotation
  names, only warnings posted as Events by kopf, no namespace scanning, no peering) and hands
  the runtime the connection for our client (`connect_with`, the same login kopf uses);
- `add_common_flags`, `setup_logging`, `run_operator` (metrics server, `kopf.operator` with
  liveness) for the console scripts;
- `KopfThread`: an operator in a thread of its own, logged in to a given API server without
  credentials, as the tests, the benchmark and the sandbox run it next to an emulator.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Self

import kopf
from prometheus_client import CollectorRegistry, start_http_server

from kaito_operator.kube import Connection

__all__ = [
    "KopfIdentity",
    "KopfThread",
    "Login",
    "add_common_flags",
    "add_lifecycle",
    "cluster_login",
    "configure_kopf",
    "connect_with",
    "run_operator",
    "setup_logging",
]

Login = Callable[..., kopf.ConnectionInfo | None]
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@dataclass(frozen=True)
class KopfIdentity:
    """The names an operator keeps kopf's bookkeeping under, apart from any other operator's:
    its finalizer and the prefix of kopf's progress and diff-base annotations."""

    finalizer: str
    annotation_prefix: str


def cluster_login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In-cluster service account first, then the kubeconfig (development)."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


def configure_kopf(settings: kopf.OperatorSettings, identity: KopfIdentity,
                   max_workers: int) -> None:
    """kopf's own bookkeeping under the operator's names; only warnings posted as Events."""
    settings.persistence.finalizer = identity.finalizer
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=identity.annotation_prefix
    )
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=identity.annotation_prefix, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    settings.execution.max_workers = max_workers
    settings.scanning.disabled = True
    settings.peering.standalone = True


def connect_with(login: Login, settings: kopf.OperatorSettings, logger: Any) -> Connection:
    """Our client's connection from the same login handler kopf uses (called at start-up)."""
    info = login(settings=settings, logger=logger)
    if info is None:
        raise kopf.PermanentError("no Kubernetes credentials: not in a pod, no kubeconfig")
    return Connection.from_kopf(info)


def add_lifecycle(
    registry: kopf.OperatorRegistry,
    login: Login,
    identity: KopfIdentity,
    max_workers: int,
    start: Callable[[Connection], Awaitable[None]],
    stop: Callable[[], Awaitable[None]],
    configure: Callable[[kopf.OperatorSettings], None] | None = None,
) -> None:
    """Register `login`, a start-up handler (kopf settings, then `configure` for anything
    operator-specific, then `start(connection)`) and a clean-up handler (`stop()`)."""
    kopf.on.login(registry=registry)(login)

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, logger: kopf.Logger, **_: Any) -> None:
        configure_kopf(settings, identity, max_workers)
        if configure is not None:
            configure(settings)
        await start(connect_with(login, settings, logger))

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        await stop()


def add_common_flags(parser: argparse.ArgumentParser, liveness_port: int,
                     metrics_port: int) -> None:
    parser.add_argument("--liveness", default=f"http://0.0.0.0:{liveness_port}/healthz",
                        help="liveness endpoint URL ('' to disable)")
    parser.add_argument("--metrics-port", type=int, default=metrics_port,
                        help="Prometheus metrics port (0 to disable)")


def setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT)


def run_operator(
    registry: kopf.OperatorRegistry,
    *,
    metrics: CollectorRegistry | None = None,
    metrics_port: int = 0,
    liveness: str | None = None,
    namespaces: Sequence[str] = (),
    on_exit: Callable[[], Awaitable[None]] | None = None,
) -> int:
    """Serve `metrics` on `metrics_port` unless 0, then run the operator in this thread until
    it stops, watching `namespaces` (none: the whole cluster); `on_exit` runs in the
    operator's loop afterwards."""
    if metrics_port and metrics is not None:
        start_http_server(metrics_port, registry=metrics)

    async def operate() -> None:
        try:
            await kopf.operator(
                registry=registry,
                standalone=True,
                clusterwide=not namespaces,
                namespaces=list(namespaces),
                liveness_endpoint=liveness or None,
            )
        finally:
            if on_exit is not None:
                await on_exit()

    asyncio.run(operate())
    return 0


class KopfThread:
    """Runs the registry `build_registry(login)` gives in a thread with its own event loop."""

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
