"""`kaito presets` and `kaito skus`."""

from __future__ import annotations

import argparse
import sys

from kaito_operator.catalog import Catalog, fit_preset, fit_tuning, nodes_needed
from kaito_operator.cli.table import render_table


def _gib(value: float) -> str:
    return f"{value:g}Gi"


def presets_command(args: argparse.Namespace, catalog: Catalog) -> int:
    if args.fits:
        return _fits(args.fits, catalog)
    rows = []
    for p in sorted(catalog.presets.values(), key=lambda p: p.name):
        need = p.resources
        rows.append([
            p.name,
            f"{p.parameters_billion:g}B",
            need.gpu_count,
            _gib(need.total_gpu_memory_gib),
            _gib(need.per_gpu_memory_gib) if need.per_gpu_memory_gib else "-",
            _gib(need.disk_gib),
            "yes" if p.multi_node_inference else "no",
            ",".join(p.tuning_methods) or "-",
            "yes" if p.hugging_face.needs_token else "no",
        ])
    headers = ["name", "params", "gpus", "gpu-memory", "per-gpu", "disk", "multi-node",
               "tuning", "token"]
    sys.stdout.write(render_table(headers, rows))
    return 0


def _fits(sku_name: str, catalog: Catalog) -> int:
    sku = catalog.sku(sku_name)
    if sku is None:
        sys.stderr.write(f"error: {sku_name} is not in the GPU catalog (`kaito skus` lists it)\n")
        return 1
    sys.stdout.write(
        f"{sku.name}: {sku.gpu_count} x {sku.gpu_model} with {_gib(sku.gpu_memory_gib)} each\n"
    )
    rows = []
    for p in sorted(catalog.presets.values(), key=lambda p: p.name):
        nodes = nodes_needed(p, sku)
        tuning = [m for m in p.tuning_methods if fit_tuning(p, sku, m).ok]
        reason = "" if nodes else fit_preset(p, sku, 1).reason
        rows.append([p.name, nodes or "-", ",".join(tuning) or "-", reason or "fits"])
    sys.stdout.write(render_table(["preset", "nodes", "tuning", "inference"], rows))
    return 0


def skus_command(args: argparse.Namespace, catalog: Catalog) -> int:
    rows = [
        [
            s.name,
            s.cloud,
            s.family,
            s.gpu_model + (" (fraction)" if s.fractional_gpu else ""),
            s.gpu_count,
            _gib(s.gpu_memory_gib),
            _gib(s.total_gpu_memory_gib),
        ]
        for s in catalog.skus.values()
        if args.cloud in (None, s.cloud)
    ]
    headers = ["name", "cloud", "family", "gpu", "gpus", "per-gpu", "total"]
    sys.stdout.write(render_table(headers, rows))
    return 0
