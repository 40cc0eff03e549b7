"""Entry point of the `kaito` command."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points

from kaito_operator import __version__
from kaito_operator.catalog import Catalog, CatalogError, load_catalog
from kaito_operator.cli.catalog_cmds import presets_command, skus_command
from kaito_operator.cli.render_cmd import render_command
from kaito_operator.cli.validate_cmd import validate_command

#: Entry-point group of the commands other packages add to `kaito`.
PLUGIN_GROUP = "kaito.cli"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kaito",
        description="Kubernetes AI Toolchain Operator: catalog and Workspace tools.",
    )
    parser.add_argument("--version", action="version", version=f"kaito {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    presets = sub.add_parser("presets", help="list model presets and what they need")
    presets.add_argument(
        "--fits", metavar="SKU", help="show which presets SKU runs and with how many nodes"
    )
    presets.set_defaults(run=presets_command)

    skus = sub.add_parser("skus", help="list GPU instance types with their figures")
    skus.add_argument("--cloud", choices=["azure", "aws"], help="only this cloud's types")
    skus.set_defaults(run=skus_command)

    validate = sub.add_parser(
        "validate", help="check Workspace files offline, as the admission webhook does"
    )
    validate.add_argument("files", nargs="+", metavar="FILE", help="YAML files ('-' = stdin)")
    validate.add_argument("-o", "--output", choices=["text", "json"], default="text")
    validate.set_defaults(run=validate_command)

    render = sub.add_parser(
        "render",
        help="print the node objects, Services and workload the controller would create",
    )
    render.add_argument("files", nargs="+", metavar="FILE", help="YAML files ('-' = stdin)")
    render.add_argument("-n", "--namespace", default="default",
                        help="namespace of Workspaces that name none")
    render.add_argument(
        "--node-provisioning", choices=["machine", "nodeclaim", "none"], default=None,
        help="node objects to show: Machines, NodeClaims or none (default: the "
             "KAITO_NODE_PROVISIONING environment variable, else machine)",
    )
    render.set_defaults(run=render_command)

    add_plugin_commands(sub)
    return parser


def add_plugin_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Commands other installed packages add, as kubectl plugins do: each entry point of the
    group `kaito.cli` is a function given the sub-parsers (the `sandbox` extra adds
    `kaito sandbox`, `get`, `describe`, `delete`). One whose package cannot be imported is
    listed with the install command it needs instead of failing the whole CLI."""
    for entry in entry_points(group=PLUGIN_GROUP):
        try:
            add_commands = entry.load()
        except ImportError as exc:
            _missing_plugin(sub, entry.name, exc)
            continue
        add_commands(sub)


def _missing_plugin(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, exc: ImportError
) -> None:
    hint = f"not installed ({exc.name or exc}): pip install 'kaito-py[{name}]'"
    stub = sub.add_parser(name, help=hint, add_help=False)
    stub.add_argument("rest", nargs=argparse.REMAINDER)

    def run(args: argparse.Namespace, catalog: Catalog) -> int:
        sys.stderr.write(f"error: kaito {name}: {hint}\n")
        return 2

    stub.set_defaults(run=run)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        catalog = load_catalog()
    except CatalogError as exc:
        sys.stderr.write(f"error: the preset catalog is broken: {exc}\n")
        return 2
    try:
        return int(args.run(args, catalog))
    except BrokenPipeError:
        # The reader went away (`kaito validate ... | head`): stop quietly, and point stdout at
        # /dev/null so that the interpreter's final flush does not complain either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
