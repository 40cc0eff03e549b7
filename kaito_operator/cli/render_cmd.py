"""`kaito render FILE`: the objects the controller would create, from the same builders."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import yaml

from kaito_operator.api.workspace import Workspace
from kaito_operator.catalog import Catalog
from kaito_operator.cli.validate_cmd import check_file, emit, exit_status, printable
from kaito_operator.settings import Settings, SettingsError, settings_from_env
from kaito_operator.validation import errors
from kaito_operator.workspace.provisioning import provisioner_for
from kaito_operator.workspace.tuning import desired_tuning
from kaito_operator.workspace.workload import desired_inference


def render_workspace(ws: Workspace, catalog: Catalog, settings: Settings) -> list[dict[str, Any]]:
    """The node objects of the node-provisioning mode for every node (as on a cluster with no
    qualified node yet: Machines, NodeClaims, or none), Services, and the workload (tuning:
    the default config ConfigMap and the Job). Node pinning and the owner's uid are filled in
    on the cluster."""
    spec = ws.inference.preset if ws.inference else ws.tuning.preset if ws.tuning else None
    preset = catalog.preset(spec.name) if spec else None
    disk = preset.resources.disk_gib if preset else settings.default_disk_gib
    build = provisioner_for(settings.node_provisioning).build
    machines = [build(ws, i, disk, settings) for i in range(ws.resource.count)] if build else []
    if ws.tuning is not None:
        config, job = desired_tuning(ws, ws.tuning, catalog, settings, [])
        return machines + ([config] if config else []) + [job]
    services, workload = desired_inference(ws, catalog, settings, [])
    return machines + services + [workload]


def render_command(args: argparse.Namespace, catalog: Catalog) -> int:
    """`--node-provisioning` (default: `KAITO_NODE_PROVISIONING`, else `machine`) picks the
    node objects shown. Exit 2 when a file cannot be read or parsed, 1 when a Workspace is
    invalid (nothing is printed then), 0 with the rendered objects on standard output."""
    try:
        settings = settings_from_env(os.environ)
    except SettingsError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    if args.node_provisioning:
        settings = settings.model_copy(update={"node_provisioning": args.node_provisioning})
    checks = [check_file(name, catalog) for name in args.files]
    for check in checks:
        name = printable(check.name)
        if check.error is not None:
            emit(f"{name}: error: {printable(check.error)}\n", sys.stderr)
        for label, found in check.results:
            for finding in errors(found):
                emit(f"{name}: {label}: error: {printable(str(finding))}\n", sys.stderr)
    status = exit_status(checks)
    if status:
        return status
    documents: list[dict[str, Any]] = []
    for check in checks:
        for doc in check.documents:
            if not isinstance(doc, dict) or doc.get("kind") != "Workspace":
                continue
            doc.setdefault("metadata", {}).setdefault("namespace", args.namespace)
            ws = Workspace.model_validate(doc)
            documents += render_workspace(ws, catalog, settings)
    sys.stdout.write(yaml.safe_dump_all(documents, sort_keys=False))
    return 0
