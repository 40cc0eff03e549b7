"""The `NodeClaim` resource (`karpenter.sh/v1`, cluster-scoped), docs/design.md §3.

Karpenter v1's request for one node, which replaced the v1alpha5 Machine: KAITO's workspace
controller creates one per missing GPU node (in the `nodeclaim` node-provisioning mode), and
whoever provisions it (Azure's gpu-provisioner from v0.3, our gpu-provisioner with
`PROVISIONER_NODE_KIND=nodeclaim`, or Karpenter itself) writes its status, setting the
conditions `Launched` → `Registered` → `Initialized` → `Ready`. The spec is immutable once
created (upstream's CRD enforces `self == oldSelf`).

Only the fields upstream defines are modelled, with upstream's types and CEL rules, so what we
write is what Karpenter accepts and the CRD we ship (for clusters without Karpenter) refuses
what Karpenter's refuses (tests check this model's CRD and our objects against Karpenter's
published CRD).
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

#: Label keys upstream refuses in requirements (Karpenter owns its domain; the hostname is
#: the node's own).
_KEY_RULES = [
    {"rule": 'self in ["karpenter.sh/capacity-type", "karpenter.sh/nodepool"] || '
             '!self.find("^([^/]+)").endsWith("karpenter.sh")',
     "message": 'label domain "karpenter.sh" is restricted'},
    {"rule": 'self != "kubernetes.io/hostname"',
     "message": 'label "kubernetes.io/hostname" is restricted'},
]
_REQUIREMENTS_RULES = [
    {"rule": "self.all(x, x.operator == 'In' ? x.values.size() != 0 : true)",
     "message": "requirements with operator 'In' must have a value defined"},
    {"rule": "self.all(x, (x.operator == 'Gt' || x.operator == 'Lt' || x.operator == 'Gte' "
             "|| x.operator == 'Lte') ? (x.values.size() == 1 && int(x.values[0]) >= 0) : true)",
     "message": "requirements operator 'Gt', 'Lt', 'Gte', or 'Lte' must have a single positive "
                "integer value"},
    {"rule": "self.all(x, (x.operator == 'In' && has(x.minValues)) ? "
             "x.values.size() >= x.minValues : true)",
     "message": "requirements with 'minValues' must have at least that many values specified "
                "in the 'values' field"},
]
#: A label key: an optional DNS-subdomain prefix and a name (as upstream's CRD writes it).
LABEL_KEY = (r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*(\/))?"
             r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
#: `720h`, `1h30m`, or `Never`.
DURATION = r"^(([0-9]+(s|m|h))+|Never)$"


def _validations(rules: list[dict[str, str]]) -> dict[str, Any]:
    return {"x-kubernetes-validations": rules}


def _not_empty(field: str) -> dict[str, Any]:
    return _validations([{"rule": "self != ''", "message": f"{field} may not be empty"}])


class NodeClaimRequirement(ApiModel):
    """A node selector requirement with Karpenter's `minValues`."""

    key: str = Field(max_length=316, pattern=LABEL_KEY,
                     json_schema_extra=_validations(_KEY_RULES))
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt", "Gte", "Lte"]
    values: list[str] | None = None
    min_values: int | None = Field(default=None, ge=1, le=50)


class NodeClassReference(ApiModel):
    """The cloud-specific NodeClass (`karpenter.azure.com` `AKSNodeClass`,
    `karpenter.k8s.aws` `EC2NodeClass`, ...)."""

    group: str = Field(pattern=r"^[^/]*$", json_schema_extra=_not_empty("group"))
    kind: str = Field(json_schema_extra=_not_empty("kind"))
    name: str = Field(json_schema_extra=_not_empty("name"))


class NodeClaimResources(ApiModel):
    """Resources the node must offer; `storage` is the OS disk."""

    requests: dict[str, Quantity] | None = None


class NodeClaimSpec(ApiModel):
    """What node the NodeClaim stands for (immutable once created)."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": {"x-kubernetes-validations": [
            {"rule": "self == oldSelf", "message": "spec is immutable"}]},
    }

    taints: list[Taint] | None = None
    startup_taints: list[Taint] | None = None
    requirements: list[NodeClaimRequirement] = Field(
        max_length=100, json_schema_extra=_validations(_REQUIREMENTS_RULES)
    )
    resources: NodeClaimResources | None = None
    node_class_ref: NodeClassReference
    expire_after: str | None = Field(default=None, pattern=DURATION)
    termination_grace_period: str | None = Field(
        default=None, pattern=r"^([0-9]+(s|m|h))+$"
    )


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
