"""`make demo` runs the product's main flow to the end (as a new user would see it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_demo_runs_to_the_end():
    done = subprocess.run(
        [sys.executable, "-m", "kaito_sandbox.demo"], cwd=ROOT, capture_output=True,
        text=True, timeout=480,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    out = done.stdout
    assert "SIMULATED cluster and cloud" in out
    assert "WorkspaceReady=True: inference is ready" in out
    assert "nothing it started is running" in out
    assert "The adapter is in the registry as 127.0.0.1:" in out
    assert "What is 7 plus 7?" in out and '"phi-3-sums"' in out
    assert "needs 28 GiB of GPU memory in total" in out
    header = next(line for line in out.splitlines() if line.startswith("NAME  ") and "INSTANCE" in line)
    assert header.split() == ["NAME", "INSTANCE", "RESOURCEREADY", "INFERENCEREADY",
                              "WORKSPACEREADY", "AGE"]
