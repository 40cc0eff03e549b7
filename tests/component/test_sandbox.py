"""The sandbox end to end, as a user runs it: up → apply → ready → chat → delete → down,
with nothing left running and no agent pool left in the simulated subscription."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KAITO = [sys.executable, "-m", "kaito_operator.cli.main"]


def kaito(env, *args, timeout=180, check=True):
    done = subprocess.run([*KAITO, *args], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)
    if check:
        assert done.returncode == 0, f"kaito {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def test_sandbox_flow_end_to_end(tmp_path, tiny_model_dir):
    # The tiny model keeps this test quick; the real default model: tests/realmodel/.
    env = dict(os.environ, KAITO_SANDBOX_DIR=str(tmp_path / "sandbox"), HF_HUB_OFFLINE="1",
               HF_HOME=str(tmp_path / "hf"), KAITO_SANDBOX_MODEL=str(tiny_model_dir))
    started = time.monotonic()
    up = kaito(env, "sandbox", "up")
    assert "SIMULATED cluster and cloud" in up.stdout
    assert "Model served by inference pods:" in up.stdout
    state = json.loads((tmp_path / "sandbox" / "state.json").read_text())
    assert state["model_kind"] == "env" and state["model"] == str(tiny_model_dir)
    try:
        example = "examples/inference/kaito_workspace_phi_3_mini.yaml"
        assert "created" in kaito(env, "sandbox", "apply", "-f", example).stdout
        deadline = time.monotonic() + 120
        row = ""
        while time.monotonic() < deadline:
            row = kaito(env, "get", "workspaces").stdout.splitlines()[-1]
            if row.split()[2:5] == ["True", "True", "True"]:
                break
            time.sleep(1)
        assert row.split()[2:5] == ["True", "True", "True"], row
        answer = kaito(env, "chat", "workspace-phi-3-mini", "What is Kubernetes?")
        assert answer.stdout.strip()  # the answer alone: a user message through the template
        assert "curl -s -X POST http://127.0.0.1:" in answer.stderr
        assert '"messages": [{"role": "user", "content": "What is Kubernetes?"}]' in answer.stderr
        raw = kaito(env, "chat", "workspace-phi-3-mini", "Kubernetes is", "--raw")
        assert raw.stdout.startswith("Kubernetes is")  # return_full_text, as KAITO
        assert len(raw.stdout.strip()) > len("Kubernetes is")
        assert '"prompt": "Kubernetes is"' in raw.stderr
        described = kaito(env, "describe", "workspace", "workspace-phi-3-mini").stdout
        assert "WorkspaceReady    True" in described and "MachineCreated" in described
        pools_while_ready = json.loads((tmp_path / "sandbox" / "state.json").read_text())["pools"]
        assert pools_while_ready == 1
        kaito(env, "delete", "workspace", "workspace-phi-3-mini")
        deadline = time.monotonic() + 60
        pools = None
        while time.monotonic() < deadline:
            pools = json.loads((tmp_path / "sandbox" / "state.json").read_text())["pools"]
            if pools == 0:
                break
            time.sleep(0.5)
        assert pools == 0, "the agent pool was not deleted with the Workspace"
    finally:
        down = kaito(env, "sandbox", "down", check=False)
    assert down.returncode == 0, down.stdout + down.stderr
    assert "nothing it started is running" in down.stdout
    for pid in [state["pid"], *state["children"]]:
        assert not alive(int(pid)), f"process {pid} is still running"
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path / "sandbox")], capture_output=True,
                               text=True).stdout.split()
    assert leftovers == [], f"processes left behind: {leftovers}"
    print(f"sandbox flow took {time.monotonic() - started:.1f} s")
