"""`make demo`: the product's main flow, as far as it runs locally today.

1. the catalog, and the example Workspaces checked the way the admission webhook will;
2. the quick start on the local sandbox (docs/design.md §8): the real workspace operator and
   gpu-provisioner processes against an API emulator and a simulated Azure, GPU nodes that
   join when their pool is created, and the real inference server run as a local process
   answering /chat ("What is Kubernetes?");
3. the tuning round: a LoRA adapter trained by the real tuning job on the shipped dataset
   examples/tuning/kaito-facts (facts about this project a base model cannot know), pushed to
   the sandbox's OCI registry and served by a second Workspace; then the base and the tuned
   Workspace answer the same held-out question side by side, and the demo fails unless only
   the adapter's answer has the taught fact. Everything is deleted and stopped at the end.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

from kaito_operator.cli.main import main as kaito
from kaito_sandbox.demo_steps import job_log, run_kaito, watch, workspaces_table

ROOT = Path(__file__).resolve().parents[1]
#: The shipped tuning dataset: train.jsonl and held-out.json (examples/tuning/kaito-facts).
FACTS = ROOT / "examples" / "tuning" / "kaito-facts"
#: The quick start's Workspace (kept as the "before"), the tuning one, the adapter's.
BASE, TUNING = "workspace-phi-3-mini", "workspace-tuning-kaito-facts"
SERVING = "workspace-kaito-facts"
ADAPTER = "kaito-facts"

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


#: The demo's `tuning.config` ConfigMap: only what differs from presets/tuning/lora.yaml (the
#: operator's default), sized so that a LoRA adapter of Gemma 3 270M learns the kaito-facts
#: on 2 CPU cores in about two minutes. ModelConfig keeps the template's bfloat16: the tuning
#: job trains in float32 on a machine without CUDA and says so in its log.
TRAINING_CONFIG = """\
training_config:
  LoraConfig:            # peft LoraConfig
    r: 16
    lora_alpha: 32
    lora_dropout: 0.0
  TrainingArguments:     # transformers TrainingArguments
    per_device_train_batch_size: 6
    gradient_accumulation_steps: 1
    num_train_epochs: 3
    learning_rate: 0.0015
    lr_scheduler_type: constant
    warmup_ratio: 0.0
    logging_steps: 3
    save_strategy: "no"
