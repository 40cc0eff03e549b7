"""`make demo`: the product's main flow, as far as it runs locally today.

It walks a new user through the catalog, checks the example Workspaces the way the admission
webhook will, and shows what an invalid Workspace is told. The local sandbox (DESIGN §8: API
emulator, operators, simulated cloud, a real inference server answering /chat) replaces most
of this once it lands.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import yaml

from kaito_operator.cli.main import main as kaito

ROOT = Path(__file__).resolve().parents[1]

_INVALID = {
    "apiVersion": "kaito.sh/v1alpha1",
    "kind": "Workspace",
    "metadata": {"name": "workspace-phi-3-medium"},
    "resource": {
        "instanceType": "Standard_NC6s_v3",
        "labelSelector": {"matchLabels": {"apps": "phi-3"}},
    },
    "inference": {
        "preset": {"name": "phi-3-medium-4k-instruct"},
        "adapters": [{"source": {"name": "a1", "image": "myregistry.azurecr.io/a1:1"},
                      "strength": 1.5}],
    },
}


def _step(title: str, command: str) -> None:
    print(f"\n=== {title}\n$ {command}", flush=True)


def run() -> int:
    os.chdir(ROOT)
    print("KAITO in Python: local demo (no cluster or cloud is touched).")
    _step("Model presets and what they need", "kaito presets")
    kaito(["presets"])
    _step("What runs on one V100 (Standard_NC6s_v3)", "kaito presets --fits Standard_NC6s_v3")
    kaito(["presets", "--fits", "Standard_NC6s_v3"])
    examples = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "examples").rglob("*.yaml"))
    _step(
        "The example Workspaces, checked as the admission webhook will",
        "kaito validate examples/*/*.yaml",
    )
    if kaito(["validate", *examples]) != 0:
        print("demo failed: an example is invalid", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(dir=ROOT) as tmp:
        bad = Path(tmp).relative_to(ROOT) / "workspace-phi-3-medium.yaml"
        bad.write_text(yaml.safe_dump(_INVALID, sort_keys=False))
        _step(
            "An invalid Workspace and what its author is told",
            f"kaito validate {bad}",
        )
        if kaito(["validate", str(bad)]) != 1:
            print("demo failed: the invalid Workspace was accepted", file=sys.stderr)
            return 1
    print(
        "\nNext: `helm install` the charts and `kubectl apply -f "
        "examples/inference/kaito_workspace_phi_3_mini.yaml` on a cluster (see README.md)."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(run())
