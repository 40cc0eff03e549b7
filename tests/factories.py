"""Object factories for tests: valid Workspaces to start from, and a way to break them."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kaito_operator.api.workspace import Workspace
from kaito_operator.catalog import Catalog
from kaito_operator.validation import Finding, errors, summary, validate_workspace

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "examples"

_MISSING = object()


def inference_workspace(
    name: str = "workspace-phi-3",
    preset: str = "phi-3-mini-4k-instruct",
    instance_type: str = "Standard_NC6s_v3",
) -> dict[str, Any]:
    return {
        "apiVersion": "kaito.sh/v1alpha1",
        "kind": "Workspace",
        "metadata": {"name": name, "namespace": "default"},
        "resource": {
            "instanceType": instance_type,
            "labelSelector": {"matchLabels": {"apps": "phi-3"}},
        },
        "inference": {"preset": {"name": preset}},
    }


def tuning_workspace(
    name: str = "workspace-tuning",
    preset: str = "phi-3-mini-4k-instruct",
    method: str = "qlora",
    instance_type: str = "Standard_NC24ads_A100_v4",
) -> dict[str, Any]:
    return {
        "apiVersion": "kaito.sh/v1alpha1",
        "kind": "Workspace",
        "metadata": {"name": name, "namespace": "default"},
        "resource": {
            "instanceType": instance_type,
            "labelSelector": {"matchLabels": {"apps": "tuning"}},
        },
        "tuning": {
            "preset": {"name": preset},
            "method": method,
            "input": {"urls": ["https://example.com/data/train.parquet"]},
            "output": {"image": "myregistry.azurecr.io/adapters/a:0.1", "imagePushSecret": "push"},
        },
    }


def with_changes(obj: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of `obj` with dotted paths (`inference.adapters[0].strength`) set, or
    removed when the value is `DELETE`."""
    result = copy.deepcopy(obj)
    for path, value in changes.items():
        set_path(result, path, value)
    return result


DELETE = _MISSING


def set_path(obj: Any, path: str, value: Any) -> None:
    """Set `a.b[0].c` in nested dicts/lists, creating dicts on the way."""
    parts: list[str | int] = []
    for piece in path.split("."):
        name, _, rest = piece.partition("[")
        if name:
            parts.append(name)
        while rest:
            index, _, rest = rest.partition("]")
            parts.append(int(index))
            rest = rest.lstrip("[")
    target = obj
    for part in parts[:-1]:
        if isinstance(part, int):
            target = target[part]
        else:
            target = target.setdefault(part, {})
    last = parts[-1]
    if value is DELETE:
        del target[last]
    else:
        target[last] = value


def example_workspaces() -> Iterator[Any]:
    """Every Workspace in `examples/`, as a pytest param named after its file."""
    for path in sorted(EXAMPLES_DIR.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "Workspace":
                yield pytest.param(doc, id=path.name)


class WorkspaceInvalid(ValueError):
    """Raised by `parse_workspace`; carries every error found."""

    def __init__(self, findings: list[Finding]) -> None:
        self.findings = findings
        super().__init__(summary(findings))


def parse_workspace(obj: dict[str, Any], catalog: Catalog) -> Workspace:
    """The typed Workspace, as the controller sees it once `validate_workspace` (the product's
    entry point) found no error, or `WorkspaceInvalid` with every error found."""
    found = errors(validate_workspace(obj, catalog))
    if found:
        raise WorkspaceInvalid(found)
    return Workspace.model_validate(obj)
