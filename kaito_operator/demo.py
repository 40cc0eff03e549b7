"""`make demo`: the product's main flow, as far as it runs locally today.

1. the catalog, and the example Workspaces checked the way the admission webhook will;
2. the quick start on the local sandbox (DESIGN §8): the real workspace operator and
   gpu-provisioner processes against an API emulator and a simulated Azure, GPU nodes that
   join when their pool is created, and the real inference server run as a local process
   answering /chat; then the Workspace is deleted and everything stopped.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
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
    started = time.monotonic()
    if sandbox_flow() != 0:
        return 1
    print(f"\nThe sandbox flow took {time.monotonic() - started:.0f} s.")
    print(
        "\nNext: `helm install` the charts and `kubectl apply -f "
        "examples/inference/kaito_workspace_phi_3_mini.yaml` on a cluster (see README.md)."
    )
    return 0


def _kaito(env: dict[str, str], *args: str, show: bool = True) -> subprocess.CompletedProcess[str]:
    if show:
        print(f"$ kaito {' '.join(args)}", flush=True)
    done = subprocess.run([sys.executable, "-m", "kaito_operator.cli.main", *args], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    if show:
        print(done.stdout + done.stderr, end="", flush=True)
    return done


def sandbox_flow(timeout: float = 180.0) -> int:
    """The quick start on the local sandbox: real operators, inference server and provisioner
    on a simulated cluster and cloud."""
    example = "examples/inference/kaito_workspace_phi_3_mini.yaml"
    name = "workspace-phi-3-mini"
    with tempfile.TemporaryDirectory(prefix="kaito-demo-") as tmp:
        env = dict(os.environ, KAITO_SANDBOX_DIR=tmp)
        print("\n=== The quick start on the local sandbox", flush=True)
        if _kaito(env, "sandbox", "up").returncode != 0:
            return 1
        try:
            print()
            if _kaito(env, "sandbox", "apply", "-f", example).returncode != 0:
                return 1
            print(f"\n$ kaito get workspaces -w   (kubectl get workspace {name} -w)")
            deadline, last = time.monotonic() + timeout, None
            header_shown = False
            while time.monotonic() < deadline:
                lines = _kaito(env, "get", "workspaces", show=False).stdout.splitlines()
                if len(lines) == 2:
                    if not header_shown:
                        print(lines[0])
                        header_shown = True
                    if lines[1].split()[2:5] != last:
                        print(lines[1], flush=True)
                        last = lines[1].split()[2:5]
                    if last == ["True", "True", "True"]:
                        break
                time.sleep(1.0)
            else:
                print("demo failed: the Workspace did not become ready", file=sys.stderr)
                _kaito(env, "describe", "workspace", name)
                return 1
            print()
            if _kaito(env, "chat", name, "What is Kubernetes?").returncode != 0:
                return 1
            print()
            _kaito(env, "describe", "workspace", name)
            print()
            _kaito(env, "delete", "workspace", name)
        finally:
            print()
            _kaito(env, "sandbox", "down")
    return 0


if __name__ == "__main__":
    raise SystemExit(run())
