"""`kaito sandbox up`'s node-provisioning flags: `--provisioner machine|nodeclaim|none` and,
for `none`, the GPU nodes offered (`--nodes`, `--node-instance-type`, `--node-label`).

Checked before the daemon starts, so a bad value is an error on the command line and not a
daemon that dies in the background; the daemon gets them as its own arguments.
"""

from __future__ import annotations

import argparse
from typing import Any

from kaito_operator.catalog import Catalog
from kaito_sandbox import provisioning
from kaito_sandbox.byo_nodes import (
    DEFAULT_INSTANCE_TYPE,
    DEFAULT_LABELS,
    MAX_NODES,
    offer,
    parse_label,
)


def label_argument(text: str) -> tuple[str, str]:
    """argparse type of `--node-label KEY=VALUE`."""
    try:
        return parse_label(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_node_options(verb: Any) -> None:
    verb.add_argument("--provisioner", choices=provisioning.MODES, default=provisioning.DEFAULT,
                      help="how GPU nodes come: machine (Machines, the gpu-provisioner; "
                           "default), nodeclaim (karpenter.sh/v1 NodeClaims, the "
                           "gpu-provisioner), none (no provisioner: pre-joined GPU nodes)")
    verb.add_argument("--nodes", type=int, metavar="N",
                      help=f"--provisioner none: how many GPU nodes to offer (1 to {MAX_NODES}; "
                           "default 1)")
    verb.add_argument("--node-instance-type", metavar="SKU",
                      help=f"--provisioner none: their VM size (default {DEFAULT_INSTANCE_TYPE})")
    verb.add_argument("--node-label", action="append", type=label_argument, metavar="KEY=VALUE",
                      help="--provisioner none: a label of theirs, repeatable (default "
                           + ",".join(f"{k}={v}" for k, v in DEFAULT_LABELS.items())
                           + ": the quick start's matchLabels)")


def daemon_options(args: argparse.Namespace, catalog: Catalog) -> list[str] | str:
    """The daemon's arguments for the mode and its nodes, or what is wrong with them."""
    mode = args.provisioner
    given = [flag for flag, value in (("--nodes", args.nodes),
                                      ("--node-instance-type", args.node_instance_type),
                                      ("--node-label", args.node_label)) if value is not None]
    if mode != provisioning.NONE:
        if given:
            return f"{', '.join(given)}: only with --provisioner none (not {mode})"
        return ["--provisioner", mode]
    try:
        nodes = offer(catalog, 1 if args.nodes is None else args.nodes,
                      args.node_instance_type or DEFAULT_INSTANCE_TYPE,
                      dict(args.node_label) if args.node_label else None)
    except ValueError as exc:
        return str(exc)
    options = ["--provisioner", mode, "--nodes", str(nodes.count),
               "--node-instance-type", nodes.instance_type]
    for key, value in sorted(nodes.labels.items()):
        options += ["--node-label", f"{key}={value}"]
    return options
