"""The `Workspace` resource (`kaito.sh/v1alpha1`), docs/design.md §2.

As in KAITO, `resource`, `inference` and `tuning` sit at the top level of the object (there is
no `spec`). The CEL rules attached here (`x-kubernetes-validations`) are copied verbatim into
the generated CRD: they are the structural and immutability rules the API server enforces.
Catalog checks (does the preset exist, does the SKU have enough GPU memory) need data the API
server does not have and live in `kaito_operator.validation`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from kaito_operator.api.meta import (
    ApiModel,
    Condition,
    FreeForm,
    LabelSelector,
    ObjectMeta,
)

API_GROUP = "kaito.sh"
API_VERSION = "v1alpha1"
KIND = "Workspace"

DEFAULT_INSTANCE_TYPE = "Standard_NC12s_v3"
MAX_ADAPTERS = 10
#: Most GPU nodes one Workspace may ask for.
MAX_COUNT = 64
#: The Workspace name is the name of its Services (`<name>`, `<name>-headless`), Job and
#: Deployment or StatefulSet; StatefulSet pods carry the label
#: `controller-revision-hash: <name>-<hash of up to 10 characters>`, at most 63 characters.
MAX_NAME_LENGTH = 63 - len("-") - 10
#: Adapter `<name>` becomes the init container `adapter-<name>`, a DNS-1123 label (63).
MAX_ADAPTER_NAME = 63 - len("adapter-")

#: Adapter, preset and other DNS-1123 label-like names.
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
#: Preset names may carry a dot (`phi-3.5-mini-instruct`), as KAITO's do.
PRESET_NAME = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
#: A strength is a string holding a decimal in [0, 1].
STRENGTH = r"^(0(\.[0-9]+)?|1(\.0+)?)$"


#: A Secret's name (a DNS-1123 subdomain).
SecretName = Annotated[str, Field(min_length=1, max_length=253)]


def _cel(rule: str, message: str) -> dict[str, str]:
    return {"rule": rule, "message": message}


def _rules(*rules: dict[str, str]) -> dict[str, Any]:
    return {"x-kubernetes-validations": list(rules)}


def _immutable(field: str) -> dict[str, Any]:
    return _rules(_cel("self == oldSelf", f"{field} is immutable"))


class ResourceSpec(ApiModel):
    """The GPU nodes the workload runs on."""

    count: int = Field(
        default=1, ge=1, le=MAX_COUNT, json_schema_extra=_immutable("resource.count")
    )
    """Number of GPU nodes."""
    instance_type: str = Field(
        default=DEFAULT_INSTANCE_TYPE,
        min_length=1,
        max_length=63,
        json_schema_extra=_immutable("resource.instanceType"),
    )
    """VM size (Azure) or instance type of the GPU nodes, e.g. Standard_NC12s_v3."""
    label_selector: LabelSelector = Field(
        json_schema_extra=_immutable("resource.labelSelector"),
    )
    """Labels given to the provisioned nodes and required of the nodes the workload runs on."""
    preferred_nodes: list[Annotated[str, Field(max_length=253)]] | None = Field(
        default=None, max_length=100
    )
    """Existing nodes to use before provisioning new ones."""


class PresetOptions(ApiModel):
    """Where a private preset's image comes from."""

    image: str | None = Field(default=None, max_length=512)
    image_pull_secrets: list[SecretName] | None = Field(default=None, max_length=16)


class PresetSpec(ApiModel):
    """A model from the preset catalog (`kaito presets` lists them)."""

    name: str = Field(
        min_length=1,
        max_length=63,
        pattern=PRESET_NAME,
        json_schema_extra=_immutable("preset.name"),
    )
    """Preset name, e.g. phi-3-mini-4k-instruct."""
    access_mode: Literal["public", "private"] | None = None
    """`private` serves the preset from your own image (`presetOptions.image`)."""
    preset_options: PresetOptions | None = None


class AdapterSource(ApiModel):
    """Where a LoRA adapter comes from: an OCI artifact or an image with the files in /data."""

    name: str = Field(min_length=1, max_length=MAX_ADAPTER_NAME, pattern=DNS_LABEL)
    """Adapter name; the adapter is mounted at /mnt/adapter/<name>."""
    image: str = Field(min_length=1, max_length=512)
    image_pull_secrets: list[SecretName] | None = Field(default=None, max_length=16)


class AdapterSpec(ApiModel):
    """One LoRA adapter served on top of the preset."""

    source: AdapterSource
    strength: str | None = Field(default="1.0", pattern=STRENGTH, max_length=16)
    """Weight of this adapter in the combined adapter: a decimal in [0, 1] written as a string."""


_ADAPTER_NAMES_UNIQUE = _cel(
    "self.all(a, self.exists_one(b, b.source.name == a.source.name))",
    "inference.adapters: adapter names must be unique",
)


