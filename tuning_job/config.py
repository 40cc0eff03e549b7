"""KAITO's `training_config` document: parse once, merge the method's defaults, refuse mistakes.

The layout is KAITO's: a top-level `training_config` map whose sections are passed to library
classes as keyword arguments (`ModelConfig` → `from_pretrained`, `QuantizationConfig` →
`BitsAndBytesConfig`, `LoraConfig` → peft `LoraConfig`, `TrainingArguments` → transformers
`TrainingArguments`, `DataCollator` → the collator) plus KAITO's own `DatasetConfig`. Defaults come
from `presets/tuning/<method>.yaml`, section by section, so a user's ConfigMap only needs the keys
it changes. Mistakes are refused here, before minutes of model loading: an unknown section, a key
the target class does not have, or a method that contradicts the quantization.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tuning_job.errors import ConfigError

SECTIONS = (
    "ModelConfig", "QuantizationConfig", "LoraConfig", "TrainingArguments", "DatasetConfig",
    "DataCollator",
)
METHODS = ("lora", "qlora")
DEFAULT_MODEL_DIR = "/workspace/weights"
DATASET_KEYS = {
    "dataset_path", "shuffle_dataset", "shuffle_seed", "train_test_split", "messages_column",
    "context_column", "response_column", "max_seq_length",
}
COLLATOR_KEYS = {"mlm", "mlm_probability", "pad_to_multiple_of", "return_tensors"}
#: TrainingArguments keys of transformers 4 (KAITO's configs, our templates) → transformers 5.
#: `warmup_steps` takes a float in [0, 1) as a ratio of the total steps.
RENAMED_TRAINING_KEYS = {"warmup_ratio": "warmup_steps", "evaluation_strategy": "eval_strategy"}


@dataclass(frozen=True)
class DatasetSettings:
    """KAITO's `DatasetConfig`; column names are detected when not given."""

    path: str = "/mnt/data"
    shuffle: bool = True
    seed: int = 42
    train_fraction: float = 1.0
    messages_column: str | None = None
    context_column: str | None = None
    response_column: str | None = None
    max_seq_length: int | None = None


@dataclass(frozen=True)
class TuningConfig:
    """Everything a run needs, merged and checked."""

    method: str
    model_path: str
    model: dict[str, Any] = field(default_factory=dict)
    quantization: dict[str, Any] = field(default_factory=dict)
    lora: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    dataset: DatasetSettings = field(default_factory=DatasetSettings)
    collator: dict[str, Any] = field(default_factory=dict)

    @property
    def output_dir(self) -> str:
        return str(self.training["output_dir"])


def read_document(path: Path) -> dict[str, dict[str, Any]]:
    """The sections of a `training_config.yaml`; unknown sections are refused by name."""
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as err:
        raise ConfigError(f"cannot read config {path}: {err.strerror or err}") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"config {path} is not valid YAML: {' '.join(str(err).split())}") from err
    if not isinstance(doc, dict) or not isinstance(doc.get("training_config"), dict | None):
        raise ConfigError(f"config {path}: expected a top-level 'training_config' map")
    extra = sorted(set(doc) - {"training_config"})
    if extra:
        raise ConfigError(f"config {path}: unknown top-level key(s) {extra}; "
                          f"everything belongs under 'training_config'")
    sections = doc.get("training_config") or {}
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"config {path}: unknown section(s) {', '.join(unknown)} in "
                          f"training_config; known sections: {', '.join(SECTIONS)}")
    out: dict[str, dict[str, Any]] = {}
    for name, body in sections.items():
        if not isinstance(body, dict | None):
            raise ConfigError(f"config {path}: section {name} must be a map of keys")
        out[name] = dict(body or {})
    return out


def template(method: str) -> dict[str, dict[str, Any]]:
    """The default document for a method, from the catalog's `presets/tuning/`."""
    from kaito_operator.catalog.loader import presets_dir

    return read_document(presets_dir() / "tuning" / f"{method}.yaml")


def infer_method(sections: dict[str, dict[str, Any]]) -> str:
    return "qlora" if sections.get("QuantizationConfig", {}).get("load_in_4bit") else "lora"


