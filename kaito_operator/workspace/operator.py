"""Run the workspace controller: `kaito-operator` / `python -m kaito_operator`."""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import kopf

from kaito_operator.catalog import CatalogError, load_catalog
from kaito_operator.controller.startup import (
    KopfThread,
    add_common_flags,
    cluster_login,
    run_operator,
    setup_logging,
)
from kaito_operator.settings import SettingsError, settings_from_env
from kaito_operator.workspace.handlers import build_registry
from kaito_operator.workspace.runtime import WorkspaceRuntime

log = logging.getLogger("kaito_operator")


def _args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="kaito-operator", description=__doc__)
    parser.add_argument("-n", "--namespace", action="append", default=[],
                        help="watch this namespace (repeatable; default: KAITO_WATCH_NAMESPACES "
                             "or the whole cluster)")
    add_common_flags(parser, liveness_port=8080, metrics_port=8000)
    parser.add_argument("--webhook-port", type=int, default=0,
                        help="serve the validating admission webhook on this port (0: off)")
    parser.add_argument("--webhook-host", default=None,
                        help="host name the API server reaches the webhook at")
    parser.add_argument("--webhook-cert", default=None, help="TLS certificate (PEM)")
    parser.add_argument("--webhook-key", default=None, help="TLS private key (PEM)")
    parser.add_argument("--webhook-config", default=None,
                        help="ValidatingWebhookConfiguration to keep up to date")
    parser.add_argument("--webhook-service", default=None,
                        help="Service in front of the webhook: the API server is pointed at it "
                             "and, without --webhook-cert, a certificate for it is generated "
                             "at start")
    parser.add_argument("--webhook-namespace", default=os.environ.get("POD_NAMESPACE"),
                        help="namespace of --webhook-service (default: $POD_NAMESPACE)")
    parser.add_argument("--webhook-service-port", type=int, default=443)
    return parser.parse_args(argv)


def _webhook_server(args: argparse.Namespace) -> kopf.WebhookServer:
    if not args.webhook_service:
        return kopf.WebhookServer(port=args.webhook_port, host=args.webhook_host,
                                  certfile=args.webhook_cert, pkeyfile=args.webhook_key)
    if not args.webhook_namespace:
        raise SystemExit("--webhook-service needs --webhook-namespace or $POD_NAMESPACE")
    from kaito_operator.webhook_tls import (
        ServiceWebhookServer,
        generate_certificate,
        service_dns_names,
    )

    cert, key, ca = args.webhook_cert, args.webhook_key, None
    if not cert:
        directory = Path(tempfile.mkdtemp(prefix="kaito-webhook-"))
        names = service_dns_names(args.webhook_service, args.webhook_namespace)
        cert_path, key_path, ca = generate_certificate(names, directory)
        cert, key = str(cert_path), str(key_path)
        log.info("generated the webhook certificate for %s", names[2])
    return ServiceWebhookServer(
        service=args.webhook_service, namespace=args.webhook_namespace,
        service_port=args.webhook_service_port, port=args.webhook_port,
        certfile=cert, pkeyfile=key, cadata=ca,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _args(argv)
    try:
        settings = settings_from_env(os.environ)
        catalog = load_catalog()
    except (SettingsError, CatalogError) as exc:
        print(f"kaito-operator: {exc}")
        return 2
    setup_logging(settings.log_level)
    runtime = WorkspaceRuntime(catalog, settings)
    webhook = _webhook_server(args) if args.webhook_port else None
    registry = build_registry(runtime, login=cluster_login, webhook=webhook,
                              webhook_config=args.webhook_config)
    namespaces = args.namespace or list(settings.watch_namespaces)
    runtime.watch_scope(namespaces)
    return run_operator(registry, metrics=runtime.metrics.registry,
                        metrics_port=args.metrics_port, liveness=args.liveness,
                        namespaces=namespaces)


class OperatorThread(KopfThread):
    """The workspace controller in a thread of its own, for tests and the demo."""

    def __init__(
        self,
        runtime: WorkspaceRuntime,
        server: str,
        namespaces: Sequence[str],
        webhook: Any = None,
    ) -> None:
        self.runtime = runtime
        runtime.watch_scope(namespaces)
        super().__init__(
            lambda login: build_registry(runtime, login=login, webhook=webhook),
            server, namespaces, name="kaito-operator",
        )