class InferenceSpec(ApiModel):
    """Serve a model: a preset from the catalog, or your own pod template."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": _rules(
            _cel(
                "has(self.preset) != has(self.template)",
                "inference: exactly one of preset or template must be set",
            ),
            _cel(
                "has(self.preset) == has(oldSelf.preset)",
                "inference: cannot switch between preset and template",
            ),
            _cel(
                "!has(self.adapters) || size(self.adapters) == 0 || has(self.preset)",
                "inference.adapters: adapters need a preset",
            ),
        )
    }

    preset: PresetSpec | None = None
    template: FreeForm | None = None
    """A pod template (PodTemplateSpec) run as is, with our labels, affinity and tolerations."""
    adapters: list[AdapterSpec] | None = Field(
        default=None,
        max_length=MAX_ADAPTERS,
        json_schema_extra=_rules(_ADAPTER_NAMES_UNIQUE),
    )


class DataSource(ApiModel):
    """Tuning input: exactly one of URLs, an image with the data in /data, or a volume."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": _rules(
            _cel(
                "(has(self.urls) ? 1 : 0) + (has(self.image) ? 1 : 0)"
                " + (has(self.volumeSource) ? 1 : 0) == 1",
                "tuning.input: exactly one of urls, image or volumeSource must be set",
            ),
        )
    }

    name: str | None = Field(default=None, max_length=63)
    urls: list[Annotated[str, Field(max_length=2048)]] | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        json_schema_extra=_rules(
            _cel(
                "self.all(u, u.startsWith('https://') || u.startsWith('http://'))",
                "tuning.input.urls: every URL must be http(s)",
            )
        ),
    )
    image: str | None = Field(default=None, max_length=512)
    image_pull_secrets: list[SecretName] | None = Field(default=None, max_length=16)
    volume_source: FreeForm | None = None
    """A Kubernetes VolumeSource (persistentVolumeClaim, azureFile, ...)."""


class DataDestination(ApiModel):
    """Tuning output: an image reference to push the adapter to, or a volume."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": _rules(
            _cel(
                "has(self.image) != has(self.volumeSource)",
                "tuning.output: exactly one of image or volumeSource must be set",
            ),
            _cel(
                "!has(self.image) || has(self.imagePushSecret)",
                "tuning.output: image needs imagePushSecret",
            ),
        )
    }

    image: str | None = Field(default=None, max_length=512)
    """Full reference `registry/repository:tag` the adapter is pushed to."""
    image_push_secret: str | None = Field(default=None, max_length=253)
    """Secret of type kubernetes.io/dockerconfigjson with push rights on the registry."""
    volume_source: FreeForm | None = None


class TuningSpec(ApiModel):
    """Fine-tune a preset with LoRA or QLoRA and publish the adapter."""

    preset: PresetSpec
    method: Literal["lora", "qlora"] = Field(
        default="lora", json_schema_extra=_immutable("tuning.method")
    )
    config: str | None = Field(default=None, max_length=253)
    """ConfigMap with a `training_config.yaml`; default: the chart's template for the method."""
    input: DataSource
    output: DataDestination


class WorkspaceStatus(ApiModel):
    """Observed state, written by the controller only."""

    worker_nodes: list[str] | None = None
    """Nodes the workload is pinned to."""
    conditions: list[Condition] | None = None


class Workspace(ApiModel):
    """A model deployment or tuning run on GPU nodes (`kaito.sh/v1alpha1`)."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": _rules(
            _cel(
                "has(self.inference) != has(self.tuning)",
                "exactly one of inference or tuning must be set",
            ),
            _cel(
                "has(self.inference) == has(oldSelf.inference)"
                " && has(self.tuning) == has(oldSelf.tuning)",
                "cannot switch a Workspace between inference and tuning",
            ),
            _cel(
                "!has(self.tuning) || !has(self.resource.count) || self.resource.count == 1",
                "resource.count must be 1 for tuning",
            ),
            _cel(
                f"!has(self.metadata.name) || size(self.metadata.name) <= {MAX_NAME_LENGTH}",
                f"metadata.name: at most {MAX_NAME_LENGTH} characters (the names of the "
                "Workspace's Services and pods derive from it)",
            ),
        )
    }

    api_version: Literal["kaito.sh/v1alpha1"] = "kaito.sh/v1alpha1"
    kind: Literal["Workspace"] = "Workspace"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    resource: ResourceSpec
    inference: InferenceSpec | None = None
    tuning: TuningSpec | None = None
    status: WorkspaceStatus | None = None

    @property
    def name(self) -> str:
        return self.metadata.name or ""

    @property
    def namespace(self) -> str:
        return self.metadata.namespace or "default"

    def to_dict(self) -> dict[str, Any]:
        """The object as it would be written: camelCase, only the fields that were set."""
        return self.model_dump(by_alias=True, exclude_unset=True, mode="json")
