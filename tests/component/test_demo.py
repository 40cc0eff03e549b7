"""`make demo` runs the product's main flow to the end (as a new user would see it).

CI runs it on the tiny model (KAITO_SANDBOX_MODEL): every step runs for real, the answers are
gibberish and the before/after verdict is not checked; the demo on the packaged Gemma 3 270M
(about 5 minutes on 2 cores) is run by hand, and the realmodel tests prove the learning."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_demo_runs_to_the_end(tiny_model_dir: Path, tmp_path: Path) -> None:
    env = dict(os.environ, KAITO_SANDBOX_MODEL=str(tiny_model_dir), HF_HUB_OFFLINE="1",
               HF_HOME=str(tmp_path / "hf"))
    done = subprocess.run(
        [sys.executable, "-m", "kaito_sandbox.demo"], cwd=ROOT, capture_output=True,
        text=True, timeout=600, env=env,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    out = done.stdout
    assert "SIMULATED cluster and cloud" in out
    assert "WorkspaceReady=True: inference is ready" in out
    assert "nothing it started is running" in out
    assert "The adapter is in the registry as 127.0.0.1:" in out
    assert "training in float32 instead of the configured bfloat16" in out
    assert '"kaito-facts"' in out  # the adapter is active on the serving Workspace
    held_out = json.loads((ROOT / "examples/tuning/kaito-facts/held-out.json").read_text())[0]
    assert f"Question: {held_out['question']}" in out
    base = next(line for line in out.splitlines() if "(workspace-phi-3-mini)" in line)
    tuned = next(line for line in out.splitlines() if "(workspace-kaito-facts)" in line)
    assert base.split(")", 1)[1].strip() and tuned.split(")", 1)[1].strip()  # both answered
    assert "(not checked: the demo's tuning is sized for the packaged Gemma 3 270M" in out
    assert "needs 28 GiB of GPU memory in total" in out
    header = next(line for line in out.splitlines() if line.startswith("NAME  ") and "INSTANCE" in line)
    assert header.split() == ["NAME", "INSTANCE", "RESOURCEREADY", "INFERENCEREADY",
                              "WORKSPACEREADY", "AGE"]
