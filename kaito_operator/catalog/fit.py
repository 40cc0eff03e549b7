"""Does a preset fit a SKU, and with how many nodes? Pure arithmetic over catalog entries.

A preset that supports multi-node inference may spread its GPU needs over `count` nodes
(`count × sku` against the preset); any other preset must fit on one node, and `count > 1`
then means replicas.
"""

from __future__ import annotations

from dataclasses import dataclass

from kaito_operator.catalog.models import GpuSku, ModelPreset, TuningMethod

MAX_NODES = 16


@dataclass(frozen=True)
class Fit:
    """Outcome of checking a preset against `nodes` nodes of a SKU."""

    ok: bool
    reason: str = ""
    """Empty when it fits; else one sentence naming what is short."""


def _gib(value: float) -> str:
    return f"{value:g} GiB"


def _gpus(n: int) -> str:
    return f"{n} GPU" if n == 1 else f"{n} GPUs"


def fit_preset(preset: ModelPreset, sku: GpuSku, nodes: int = 1) -> Fit:
    """Check GPU count, per-GPU and total GPU memory of `nodes` nodes against the preset."""
    span = nodes if preset.multi_node_inference else 1
    gpus = sku.gpu_count * span
    memory = sku.total_gpu_memory_gib * span
    need = preset.resources
    have = f"{sku.name} has {_gpus(sku.gpu_count)} with {_gib(sku.gpu_memory_gib)}"
    if span > 1:
        have = f"{span} x {sku.name} have {_gpus(gpus)} with {_gib(sku.gpu_memory_gib)} each"
    if sku.gpu_memory_gib < need.per_gpu_memory_gib:
        return Fit(
            False,
            f"{have}; preset {preset.name} needs {_gib(need.per_gpu_memory_gib)} per GPU",
        )
    if memory < need.total_gpu_memory_gib:
        return Fit(
            False,
            f"{have}; preset {preset.name} needs {_gib(need.total_gpu_memory_gib)} "
            "of GPU memory in total",
        )
    if gpus < need.gpu_count:
        return Fit(False, f"{have}; preset {preset.name} needs {_gpus(need.gpu_count)}")
    return Fit(True)


def nodes_needed(preset: ModelPreset, sku: GpuSku) -> int | None:
    """Smallest node count of `sku` that runs the preset, or None if none up to MAX_NODES."""
    limit = MAX_NODES if preset.multi_node_inference else 1
    for nodes in range(1, limit + 1):
        if fit_preset(preset, sku, nodes).ok:
            return nodes
    return None


def fit_tuning(preset: ModelPreset, sku: GpuSku, method: TuningMethod) -> Fit:
    """Tuning runs on one node: its GPUs must each hold the method's per-GPU need."""
    need = preset.tuning.per_gpu_memory_gib.get(method)
    if need is None:
        return Fit(False, f"preset {preset.name} does not support {method} tuning")
    if sku.gpu_memory_gib < need:
        return Fit(
            False,
            f"{sku.name} has {_gpus(sku.gpu_count)} with {_gib(sku.gpu_memory_gib)}; "
            f"{method} tuning of {preset.name} needs {_gib(need)} per GPU",
        )
    return Fit(True)
