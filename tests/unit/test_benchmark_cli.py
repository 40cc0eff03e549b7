"""benchmarks/inference_throughput.py keeps working: its CLI, run for our server only, 1 round,
concurrency 1, a few tokens on the tiny shape (the peer, ``transformers serve``, is left out: it
needs the ``bench`` extra and a minute to warm up)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_side_by_side_benchmark_runs_for_our_server(tmp_path: Path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "TMPDIR": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "benchmarks/inference_throughput.py", "--shape", "tiny", "--servers",
         "ours", "--rounds", "1", "--concurrency", "1", "--max-tokens", "4",
         "--start-timeout", "240", "--request-timeout", "240"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SHORT" not in out.stdout  # every request generated exactly 4 tokens
    tps = re.search(r"^\| tokens/s, c=1 \| ([0-9.]+) \|$", out.stdout, re.M)
    assert tps and float(tps.group(1)) > 0, out.stdout
    rss = re.search(r"^\| peak RSS MiB \| ([0-9]+) \|$", out.stdout, re.M)
    assert rss and 50 < int(rss.group(1)) < 4096, out.stdout
    assert not list(tmp_path.glob("bench-*")), "the model and log folders are removed"
