"""The `NodeClaim` resource (`karpenter.sh/v1`, cluster-scoped), docs/design.md §3.

Karpenter v1's request for one node, which replaced the v1alpha5 Machine: KAITO's workspace
controller creates one per missing GPU node (in the `nodeclaim` node-provisioning mode), and
whoever provisions it (Azure's gpu-provisioner from v0.3, our gpu-provisioner with
`PROVISIONER_NODE_KIND=nodeclaim`, or Karpenter itself) writes its status, setting the
conditions `Launched` → `Registered` → `Initialized` → `Ready`. The spec is immutable once
created (upstream's CRD enforces `self == oldSelf`).

Only the fields upstream defines are modelled, with upstream's types, so what we write is what
Karpenter accepts (tests check this model's CRD and our objects against Karpenter's published
CRD).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from kaito_operator.api.meta import (
    ApiModel,
    ObjectMeta,
    Quantity,
    Taint,
    Timestamp,
)

API_GROUP = "karpenter.sh"
API_VERSION = "v1"
KIND = "NodeClaim"

#: The requirement key the instance type (the VM size) is read from.
INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
#: The NodePool a NodeClaim belongs to (label and requirement).
NODEPOOL_LABEL = "karpenter.sh/nodepool"

#: Condition types, in the order the provisioner sets them.
LAUNCHED = "Launched"
REGISTERED = "Registered"
INITIALIZED = "Initialized"
READY = "Ready"
LIFECYCLE = (LAUNCHED, REGISTERED, INITIALIZED, READY)


class NodeClaimRequirement(ApiModel):
    """A node selector requirement with Karpenter's `minValues`."""

    key: str = Field(max_length=316)
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt", "Gte", "Lte"]
    values: list[str] | None = None
    min_values: int | None = Field(default=None, ge=1, le=50)


class NodeClassReference(ApiModel):
    """The cloud-specific NodeClass (`karpenter.azure.com` `AKSNodeClass`,
    `karpenter.k8s.aws` `EC2NodeClass`, ...)."""

    group: str
    kind: str
    name: str


class NodeClaimResources(ApiModel):
    """Resources the node must offer; `storage` is the OS disk."""

    requests: dict[str, Quantity] | None = None


class NodeClaimSpec(ApiModel):
    """What node the NodeClaim stands for (immutable once created)."""

    taints: list[Taint] | None = None
    startup_taints: list[Taint] | None = None
    requirements: list[NodeClaimRequirement] = Field(max_length=100)
    resources: NodeClaimResources | None = None
    node_class_ref: NodeClassReference
    expire_after: str | None = None
    termination_grace_period: str | None = None


class NodeClaimCondition(ApiModel):
    """A `metav1.Condition` as Karpenter v1 writes them."""

    type: str = Field(max_length=316)
    status: Literal["True", "False", "Unknown"]
    last_transition_time: Timestamp
    reason: str | None = Field(default=None, max_length=1024)
    message: str | None = Field(default=None, max_length=32768)
    observed_generation: int | None = Field(default=None, ge=0)


class NodeClaimStatus(ApiModel):
    """Observed state, written by the provisioner only."""

    node_name: str | None = None
    provider_id: str | None = Field(default=None, alias="providerID")
    image_id: str | None = Field(default=None, alias="imageID")
    capacity: dict[str, Quantity] | None = None
    allocatable: dict[str, Quantity] | None = None
    conditions: list[NodeClaimCondition] | None = None
    last_pod_event_time: Timestamp | None = None


class NodeClaim(ApiModel):
    """One GPU node to be provisioned (`karpenter.sh/v1`)."""

    api_version: Literal["karpenter.sh/v1"] = "karpenter.sh/v1"
    kind: Literal["NodeClaim"] = "NodeClaim"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: NodeClaimSpec
    status: NodeClaimStatus | None = None

    @property
    def name(self) -> str:
        return self.metadata.name or ""

    @property
    def instance_type(self) -> str | None:
        """The VM size named by the instance-type requirement, if any."""
        for req in self.spec.requirements:
            if req.key == INSTANCE_TYPE_LABEL and req.operator == "In" and req.values:
                return req.values[0]
        return None

    def condition(self, type_: str) -> NodeClaimCondition | None:
        for cond in (self.status.conditions if self.status else None) or []:
            if cond.type == type_:
                return cond
        return None

    def to_dict(self) -> dict[str, Any]:
        """The object as it would be written: camelCase, only the fields that were set."""
        return self.model_dump(by_alias=True, exclude_unset=True, mode="json")
