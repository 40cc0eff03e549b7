"""Kubernetes meta types shared by the Workspace and Machine models.

Only what the operators read is typed; everything else in `metadata` is preserved as given
(`extra="allow"`), because the API server owns those fields.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema
from pydantic.alias_generators import to_camel

#: A resource quantity ("16Gi", "1", 4): the schema marks it int-or-string as Kubernetes does.
Quantity = Annotated[
    int | str,
    WithJsonSchema({"x-kubernetes-int-or-string": True}),
]

#: An object kept as written (pod templates, volume sources): the CRD preserves its fields and
#: the API server validates it where it is used (the Deployment, the Job).
FreeForm = Annotated[
    dict[str, Any],
    WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True}),
]

#: ISO-8601 timestamp as the API server writes it (`2024-01-02T03:04:05Z`).
Timestamp = Annotated[str, WithJsonSchema({"type": "string", "format": "date-time"})]


class ApiModel(BaseModel):
    """Base for spec models: camelCase on the wire, unknown fields rejected (typos are errors),
    and strict types as the API server has them (no `"2"` for 2, no `"true"` for true, no
    number for a string)."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        strict=True,
        use_attribute_docstrings=True,
    )


class ObjectMeta(BaseModel):
    """The part of `metadata` the operators read; other fields are preserved."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="allow", strict=True
    )

    name: str | None = None
    namespace: str | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    uid: str | None = None
    resource_version: str | None = None
    generation: int | None = None
    finalizers: list[str] | None = None
    deletion_timestamp: str | None = None
    creation_timestamp: str | None = None


class LabelSelectorRequirement(ApiModel):
    """One `matchExpressions` entry."""

    key: str = Field(max_length=317)
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[Annotated[str, Field(max_length=63)]] | None = Field(default=None, max_length=64)


class LabelSelector(ApiModel):
    """A standard Kubernetes label selector."""

    match_labels: dict[str, Annotated[str, Field(max_length=63)]] | None = Field(
        default=None, json_schema_extra={"maxProperties": 64}
    )
    match_expressions: list[LabelSelectorRequirement] | None = Field(default=None, max_length=16)


class NodeSelectorRequirement(ApiModel):
    """A node selector requirement (`node.kubernetes.io/instance-type In [...]`)."""

    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"]
    values: list[str] | None = None


class Taint(ApiModel):
    """A node taint, as on `Node.spec.taints`."""

    key: str
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]
    time_added: Timestamp | None = None


class Condition(ApiModel):
    """A `metav1.Condition`: computed from observed state on every reconcile pass."""

    type: str = Field(max_length=316)
    status: Literal["True", "False", "Unknown"]
    reason: str | None = Field(default=None, max_length=1024)
    message: str | None = Field(default=None, max_length=32768)
    last_transition_time: Timestamp | None = None
    observed_generation: int | None = Field(default=None, ge=0)
