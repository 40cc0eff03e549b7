"""The `Machine` resource (`karpenter.sh/v1alpha5`, cluster-scoped), docs/design.md §3.

The classic Karpenter-core Machine as KAITO uses it: the workspace controller creates one per
missing GPU node; the gpu-provisioner is the only writer of its status, and sets the conditions
`MachineLaunched` → `MachineRegistered` → `MachineInitialized` → `Ready` in that order.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from kaito_operator.api.meta import (
    ApiModel,
    FreeForm,
    NodeSelectorRequirement,
    ObjectMeta,
    Quantity,
    Taint,
    Timestamp,
)

API_GROUP = "karpenter.sh"
API_VERSION = "v1alpha5"
KIND = "Machine"

#: The requirement key the provisioner reads the VM size from.
INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"

#: Condition types, in the order the provisioner sets them.
LAUNCHED = "MachineLaunched"
REGISTERED = "MachineRegistered"
INITIALIZED = "MachineInitialized"
READY = "Ready"
LIFECYCLE = (LAUNCHED, REGISTERED, INITIALIZED, READY)


class ResourceRequirements(ApiModel):
    """Resources the machine must offer; `storage` is the OS disk."""

    requests: dict[str, Quantity] | None = None


class MachineTemplateRef(ApiModel):
    """Reference to a cloud-specific template (unused by the AKS provisioner, kept for parity)."""

    kind: str | None = None
    name: str
    api_version: str | None = None


class MachineSpec(ApiModel):
    """What node the Machine stands for."""

    taints: list[Taint] | None = None
    startup_taints: list[Taint] | None = None
    requirements: list[NodeSelectorRequirement] | None = None
    resources: ResourceRequirements | None = None
    kubelet: FreeForm | None = None
    machine_template_ref: MachineTemplateRef | None = None


class MachineCondition(ApiModel):
    """A Knative-style condition, as Karpenter v1alpha5 writes them."""

    type: str
    status: Literal["True", "False", "Unknown"]
    severity: str | None = None
    last_transition_time: Timestamp | None = None
    reason: str | None = None
    message: str | None = None


class MachineStatus(ApiModel):
    """Observed state, written by the gpu-provisioner only."""

    node_name: str | None = None
    provider_id: str | None = Field(default=None, alias="providerID")
    capacity: dict[str, Quantity] | None = None
    allocatable: dict[str, Quantity] | None = None
    conditions: list[MachineCondition] | None = None


class Machine(ApiModel):
    """One GPU node to be provisioned (`karpenter.sh/v1alpha5`)."""

    api_version: Literal["karpenter.sh/v1alpha5"] = "karpenter.sh/v1alpha5"
    kind: Literal["Machine"] = "Machine"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: MachineSpec = Field(default_factory=MachineSpec)
    status: MachineStatus | None = None

    @property
    def name(self) -> str:
        return self.metadata.name or ""

    @property
    def instance_type(self) -> str | None:
        """The VM size named by the instance-type requirement, if any."""
        for req in self.spec.requirements or []:
            if req.key == INSTANCE_TYPE_LABEL and req.operator == "In" and req.values:
                return req.values[0]
        return None

    def condition(self, type_: str) -> MachineCondition | None:
        for cond in (self.status.conditions if self.status else None) or []:
            if cond.type == type_:
                return cond
        return None

    def to_dict(self) -> dict[str, Any]:
        """The object as it would be written: camelCase, only the fields that were set."""
        return self.model_dump(by_alias=True, exclude_unset=True, mode="json")
