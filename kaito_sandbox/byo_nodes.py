"""The sandbox's bring-your-own GPU nodes (`kaito sandbox up --provisioner none`).

With node provisioning `none` the operator creates no Machine or NodeClaim: a Workspace runs
on Ready nodes that already carry its `labelSelector.matchLabels` and its instance type. So
the sandbox joins such nodes itself before anything is applied, as a user's existing AKS GPU
pool would have them: named and labelled as AKS names and labels its nodes (the same shape as
the nodes the simulated AKS joins for a gpu-provisioner pool), tainted `sku=gpu:NoSchedule`,
with the SKU's GPUs as capacity. The node agent runs pods on them like on any other node.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

import httpx

from kaito_operator.catalog import Catalog
from kaito_operator.workspace.names import GPU_TAINT
from kaito_sandbox.sim.aks import aks_node

__all__ = ["DEFAULT_INSTANCE_TYPE", "DEFAULT_LABELS", "MAX_NODES", "ByoNodes", "join_nodes",
           "offer", "parse_label"]

NODES = "/api/v1/nodes"
POOL = "gpu"
#: Defaults that make the quick start (examples/inference/kaito_workspace_phi_3_mini.yaml)
#: qualify: its instance type and its `matchLabels`.
DEFAULT_INSTANCE_TYPE = "Standard_NC6s_v3"
DEFAULT_LABELS = {"apps": "phi-3"}
MAX_NODES = 8

_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_KEY = re.compile(rf"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?{_NAME}$")
_VALUE = re.compile(rf"^({_NAME})?$")


def parse_label(text: str) -> tuple[str, str]:
    """`key=value` as a Kubernetes label; ValueError says what is wrong."""
    key, sep, value = text.partition("=")
    if not sep:
        raise ValueError(f"{text!r} is not KEY=VALUE")
    prefix = key.rpartition("/")[0]
    if not _KEY.match(key) or len(prefix) > 253:
        raise ValueError(f"{key!r} is not a valid label key")
    if not _VALUE.match(value):
        raise ValueError(f"{value!r} is not a valid label value (63 characters at most: "
                         "letters, digits, '-', '_', '.', starting and ending alphanumeric)")
    return key, value


@dataclass(frozen=True)
class ByoNodes:
    """What GPU nodes to offer: how many, of which VM size, with which extra labels."""

    count: int = 1
    instance_type: str = DEFAULT_INSTANCE_TYPE
    labels: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_LABELS))
    gpus: int = 1
    cluster: str = "sandbox"
    resource_group: str = "sandbox-rg"
    location: str = "eastus"

    def names(self) -> list[str]:
        """AKS's `aks-<pool>-<8 digits>-vmss<6 digits>`, the same on every start."""
        seed = f"{self.resource_group}/{self.cluster}/{POOL}".lower()
        digits = int(hashlib.sha256(seed.encode()).hexdigest(), 16) % 10**8
        return [f"aks-{POOL}-{digits:08d}-vmss{index:06d}" for index in range(self.count)]

    def describe(self) -> str:
        labels = ",".join(f"{k}={v}" for k, v in sorted(self.labels.items()))
        return (f"{self.count} x {self.instance_type} ({self.gpus} GPU each), "
                f"labels {labels or '-'}")

    def node(self, index: int) -> dict[str, Any]:
        """The Node of VM `index` of the pool, as the kubelet registers it on AKS."""
        return aks_node(
            self.names()[index], POOL, self.instance_type, self.gpus, labels=self.labels,
            taints=[dict(GPU_TAINT)], subscription="00000000-0000-0000-0000-000000000000",
            resource_group=self.resource_group, cluster=self.cluster, location=self.location,
            index=index,
        )


def offer(catalog: Catalog, count: int = 1, instance_type: str = DEFAULT_INSTANCE_TYPE,
          labels: dict[str, str] | None = None) -> ByoNodes:
    """The nodes `none` mode offers, with the SKU's GPU count from the catalog."""
    if not 1 <= count <= MAX_NODES:
        raise ValueError(f"--nodes must be 1 to {MAX_NODES}, not {count}")
    sku = catalog.sku(instance_type)
    if sku is None or sku.cloud != "azure":
        raise ValueError(f"{instance_type!r} is not an Azure GPU VM size the catalog knows (the "
                         "sandbox simulates AKS): `kaito skus --cloud azure` lists them")
    chosen = dict(DEFAULT_LABELS) if labels is None else dict(labels)
    return ByoNodes(count=count, instance_type=sku.name, gpus=sku.gpu_count, labels=chosen)


def join_nodes(http: httpx.Client, nodes: ByoNodes) -> list[str]:
    """Register every node (one that exists already is kept); their names."""
    for index in range(nodes.count):
        response = http.post(NODES, json=nodes.node(index))
        if response.status_code not in (201, 409):
            response.raise_for_status()
    return nodes.names()
