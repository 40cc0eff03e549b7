"""Typed entries of `presets/models.yaml` and `presets/skus.yaml`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

#: The tuning methods a preset can support.
TuningMethod = Literal["lora", "qlora"]


class _Entry(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class HuggingFaceSource(_Entry):
    """Where the weights come from, pinned to one commit."""

    repo: str = Field(pattern=r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
    revision: str = Field(pattern=r"^[0-9a-f]{40}$")
    needs_token: bool = False
    """Gated repositories need a Hugging Face token to download."""


class PresetResources(_Entry):
    """What inference of the preset needs, summed over all GPUs unless said otherwise."""

    gpu_count: int = Field(ge=1)
    total_gpu_memory_gib: float = Field(gt=0, alias="totalGpuMemoryGiB")
    per_gpu_memory_gib: float = Field(default=0, ge=0, alias="perGpuMemoryGiB")
    disk_gib: int = Field(gt=0, alias="diskGiB")


class TuningSupport(_Entry):
    supported: bool = False
    per_gpu_memory_gib: dict[TuningMethod, float] = Field(
        default_factory=dict, alias="perGpuMemoryGiB"
    )

    @model_validator(mode="after")
    def _methods_when_supported(self) -> TuningSupport:
        if self.supported and not self.per_gpu_memory_gib:
            raise ValueError("tuning.perGpuMemoryGiB must name the methods when supported")
        if any(v <= 0 for v in self.per_gpu_memory_gib.values()):
            raise ValueError("tuning.perGpuMemoryGiB values must be positive")
        return self


class RuntimeParameters(_Entry):
    """Parameters the inference server is started with."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="allow", frozen=True
    )

    max_model_len: int = Field(gt=0)
    trust_remote_code: bool = False


class ModelPreset(_Entry):
    """One model of the catalog."""

    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", max_length=63)
    family: str
    hugging_face: HuggingFaceSource
    license: str
    parameters_billion: float = Field(gt=0)
    dtype: Literal["bfloat16", "float16", "float32"]
    resources: PresetResources
    multi_node_inference: bool = False
    tuning: TuningSupport = Field(default_factory=TuningSupport)
    chat_template: str | None = None
    """File in `presets/chat_templates/`, or None to use the tokenizer's own template."""
    runtime: RuntimeParameters
    readiness_timeout_seconds: int = Field(gt=0)

    @property
    def tuning_methods(self) -> list[TuningMethod]:
        return sorted(self.tuning.per_gpu_memory_gib) if self.tuning.supported else []


class GpuSku(_Entry):
    """A GPU VM size or instance type with its published figures."""

    name: str
    cloud: Literal["azure", "aws"]
    family: str
    gpu_model: str
    gpu_count: int = Field(ge=1)
    gpu_memory_gib: float = Field(gt=0, alias="gpuMemoryGiB")
    """Memory of one GPU (or of the GPU fraction for fractional sizes)."""
    fractional_gpu: bool = False
    vcpus: int = Field(gt=0)
    memory_gib: float = Field(gt=0, alias="memoryGiB")

    @property
    def total_gpu_memory_gib(self) -> float:
        return self.gpu_count * self.gpu_memory_gib