"""


def _tuning_files(tmp: Path, registry: str) -> tuple[Path, Path, str]:
    """The shipped kaito-facts dataset (copied into the folder the sandbox's kubelet mounts
    for the claim `kaito-facts`), the push Secret for the sandbox's registry, the tuning
    ConfigMap, and the tuning and serving Workspaces."""
    import base64
    import json
    import shutil

    data = tmp / "claims" / "default" / "kaito-facts"
    data.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(FACTS / "train.jsonl", data / "train.jsonl")
    adapter = f"{registry}/adapters/{ADAPTER}:0.1"
    auth = base64.b64encode(b"demo:demo").decode()
    config = json.dumps({"auths": {registry: {"auth": auth}}})
    secret = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
              "metadata": {"name": "registry-push"},
              "data": {".dockerconfigjson": base64.b64encode(config.encode()).decode()}}
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kaito-facts-lora"},
                  "data": {"training_config.yaml": TRAINING_CONFIG}}
    tuning = {
        "apiVersion": "kaito.sh/v1alpha1", "kind": "Workspace", "metadata": {"name": TUNING},
        "resource": {"instanceType": "Standard_NC24ads_A100_v4",
                     "labelSelector": {"matchLabels": {"apps": "tuning-kaito-facts"}}},
        "tuning": {"preset": {"name": "phi-3-mini-4k-instruct"}, "method": "lora",
                   "config": "kaito-facts-lora",
                   "input": {"volumeSource": {
                       "persistentVolumeClaim": {"claimName": "kaito-facts"}}},
                   "output": {"image": adapter, "imagePushSecret": "registry-push"}},
    }
    serving = {
        "apiVersion": "kaito.sh/v1alpha1", "kind": "Workspace", "metadata": {"name": SERVING},
        "resource": {"instanceType": "Standard_NC6s_v3",
                     "labelSelector": {"matchLabels": {"apps": "kaito-facts"}}},
        "inference": {"preset": {"name": "phi-3-mini-4k-instruct"},
                      "adapters": [{"source": {"name": ADAPTER, "image": adapter},
                                    "strength": "1.0"}]},
    }
    tune_file, serve_file = tmp / "tuning.yaml", tmp / "serving.yaml"
    tune_file.write_text(yaml.safe_dump_all([secret, config_map, tuning], sort_keys=False))
    serve_file.write_text(yaml.safe_dump(serving, sort_keys=False))
    return tune_file, serve_file, adapter


def _verdict_applies(tmp: Path) -> bool:
    """The before/after is checked on the packaged Gemma 3 270M, the model the dataset and
    TRAINING_CONFIG are sized for (not on the tiny random model, nor a model of the user's)."""
    from kaito_sandbox.state import read_state

    state = read_state(tmp) or {}
    if "model_kind" in state:
        return bool(state["model_kind"] == "packaged")
    return "tiny generated model" not in str(state.get("model_note", ""))


def side_by_side(env: dict[str, str], tmp: Path) -> int:
    """Ask the base and the tuned Workspace the first held-out question (not in train.jsonl);
    fail unless the adapter's answer has the taught fact and the base's does not."""
    import json
    import shlex

    held = json.loads((FACTS / "held-out.json").read_text())[0]
    question, expected = held["question"], held["expected"]
    print("\n=== Before and after: the same held-out question (not in train.jsonl) to both")
    answers = {}
    for name in (BASE, SERVING):
        print(f"$ kaito chat {name} {shlex.quote(question)}")
        done = run_kaito(env, "chat", name, question, "--max-new-tokens", "32", show=False)
        if done.returncode != 0:
            print(done.stdout + done.stderr, file=sys.stderr)
            return 1
        print(done.stderr, end="")
        answers[name] = done.stdout.strip()
    print(f"\nQuestion: {question}")
    for label, name in (("base model", BASE), ("base model + LoRA", SERVING)):
        print(f"  {label:<18} {'(' + name + ')':<24} {' '.join(answers[name].split())}")
    base_has, tuned_has = (expected.lower() in answers[n].lower() for n in (BASE, SERVING))
    if not _verdict_applies(tmp):
        print("(not checked: the demo's tuning is sized for the packaged Gemma 3 270M, and this "
              "sandbox serves another model; see `Model served by inference pods` above)")
        return 0
    if tuned_has and not base_has:
        print(f'The adapter learned the fact: its answer contains "{expected}"; the base '
              f"model's does not.")
        return 0
    print(f'demo failed: expected "{expected}" in the adapter\'s answer only (adapter: '
          f"{tuned_has}, base: {base_has})", file=sys.stderr)
    return 1


def tuning_flow(env: dict[str, str], tmp: Path, timeout: float) -> int:
    """Tune with LoRA on the kaito-facts, push the adapter to the sandbox's registry, serve it
    next to the base Workspace and ask both the same held-out question."""
    import json

    state = json.loads((tmp / "state.json").read_text())
    if not state.get("registry"):
        print("\n(tuning skipped: no OCI registry; install Debian's docker-registry)")
        return 0
    tune_file, serve_file, adapter = _tuning_files(tmp, state["registry"])
    print("\n=== Fine-tune with LoRA on examples/tuning/kaito-facts, push the adapter, serve it",
          flush=True)
    print(f"(tuning.config: the ConfigMap kaito-facts-lora)\n{TRAINING_CONFIG}", end="")
    began = time.monotonic()
    if run_kaito(env, "sandbox", "apply", "-f", str(tune_file)).returncode != 0:
        return 1
    if not watch(env, TUNING, max(timeout, 600.0), every=3.0):
        return 1
    job_log(tmp, TUNING, (" loss ", "float32", "training:", "trainable parameters",
                          "adapter written"))
    print(f"\nTrained and pushed in {time.monotonic() - began:.0f} s. The adapter is in the "
          f"registry as {adapter}; serve it:")
    if run_kaito(env, "sandbox", "apply", "-f", str(serve_file)).returncode != 0:
        return 1
    if not watch(env, SERVING, timeout):
        return 1
    import httpx

    from kaito_sandbox.state import read_state

    port = (read_state(tmp) or {}).get("services", {}).get(f"default/{SERVING}")
    models = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=10).json()
    print(f"$ curl -s http://127.0.0.1:{port}/v1/models\n{json.dumps(models)}")
    if f'"{ADAPTER}"' not in json.dumps(models):
        print("demo failed: the adapter is not active", file=sys.stderr)
        return 1
    if side_by_side(env, tmp) != 0:
        return 1
    print()
    for name in (SERVING, TUNING):
        run_kaito(env, "delete", "workspace", name)
    return 0


def sandbox_flow(timeout: float = 180.0) -> int:
    """The quick start on the local sandbox, then tuning and serving the adapter: the real
    operators, inference server, trainer and registry on a simulated cluster and cloud."""
    example = "examples/inference/kaito_workspace_phi_3_mini.yaml"
    name = BASE
    with tempfile.TemporaryDirectory(prefix="kaito-demo-") as tmp:
        env = dict(os.environ, KAITO_SANDBOX_DIR=tmp)
        print("\n=== The quick start on the local sandbox", flush=True)
        if run_kaito(env, "sandbox", "up").returncode != 0:
            return 1
        try:
            print()
            if run_kaito(env, "sandbox", "apply", "-f", example).returncode != 0:
                return 1
            print(f"\n$ kaito get workspaces -w   (kubectl get workspace {name} -w)")
            deadline, last = time.monotonic() + timeout, None
            header_shown = False
            while time.monotonic() < deadline:
                lines = workspaces_table(env, wide=False)
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
                run_kaito(env, "describe", "workspace", name)
                return 1
            print()
            if run_kaito(env, "chat", name, "What is Kubernetes?").returncode != 0:
                return 1
            print()
            run_kaito(env, "describe", "workspace", name)
            if tuning_flow(env, Path(tmp), timeout) != 0:
                return 1
            run_kaito(env, "delete", "workspace", name)
        finally:
            print()
            run_kaito(env, "sandbox", "down")
    return 0


if __name__ == "__main__":
    raise SystemExit(run())