def merge(defaults: dict[str, dict[str, Any]],
          user: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Section by section, the user's keys over the defaults' (one level deep, as KAITO)."""
    return {name: {**defaults.get(name, {}), **user.get(name, {})} for name in SECTIONS}


def _check_method(method: str, quant: dict[str, Any]) -> None:
    four = bool(quant.get("load_in_4bit"))
    if method not in METHODS:
        raise ConfigError(f"unknown tuning method {method!r}; use lora or qlora")
    if method == "lora" and (four or quant.get("load_in_8bit")):
        raise ConfigError("method lora trains the unquantized model but QuantizationConfig sets "
                          "load_in_4bit/load_in_8bit: use method qlora or set them to false")
    if method == "qlora" and not four:
        raise ConfigError("method qlora needs QuantizationConfig.load_in_4bit: true")
    if four and quant.get("load_in_8bit"):
        raise ConfigError("QuantizationConfig: load_in_4bit and load_in_8bit are exclusive")


def _dataset(raw: dict[str, Any]) -> DatasetSettings:
    unknown = sorted(set(raw) - DATASET_KEYS)
    if unknown:
        raise ConfigError(f"DatasetConfig: unknown key(s) {', '.join(unknown)}; "
                          f"known: {', '.join(sorted(DATASET_KEYS))}")
    split = raw.get("train_test_split", 1)
    if not isinstance(split, int | float) or not 0 < float(split) <= 1:
        raise ConfigError(f"DatasetConfig.train_test_split must be a fraction in (0, 1] "
                          f"(share of rows used for training), got {split!r}")
    max_len = raw.get("max_seq_length")
    if max_len is not None and (not isinstance(max_len, int) or max_len < 2):
        raise ConfigError(f"DatasetConfig.max_seq_length must be an integer >= 2, got {max_len!r}")
    return DatasetSettings(
        path=str(raw.get("dataset_path") or "/mnt/data"),
        shuffle=bool(raw.get("shuffle_dataset", True)),
        seed=int(raw.get("shuffle_seed", 42)),
        train_fraction=float(split),
        messages_column=raw.get("messages_column"),
        context_column=raw.get("context_column"),
        response_column=raw.get("response_column"),
        max_seq_length=max_len,
    )


def _collator(raw: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(raw) - COLLATOR_KEYS)
    if unknown:
        raise ConfigError(f"DataCollator: unknown key(s) {', '.join(unknown)}; "
                          f"known: {', '.join(sorted(COLLATOR_KEYS))}")
    if raw.get("mlm"):
        raise ConfigError("DataCollator.mlm: true is a masked-LM objective; causal LM tuning "
                          "needs mlm: false")
    return raw


def load_config(
    path: Path,
    method: str | None = None,
    *,
    data_dir: str | None = None,
    output_dir: str | None = None,
    model_dir: str | None = None,
) -> TuningConfig:
    """Read, merge with the method's defaults, apply command-line overrides, check."""
    user = read_document(path)
    method = method or infer_method(user)
    if method not in METHODS:
        raise ConfigError(f"unknown tuning method {method!r}; use lora or qlora")
    merged = merge(template(method), user)
    _check_method(method, merged["QuantizationConfig"])
    model = merged["ModelConfig"]
    model_path = model_dir or model.pop("pretrained_model_name_or_path", None) or DEFAULT_MODEL_DIR
    model.pop("pretrained_model_name_or_path", None)
    training = merged["TrainingArguments"]
    for old, new in RENAMED_TRAINING_KEYS.items():
        if old in training:
            value = training.pop(old)
            training.setdefault(new, float(value) if old == "warmup_ratio" else value)
    if output_dir:
        training["output_dir"] = output_dir
    if not training.get("output_dir"):
        raise ConfigError("TrainingArguments.output_dir is required")
    dataset = merged["DatasetConfig"]
    if data_dir:
        dataset["dataset_path"] = data_dir
    return TuningConfig(
        method=method,
        model_path=str(model_path),
        model=model,
        quantization=merged["QuantizationConfig"],
        lora=merged["LoraConfig"],
        training=training,
        dataset=_dataset(dataset),
        collator=_collator(merged["DataCollator"]),
    )


def _unknown(section: str, keys: set[str], known: set[str]) -> None:
    if bad := sorted(keys - known):
        raise ConfigError(f"{section}: unknown key(s) {', '.join(bad)} (not accepted by the "
                          f"library class this section configures)")


def check_library_keys(cfg: TuningConfig) -> None:
    """Every key of the pass-through sections must be a real field of its class (imports
    transformers and peft, so it runs after the cheap checks)."""
    import peft
    import transformers

    _unknown("TrainingArguments", set(cfg.training),
             {f.name for f in dataclasses.fields(transformers.TrainingArguments)})
    _unknown("LoraConfig", set(cfg.lora), {f.name for f in dataclasses.fields(peft.LoraConfig)})
    params = inspect.signature(transformers.BitsAndBytesConfig.__init__).parameters
    _unknown("QuantizationConfig", set(cfg.quantization), set(params) - {"self", "kwargs"})
