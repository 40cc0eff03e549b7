"""Run the workspace controller: `kaito-operator` / `python -m kaito_operator`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import threading
from collections.abc import Sequence
from typing import Any

import kopf

from kaito_operator.catalog import CatalogError, load_catalog
from kaito_operator.settings import SettingsError, settings_from_env
from kaito_operator.workspace.handlers import build_registry
from kaito_operator.workspace.runtime import WorkspaceRuntime

log = logging.getLogger("kaito_operator")


def cluster_login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In-cluster service account first, then the kubeconfig (development)."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


def _args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="kaito-operator", description=__doc__)
    parser.add_argument("-n", "--namespace", action="append", default=[],
                        help="watch this namespace (repeatable; default: KAITO_WATCH_NAMESPACES "
                             "or the whole cluster)")
    parser.add_argument("--liveness", default="http://0.0.0.0:8080/healthz",
                        help="liveness endpoint URL ('' to disable)")
    parser.add_argument("--metrics-port", type=int, default=8000,
                        help="Prometheus metrics port (0 to disable)")
    parser.add_argument("--webhook-port", type=int, default=0,
                        help="serve the validating admission webhook on this port (0: off)")
    parser.add_argument("--webhook-host", default=None,
                        help="host name the API server reaches the webhook at")
    parser.add_argument("--webhook-cert", default=None, help="TLS certificate (PEM)")
    parser.add_argument("--webhook-key", default=None, help="TLS private key (PEM)")
    parser.add_argument("--webhook-config", default=None,
                        help="ValidatingWebhookConfiguration to keep up to date")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _args(argv)
    try:
        settings = settings_from_env(os.environ)
        catalog = load_catalog()
    except (SettingsError, CatalogError) as exc:
        print(f"kaito-operator: {exc}")
        return 2
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    runtime = WorkspaceRuntime(catalog, settings)
    if args.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(args.metrics_port, registry=runtime.metrics.registry)
    namespaces = args.namespace or list(settings.watch_namespaces)
    webhook = None
    if args.webhook_port:
        # Without a certificate kopf generates a self-signed one at start.
        webhook = kopf.WebhookServer(
            port=args.webhook_port, host=args.webhook_host,
            certfile=args.webhook_cert, pkeyfile=args.webhook_key,
        )
    registry = build_registry(runtime, login=cluster_login, webhook=webhook,
                              webhook_config=args.webhook_config)
    asyncio.run(
        kopf.operator(
            registry=registry,
            standalone=True,
            clusterwide=not namespaces,
            namespaces=namespaces,
            liveness_endpoint=args.liveness or None,
        )
    )
    return 0


class OperatorThread:
    """The operator in a thread of its own, for tests and the local sandbox."""

    def __init__(
        self,
        runtime: WorkspaceRuntime,
        server: str,
        namespaces: Sequence[str],
        webhook: Any = None,
    ) -> None:
        self.runtime = runtime
        self._webhook = webhook
        self._server = server
        self._namespaces = list(namespaces)
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kaito-operator", daemon=True)
        self.error: BaseException | None = None

    def _login(self, **_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=self._server, insecure=True)

    def _run(self) -> None:
        try:
            asyncio.run(
                kopf.operator(
                    registry=build_registry(self.runtime, login=self._login,
                                            webhook=self._webhook),
                    standalone=True,
                    clusterwide=not self._namespaces,
                    namespaces=self._namespaces,
                    stop_flag=self._stop,
                    ready_flag=self._ready,
                )
            )
        except BaseException as exc:  # noqa: BLE001 - reported to the test via .error
            self.error = exc

    def start(self, timeout: float = 30.0) -> OperatorThread:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("the operator did not start")
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def __enter__(self) -> OperatorThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

