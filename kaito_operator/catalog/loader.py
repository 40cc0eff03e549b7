"""Find and load the catalog files."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from kaito_operator.catalog.models import GpuSku, ModelPreset

#: Environment variable that points at another `presets/` folder (images, custom catalogs).
PRESETS_DIR_ENV = "KAITO_PRESETS_DIR"


class CatalogError(Exception):
    """The catalog data is missing or inconsistent; the message names file and entry."""


def presets_dir() -> Path:
    """The `presets/` folder: `$KAITO_PRESETS_DIR`, the installed copy, or the source tree."""
    if env := os.environ.get(PRESETS_DIR_ENV):
        return Path(env)
    source_tree = Path(__file__).resolve().parents[2] / "presets"
    if (source_tree / "models.yaml").is_file():
        return source_tree
    try:
        installed = Path(str(resources.files("kaito_presets")))
    except ModuleNotFoundError as exc:
        raise CatalogError(
            f"presets/ not found; set {PRESETS_DIR_ENV} to the catalog folder"
        ) from exc
    return installed


@dataclass(frozen=True)
class Catalog:
    """Presets and SKUs by name, plus where they were read from."""

    root: Path
    presets: dict[str, ModelPreset] = field(default_factory=dict)
    skus: dict[str, GpuSku] = field(default_factory=dict)

    def preset(self, name: str) -> ModelPreset | None:
        return self.presets.get(name)

    def sku(self, name: str) -> GpuSku | None:
        """Look a SKU up by name; Azure names match case-insensitively, as ARM does."""
        if name in self.skus:
            return self.skus[name]
        lowered = name.lower()
        for sku in self.skus.values():
            if sku.cloud == "azure" and sku.name.lower() == lowered:
                return sku
        return None

    def chat_template(self, preset: ModelPreset) -> str | None:
        """Text of the preset's chat template file, or None when the tokenizer's is used."""
        if preset.chat_template is None:
            return None
        return (self.root / "chat_templates" / preset.chat_template).read_text()

    def tuning_template(self, method: str) -> dict[str, Any]:
        """The default `training_config` document for a tuning method."""
        path = self.root / "tuning" / f"{method}.yaml"
        data = _read_yaml(path)
        if not isinstance(data, dict):
            raise CatalogError(f"{path}: expected a mapping")
        return data


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise CatalogError(f"{path}: file not found") from exc
    except yaml.YAMLError as exc:
        raise CatalogError(f"{path}: not valid YAML: {exc}") from exc


def _entries(path: Path, key: str) -> list[dict[str, Any]]:
    data = _read_yaml(path)
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        raise CatalogError(f"{path}: expected a top-level list `{key}:`")
    entries: list[dict[str, Any]] = data[key]
    return entries


def _parse(path: Path, key: str, model: type[Any]) -> dict[str, Any]:
    parsed: dict[str, Any] = {}
    for index, raw in enumerate(_entries(path, key)):
        label = raw.get("name", f"#{index}") if isinstance(raw, dict) else f"#{index}"
        try:
            entry = model.model_validate(raw)
        except ValidationError as exc:
            raise CatalogError(f"{path}: {key}[{label}]: {exc}") from exc
        if entry.name in parsed:
            raise CatalogError(f"{path}: {key}[{label}]: duplicate name")
        parsed[entry.name] = entry
    return parsed


def load_catalog(root: Path | None = None) -> Catalog:
    """Read and check `models.yaml`, `skus.yaml` and the chat templates they refer to."""
    root = root or presets_dir()
    presets = _parse(root / "models.yaml", "models", ModelPreset)
    skus = _parse(root / "skus.yaml", "skus", GpuSku)
    for preset in presets.values():
        template = preset.chat_template
        if template and not (root / "chat_templates" / template).is_file():
            raise CatalogError(
                f"{root / 'models.yaml'}: models[{preset.name}]: chat template "
                f"{template} not found in {root / 'chat_templates'}"
            )
    return Catalog(root=root, presets=presets, skus=skus)
