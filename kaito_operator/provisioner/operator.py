"""Run the gpu-provisioner: `kaito-gpu-provisioner` / `python -m kaito_operator.provisioner`.

Machines, NodeClaims and Nodes are cluster-scoped, so the operator always watches the whole
cluster.  The
Azure credential is built here from the settings (workload identity in the cluster) and closed
on exit; :class:`ProvisionerThread` runs the same registry in a thread with an injected
runtime (tests, the local sandbox).
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence
from urllib.parse import urlsplit

from kaito_operator.catalog import CatalogError, load_catalog
from kaito_operator.controller.startup import (
    KopfThread,
    add_common_flags,
    cluster_login,
    run_operator,
    setup_logging,
)
from kaito_operator.provisioner.azure import (
    Credential,
    SimulatedCloudCredential,
    default_credential,
)
from kaito_operator.provisioner.handlers import build_registry
from kaito_operator.provisioner.runtime import ProvisionerRuntime
from kaito_operator.provisioner.settings import ENV_VARS, SettingsError, settings_from_env

__all__ = ["ProvisionerThread", "main"]

log = logging.getLogger("kaito_operator.provisioner")


def _args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="kaito-gpu-provisioner",
        description="Turns karpenter.sh Machines (v1alpha5) or NodeClaims (v1, with "
                    "PROVISIONER_NODE_KIND=nodeclaim) into AKS GPU agent pools.",
        epilog="Environment: " + ", ".join(ENV_VARS),
    )
    add_common_flags(parser, liveness_port=8081, metrics_port=8001)
    return parser.parse_args(argv)


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
    simulated = os.environ.get("KAITO_SIMULATED_ARM_TOKEN")
    if simulated:
        host = urlsplit(settings.arm_endpoint or "").hostname or ""
        if host not in ("127.0.0.1", "localhost", "::1"):
            print("kaito-gpu-provisioner: KAITO_SIMULATED_ARM_TOKEN needs ARM_ENDPOINT on "
                  "loopback (a simulated cloud)")
            return 2
        credential: Credential = SimulatedCloudCredential(simulated)
    else:
        credential = default_credential(settings.tenant_id, settings.client_id)
    runtime = ProvisionerRuntime(settings, credential, catalog)
    log.info("gpu-provisioner for cluster %s in resource group %s (subscription %s, %s), "
             "serving %ss", settings.cluster_name, settings.resource_group,
             settings.subscription_id, settings.location, runtime.node_kind.title)
    return run_operator(build_registry(runtime, login=cluster_login),
                        metrics=runtime.metrics.registry, metrics_port=args.metrics_port,
                        liveness=args.liveness, on_exit=runtime.close_credential)


class ProvisionerThread(KopfThread):
    """The provisioner in a thread of its own, logged in to ``server`` without credentials."""

    def __init__(self, runtime: ProvisionerRuntime, server: str) -> None:
        self.runtime = runtime
        super().__init__(lambda login: build_registry(runtime, login=login), server,
                         name="gpu-provisioner")
