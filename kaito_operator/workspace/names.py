"""Names, labels and annotations that are contracts."""

from __future__ import annotations

import hashlib

WORKSPACE_LABEL = "kaito.sh/workspace"
WORKSPACE_NAMESPACE_LABEL = "kaito.sh/workspacenamespace"
MACHINE_TYPE_LABEL = "kaito.sh/machine-type"
SPEC_HASH_ANNOTATION = "kaito.sh/spec-hash"
ENABLE_LB_ANNOTATION = "kaito.sh/enablelb"
FINALIZER = "workspace.finalizer.kaito.sh"
#: On Machines and NodeClaims: Karpenter leaves a serving GPU node alone.
DO_NOT_DISRUPT = "karpenter.sh/do-not-disrupt"

INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
AGENTPOOL_LABEL = "kubernetes.azure.com/agentpool"
ACCELERATOR_LABEL = "accelerator"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_TAINT = {"key": "sku", "value": "gpu", "effect": "NoSchedule"}

HTTP_PORT = 5000
SERVICE_PORT = 80
TORCH_PORT = 29500


def machine_name(namespace: str, workspace: str, index: int) -> str:
    """`ws` + 9 hex chars of sha256(`<ns>/<name>/<index>`): stable across operator restarts
    and a valid AKS pool name (`^[a-z][a-z0-9]{0,11}$`)."""
    digest = hashlib.sha256(f"{namespace}/{workspace}/{index}".encode()).hexdigest()
    return "ws" + digest[:9]


def headless_service_name(workspace: str) -> str:
    return f"{workspace}-headless"


def pull_secret_volume_name(secret: str) -> str:
    """`pull-` + 8 hex chars of sha256(secret name): a valid volume name (DNS label) for any
    Secret name, dotted (`acr.pull`) or 253 characters long, and the same on every pass."""
    return "pull-" + hashlib.sha256(secret.encode()).hexdigest()[:8]
