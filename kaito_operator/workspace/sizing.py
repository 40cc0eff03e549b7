"""CPU, memory and disk sizes of the pods the operator builds (pure).

A GPU pod owns its node, so its CPU and memory requests come from the instance type's published
figures (`vcpus`, `memoryGiB` in `presets/skus.yaml`), minus room for what else runs there:

    cpu request     = max(1, floor(0.75 × vCPUs) − 1) cores         (no CPU limit: no throttling)
    memory request  = max(2, floor(0.75 × memory GiB) − 2) GiB
    memory limit    = max(request, floor(0.85 × memory GiB) − 2) GiB

The 25 % (15 % for the limit) plus the fixed core and 2 GiB cover the kubelet's system and
eviction reservations (a few GiB of memory and a fraction of a core on AKS and EKS) and the
node's daemons (GPU device plugin, CNI, log and metrics agents); one such pod fits a node, which
is what a GPU workload wants. An instance type missing from the catalog gets conservative
figures from the preset instead: 2 cores, and memory sized by the weights (`parametersBillion`
× bytes per parameter of the dtype) clamped to 8–64 GiB, with a limit of twice that, so the pod
schedules on any node big enough for the model's GPUs.

Disk: every emptyDir has a `sizeLimit`, and the main container's `ephemeral-storage` limit is
their sum plus room for logs. That limit matters because the kubelet compares a pod's whole
local usage (emptyDirs included) with the larger of its containers' summed limits and its
init containers' limits: without it the small limits of the init containers would apply to
the pod. The request stays small so a pod still fits a node whose disk the preset sized.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from kaito_operator.catalog.models import GpuSku, ModelPreset
from kaito_operator.workspace.names import GPU_RESOURCE

ADAPTER_GIB = 2
"""The adapter fetcher caps one adapter at 2 GiB."""
DATA_GIB = 20
"""The dataset download caps its total at 20 GiB."""
RESULTS_GIB = 10
"""The adapter, its epoch checkpoints (with optimizer state) and metrics."""
TMP_GIB = 1
SMALL_CACHE_GIB = 1
"""Hugging Face cache when the weights are in the image (tokenizer files, remote code)."""
LOG_ROOM_GIB = 1
SHM_CAP_GIB = 16
INIT_CPU = "250m"
INIT_MEMORY_REQUEST = "256Mi"
INIT_MEMORY_LIMIT = "2Gi"
INIT_EPHEMERAL_REQUEST = "64Mi"
INIT_EPHEMERAL_LIMIT = "512Mi"
MAIN_EPHEMERAL_REQUEST = "1Gi"


def gib(value: int) -> str:
    """A whole number of GiB in the form the API server keeps as written."""
    return f"{value}Gi"


@dataclass(frozen=True)
class HostShare:
    """What the main container asks of its node's CPUs and memory."""

    cpu: int
    memory_request_gib: int
    memory_limit_gib: int

    @property
    def shm_gib(self) -> int:
        """`/dev/shm` (memory-backed, so charged to the pod's memory): half the memory
        request, 1 to 16 GiB."""
        return max(1, min(self.memory_request_gib // 2, SHM_CAP_GIB))


def weights_gib(preset: ModelPreset) -> int:
    """Size of the preset's weights in its dtype, rounded up."""
    per_parameter = 4 if preset.dtype == "float32" else 2
    return math.ceil(preset.parameters_billion * per_parameter)


def host_share(sku: GpuSku | None, preset: ModelPreset) -> HostShare:
    """CPU and memory of the main container (formula in the module docstring)."""
    if sku is None:
        memory = max(8, min(weights_gib(preset), 64))
        return HostShare(cpu=2, memory_request_gib=memory, memory_limit_gib=2 * memory)
    request = max(2, math.floor(0.75 * sku.memory_gib) - 2)
    limit = max(request, math.floor(0.85 * sku.memory_gib) - 2)
    return HostShare(cpu=max(1, math.floor(0.75 * sku.vcpus) - 1),
                     memory_request_gib=request, memory_limit_gib=limit)


def main_resources(share: HostShare, gpus: int, disk_limit_gib: int) -> dict[str, Any]:
    """Requests and limits of the GPU container; `disk_limit_gib` is the sum of the pod's
    disk-backed emptyDir limits."""
    return {
        "requests": {
            "cpu": str(share.cpu),
            "memory": gib(share.memory_request_gib),
            "ephemeral-storage": MAIN_EPHEMERAL_REQUEST,
            GPU_RESOURCE: str(gpus),
        },
        "limits": {
            "memory": gib(share.memory_limit_gib),
            "ephemeral-storage": gib(disk_limit_gib + LOG_ROOM_GIB),
            GPU_RESOURCE: str(gpus),
        },
    }


def init_resources() -> dict[str, Any]:
    """Small, bounded figures for the fetch/download/copy init containers; their files go to
    emptyDirs with their own limits, so their own disk is logs only."""
    return {
        "requests": {"cpu": INIT_CPU, "memory": INIT_MEMORY_REQUEST,
                     "ephemeral-storage": INIT_EPHEMERAL_REQUEST},
        "limits": {"memory": INIT_MEMORY_LIMIT, "ephemeral-storage": INIT_EPHEMERAL_LIMIT},
    }


def adapters_gib(count: int) -> int:
    """The adapters emptyDir: 2 GiB per adapter, plus one more for the staging copy a
    restarted fetch writes before it replaces the old one."""
    return ADAPTER_GIB * (count + 1)


def tmp_gib(adapters: int) -> int:
    """`/tmp`: 1 GiB, plus what the adapter fetcher buffers there for the layer it is
    applying (one at a time): the blob as downloaded and its inflated tar, 2 GiB each."""
    return TMP_GIB + (2 * ADAPTER_GIB if adapters else 0)


_QUANTITY = re.compile(r"\+?(\d+(?:\.\d*)?|\.\d+)(?:([KMGTPE]i|[kMGTPE]|m)|[eE]([+-]?\d+))?")
_FACTORS = {None: 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
            "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}


def quantity_bytes(value: object) -> float | None:
    """A Kubernetes quantity (`20Gi`, `500M`, `1e9`, 1024) in bytes; None when it is not one
    (the API server then refuses the object, and says why)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if value >= 0 else None
    match = _QUANTITY.fullmatch(str(value))
    if match is None:
        return None
    number, suffix, exponent = match.groups()
    if exponent is not None:
        return float(number) * 10.0 ** min(int(exponent), 30)
    return float(number) * _FACTORS[suffix]


def disk_limit(volumes: list[dict[str, Any]]) -> int:
    """Sum, in whole GiB rounded up, of the `sizeLimit`s of the disk-backed emptyDirs among
    `volumes`."""
    total = 0.0
    for volume in volumes:
        empty = volume.get("emptyDir")
        if not isinstance(empty, dict) or empty.get("medium") == "Memory":
            continue
        size = quantity_bytes(empty.get("sizeLimit"))
        if size is not None:
            total += size
    return math.ceil(total / 2**30)
