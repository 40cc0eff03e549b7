"""The sandbox end to end, as a user runs it: up → apply → ready → chat → delete → down,
with nothing left running and no agent pool left in the simulated subscription; in each
node-provisioning mode (`kaito sandbox up --provisioner machine|nodeclaim|none`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from kaito_sandbox.state import alive
from tests.support.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
KAITO = [sys.executable, "-m", "kaito_operator.cli.main"]


def kaito(env, *args, timeout=180, check=True):
    done = subprocess.run([*KAITO, *args], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)
    if check:
        assert done.returncode == 0, f"kaito {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done


def test_sandbox_flow_end_to_end(tmp_path, tiny_model_dir):
    # The tiny model keeps this test quick; the real default model: tests/realmodel/.
    env = dict(os.environ, KAITO_SANDBOX_DIR=str(tmp_path / "sandbox"), HF_HUB_OFFLINE="1",
               HF_HOME=str(tmp_path / "hf"), KAITO_SANDBOX_MODEL=str(tiny_model_dir))
    started = time.monotonic()
    up = kaito(env, "sandbox", "up")
    assert "SIMULATED cluster and cloud" in up.stdout
    assert "Model served by inference pods:" in up.stdout
    assert "Node provisioning: machine (the operator creates a karpenter.sh/v1alpha5" in up.stdout
    state = json.loads((tmp_path / "sandbox" / "state.json").read_text())
    assert state["model_kind"] == "env" and state["model"] == str(tiny_model_dir)
    assert state["provisioner"] == "machine" and len(state["operators"]) == 2
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
        down_and_check_nothing_left(env, tmp_path, state)
    print(f"sandbox flow took {time.monotonic() - started:.1f} s")


QUICK_START = "examples/inference/kaito_workspace_phi_3_mini.yaml"
WORKSPACE = "/apis/kaito.sh/v1alpha1/namespaces/default/workspaces/workspace-phi-3-mini"
MACHINES = "/apis/karpenter.sh/v1alpha5/machines"
NODECLAIMS = "/apis/karpenter.sh/v1/nodeclaims"


def sandbox_env(tmp_path, tiny_model_dir):
    return dict(os.environ, KAITO_SANDBOX_DIR=str(tmp_path / "sandbox"), HF_HUB_OFFLINE="1",
                HF_HOME=str(tmp_path / "hf"), KAITO_SANDBOX_MODEL=str(tiny_model_dir))


def read_state(tmp_path):
    return json.loads((tmp_path / "sandbox" / "state.json").read_text())


def conditions(api: str) -> dict[str, dict]:
    ws = httpx.get(api + WORKSPACE, timeout=10).json()
    return {c["type"]: c for c in (ws.get("status") or {}).get("conditions") or []}


def items(api: str, path: str) -> list[dict]:
    return httpx.get(api + path, timeout=10).json()["items"]


def ready(api: str) -> bool:
    conds = conditions(api)
    return all(conds.get(t, {}).get("status") == "True"
               for t in ("ResourceReady", "InferenceReady", "WorkspaceReady"))


def down_and_check_nothing_left(env, tmp_path, state):
    down = kaito(env, "sandbox", "down", check=False)
    assert down.returncode == 0, down.stdout + down.stderr
    assert "nothing it started is running" in down.stdout
    for pid in [state["pid"], *state["children"]]:
        assert not alive(int(pid)), f"process {pid} is still running"
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path / "sandbox")], capture_output=True,
                               text=True).stdout.split()
    assert leftovers == [], f"processes left behind: {leftovers}"


def test_sandbox_none_mode_serves_on_pre_joined_gpu_nodes(tmp_path, tiny_model_dir):
    """`--provisioner none`: no gpu-provisioner, no Azure, no Machine or NodeClaim; the quick
    start runs on the GPU node the sandbox joined at start, which outlives the Workspace."""
    env = sandbox_env(tmp_path, tiny_model_dir)
    started = time.monotonic()
    up = kaito(env, "sandbox", "up", "--provisioner", "none")
    banner = next(line for line in up.stdout.splitlines() if "SIMULATED" in line)
    assert banner.startswith("This is a SIMULATED cluster:") and "Azure" not in banner
    assert "Node provisioning: none (bring your own nodes" in up.stdout
    state = read_state(tmp_path)
    assert state["provisioner"] == "none" and state["arm"] is None
    assert len(state["operators"]) == 1  # the workspace operator alone
    (node,) = state["nodes"]
    assert (f"GPU nodes offered: 1 x Standard_NC6s_v3 (1 GPU each), labels apps=phi-3: {node}"
            in up.stdout)
    api = state["api"]
    try:
        again = kaito(env, "sandbox", "up", "--provisioner", "machine", check=False)
        assert again.returncode == 1
        assert "already running with --provisioner none" in again.stderr
        assert json.loads(kaito(env, "sandbox", "status").stdout)["provisioner"] == "none"
        joined = httpx.get(f"{api}/api/v1/nodes/{node}", timeout=10).json()
        assert joined["metadata"]["labels"]["apps"] == "phi-3"
        assert joined["status"]["allocatable"]["nvidia.com/gpu"] == "1"

        assert "created" in kaito(env, "sandbox", "apply", "-f", QUICK_START).stdout
        wait_for(lambda: ready(api), timeout=120, what="the Workspace ready on the BYO node")
        ws = httpx.get(api + WORKSPACE, timeout=10).json()
        assert ws["status"]["workerNodes"] == [node]
        assert not {"MachineReady", "NodeClaimReady"} & set(conditions(api))
        assert items(api, MACHINES) == [] and items(api, NODECLAIMS) == []
        answer = kaito(env, "chat", "workspace-phi-3-mini", "What is Kubernetes?")
        assert answer.stdout.strip()
        assert read_state(tmp_path)["pools"] == 0
        kaito(env, "delete", "workspace", "workspace-phi-3-mini")
        assert httpx.get(api + WORKSPACE, timeout=10).status_code == 404
        # The node is the user's: it stays, free for the next Workspace.
        assert httpx.get(f"{api}/api/v1/nodes/{node}", timeout=10).status_code == 200
    finally:
        down_and_check_nothing_left(env, tmp_path, state)
    print(f"sandbox none flow took {time.monotonic() - started:.1f} s")


def test_sandbox_nodeclaim_mode_provisions_nodeclaims(tmp_path, tiny_model_dir):
    """`--provisioner nodeclaim`: the operator creates a NodeClaim, the gpu-provisioner (serving
    NodeClaims) creates its agent pool, the pool's node joins; deleting the Workspace deletes
    the NodeClaim and the pool."""
    env = sandbox_env(tmp_path, tiny_model_dir)
    started = time.monotonic()
    up = kaito(env, "sandbox", "up", "--provisioner", "nodeclaim")
    assert "Node provisioning: nodeclaim (the operator creates a karpenter.sh/v1 NodeClaim" \
        in up.stdout
    state = read_state(tmp_path)
    assert state["provisioner"] == "nodeclaim" and len(state["operators"]) == 2
    api = state["api"]
    try:
        assert "created" in kaito(env, "sandbox", "apply", "-f", QUICK_START).stdout
        wait_for(lambda: ready(api), timeout=120, what="the Workspace ready on a NodeClaim")
        (claim,) = items(api, NODECLAIMS)
        assert claim["metadata"]["labels"]["kaito.sh/workspace"] == "workspace-phi-3-mini"
        assert {c["type"]: c["status"] for c in claim["status"]["conditions"]}["Ready"] == "True"
        assert items(api, MACHINES) == []
        assert conditions(api)["NodeClaimReady"]["status"] == "True"
        assert read_state(tmp_path)["pools"] == 1
        assert kaito(env, "chat", "workspace-phi-3-mini", "What is Kubernetes?").stdout.strip()
        kaito(env, "delete", "workspace", "workspace-phi-3-mini")
        wait_for(lambda: read_state(tmp_path)["pools"] == 0, timeout=60,
                 what="the agent pool deleted with the Workspace")
        assert items(api, NODECLAIMS) == []
    finally:
        down_and_check_nothing_left(env, tmp_path, state)
    print(f"sandbox nodeclaim flow took {time.monotonic() - started:.1f} s")
