"""Run the gpu-provisioner: `kaito-gpu-provisioner` / `python -m kaito_operator.provisioner`.

Machines and Nodes are cluster-scoped, so the operator always watches the whole cluster.  The
Azure credential is built here from the settings (workload identity in the cluster) and closed
on exit; :class:`ProvisionerThread` runs the same registry in a thread with an injected
runtime (tests, the local sandbox).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import kopf

from kaito_operator.catalog import CatalogError, load_catalog
from kaito_operator.kopf_support import KopfThread, setup_logging
from kaito_operator.provisioner.handlers import build_registry
from kaito_operator.provisioner.runtime import ProvisionerRuntime
from kaito_operator.provisioner.settings import ENV_VARS, SettingsError, settings_from_env
from kaito_operator.workspace.operator import cluster_login

__all__ = ["ProvisionerThread", "main"]

log = logging.getLogger("kaito_operator.provisioner")


def _args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="kaito-gpu-provisioner",
        description="Turns karpenter.sh Machines into AKS GPU agent pools.",
        epilog="Environment: " + ", ".join(ENV_VARS),
    )
    parser.add_argument("--liveness", default="http://0.0.0.0:8081/healthz",
                        help="liveness endpoint URL ('' to disable)")
    parser.add_argument("--metrics-port", type=int, default=8001,
                        help="Prometheus metrics port (0 to disable)")
    return parser.parse_args(argv)


async def _run(runtime: ProvisionerRuntime, liveness: str | None) -> None:
    try:
        await kopf.operator(
            registry=build_registry(runtime, login=cluster_login),
            standalone=True,
            clusterwide=True,
            liveness_endpoint=liveness,
        )
    finally:
        await runtime.close_credential()


def main(argv: Sequence[str] | None = None) -> int:
    args = _args(argv)
    try:
        settings = settings_from_env(os.environ)
        catalog = load_catalog()
    except (SettingsError, CatalogError) as exc:
        print(f"kaito-gpu-provisioner: {exc}")
        return 2
    setup_logging(settings.log_level)
    # The Azure SDK logs every request and response at INFO; our metrics count them.
    logging.getLogger("azure").setLevel(logging.WARNING)
    from kaito_operator.provisioner.azure import SimulatedCloudCredential, default_credential

    simulated = os.environ.get("KAITO_SIMULATED_ARM_TOKEN")
    if simulated:
        host = urlsplit(settings.arm_endpoint or "").hostname or ""
        if host not in ("127.0.0.1", "localhost", "::1"):
            print("kaito-gpu-provisioner: KAITO_SIMULATED_ARM_TOKEN needs ARM_ENDPOINT on "
                  "loopback (a simulated cloud)")
            return 2
        credential: Any = SimulatedCloudCredential(simulated)
    else:
        credential = default_credential(settings.tenant_id, settings.client_id)
    runtime = ProvisionerRuntime(settings, credential, catalog)
    if args.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(args.metrics_port, registry=runtime.metrics.registry)
    log.info("gpu-provisioner for cluster %s in resource group %s (subscription %s, %s)",
             settings.cluster_name, settings.resource_group, settings.subscription_id,
             settings.location)
    asyncio.run(_run(runtime, args.liveness or None))
    return 0


class ProvisionerThread(KopfThread):
    """The provisioner in a thread of its own, logged in to ``server`` without credentials."""

    def __init__(self, runtime: ProvisionerRuntime, server: str) -> None:
        self.runtime = runtime
        super().__init__(lambda login: build_registry(runtime, login=login), server,
                         name="gpu-provisioner")
