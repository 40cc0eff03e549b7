"""`make demo`: the product's main flow, as far as it runs locally today.

1. the catalog, and the example Workspaces checked the way the admission webhook will;
2. the quick start on the local sandbox (docs/design.md §8): the real workspace operator and
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


def _cells(header: str, row: str) -> dict[str, str]:
    """A table row by column name (cells may be empty, so split() cannot be used)."""
    names = header.split()
    starts = [header.index(n) for n in names] + [len(row) + 1]
    return {n: row[starts[i]:starts[i + 1]].strip() for i, n in enumerate(names)}


#: WorkspaceReady reasons that will not fix themselves: stop watching and say why.
_FAILED = {"TuningJobFailed", "InvalidWorkspace", "MachineFailed", "ErrImagePull",
           "ImagePullBackOff", "OOMKilled"}


def _failure(env: dict[str, str], name: str) -> str | None:
    import httpx

    from kaito_sandbox.state import read_state

    state = read_state(Path(env["KAITO_SANDBOX_DIR"])) or {}
    path = f"/apis/kaito.sh/v1alpha1/namespaces/default/workspaces/{name}"
    live = httpx.get(state.get("api", "") + path, timeout=10).json()
    for cond in (live.get("status") or {}).get("conditions") or []:
        if cond["type"] == "WorkspaceReady" and cond.get("reason") in _FAILED:
            return f"{cond['reason']}: {cond.get('message')}"
    return None


def _watch(env: dict[str, str], name: str, timeout: float) -> bool:
    """Print `kaito get workspaces -o wide` rows of `name` as they change, until
    WORKSPACEREADY is True."""
    print(f"$ kaito get workspaces -o wide -w   (watching {name})")
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        lines = _kaito(env, "get", "workspaces", "-o", "wide", show=False).stdout.splitlines()
        rows = [line for line in lines[1:] if line.split()[0] == name]
        if rows:
            cells = _cells(lines[0], rows[0])
            state = [v for k, v in cells.items() if k.endswith(("READY", "STARTED"))]
            if last is None:
                print(lines[0])
            if state != last:
                print(rows[0], flush=True)
                last = state
            if cells["WORKSPACEREADY"] == "True":
                return True
            if (failure := _failure(env, name)) is not None:
                print(f"demo failed: {name}: {failure}", file=sys.stderr)
                _kaito(env, "describe", "workspace", name)
                return False
        time.sleep(1.0)
    print(f"demo failed: {name} did not become ready", file=sys.stderr)
    _kaito(env, "describe", "workspace", name)
    return False


def _tuning_files(tmp: Path, registry: str) -> tuple[Path, Path, str]:
    """A small chat dataset (in the folder the sandbox's kubelet mounts for the claim
    `demo-dataset`), the push Secret for the sandbox's registry, and the tuning and serving
    Workspaces."""
    import base64
    import json

    data = tmp / "claims" / "default" / "demo-dataset"
    data.mkdir(parents=True, exist_ok=True)
    rows = [{"messages": [{"role": "user", "content": f"What is {n} plus {n}?"},
                          {"role": "assistant", "content": f"{n} plus {n} is {2 * n}."}]}
            for n in range(48)]
    (data / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    adapter = f"{registry}/adapters/phi-3-sums:0.1"
    auth = base64.b64encode(b"demo:demo").decode()
    config = json.dumps({"auths": {registry: {"auth": auth}}})
    secret = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
              "metadata": {"name": "registry-push"},
              "data": {".dockerconfigjson": base64.b64encode(config.encode()).decode()}}
    tuning = {
        "apiVersion": "kaito.sh/v1alpha1", "kind": "Workspace",
        "metadata": {"name": "workspace-tuning-phi-3"},
        "resource": {"instanceType": "Standard_NC24ads_A100_v4",
                     "labelSelector": {"matchLabels": {"apps": "tuning-phi-3"}}},
        "tuning": {"preset": {"name": "phi-3-mini-4k-instruct"}, "method": "lora",
                   "input": {"volumeSource": {
                       "persistentVolumeClaim": {"claimName": "demo-dataset"}}},
                   "output": {"image": adapter, "imagePushSecret": "registry-push"}},
    }
    serving = {
        "apiVersion": "kaito.sh/v1alpha1", "kind": "Workspace",
        "metadata": {"name": "workspace-phi-3-sums"},
        "resource": {"instanceType": "Standard_NC6s_v3",
                     "labelSelector": {"matchLabels": {"apps": "phi-3-sums"}}},
        "inference": {"preset": {"name": "phi-3-mini-4k-instruct"},
                      "adapters": [{"source": {"name": "phi-3-sums", "image": adapter},
                                    "strength": "1.0"}]},
    }
    tune_file, serve_file = tmp / "tuning.yaml", tmp / "serving.yaml"
    tune_file.write_text(yaml.safe_dump_all([secret, tuning], sort_keys=False))
    serve_file.write_text(yaml.safe_dump(serving, sort_keys=False))
    return tune_file, serve_file, adapter


def tuning_flow(env: dict[str, str], tmp: Path, timeout: float) -> int:
    """Tune with LoRA, push the adapter to the sandbox's registry, serve it."""
    import json

    state = json.loads((tmp / "state.json").read_text())
    if not state.get("registry"):
        print("\n(tuning skipped: no OCI registry; install Debian's docker-registry)")
        return 0
    tune_file, serve_file, adapter = _tuning_files(tmp, state["registry"])
    print("\n=== Fine-tune with LoRA, push the adapter, serve it", flush=True)
    if _kaito(env, "sandbox", "apply", "-f", str(tune_file)).returncode != 0:
        return 1
    if not _watch(env, "workspace-tuning-phi-3", timeout):
        return 1
    print(f"\nThe adapter is in the registry as {adapter}; serve it:")
    if _kaito(env, "sandbox", "apply", "-f", str(serve_file)).returncode != 0:
        return 1
    if not _watch(env, "workspace-phi-3-sums", timeout):
        return 1
    print()
    if _kaito(env, "chat", "workspace-phi-3-sums", "What is 7 plus 7?").returncode != 0:
        return 1
    import httpx

    from kaito_sandbox.state import read_state

    port = (read_state(tmp) or {}).get("services", {}).get("default/workspace-phi-3-sums")
    models = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=10).json()
    print(f"$ curl -s http://127.0.0.1:{port}/v1/models\n{json.dumps(models)}")
    if "phi-3-sums" not in json.dumps(models):
        print("demo failed: the adapter is not active", file=sys.stderr)
        return 1
    for name in ("workspace-phi-3-sums", "workspace-tuning-phi-3"):
        _kaito(env, "delete", "workspace", name)
    return 0


def sandbox_flow(timeout: float = 180.0) -> int:
    """The quick start on the local sandbox, then tuning and serving the adapter: the real
    operators, inference server, trainer and registry on a simulated cluster and cloud."""
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
            if tuning_flow(env, Path(tmp), timeout) != 0:
                return 1
        finally:
            print()
            _kaito(env, "sandbox", "down")
    return 0


if __name__ == "__main__":
    raise SystemExit(run())
