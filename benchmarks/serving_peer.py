"""Server processes for the side-by-side benchmark: ours and ``transformers serve``.

Each server runs as a process of its own in a new session on a loopback port. ``ServerProcess``
starts it, waits until it answers (bounded, failing early with its log when it dies), measures the
CPU time and the resident memory of its whole process tree (a sampler thread polls /proc through
psutil every 50 ms and keeps the peak; the kernel's high-water mark of each process is added in as
a floor), and kills the session on ``stop`` (also when the benchmark is interrupted).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

#: Tokens per block of the peer's paged KV cache (ContinuousBatchingConfig.page_size's default).
PEER_BLOCK_TOKENS = 256


def peer_num_blocks(concurrency: int, max_tokens: int, prompt_tokens: int = 64) -> int:
    """A KV-cache bound for the peer: room for every concurrent request, and a few spare.

    Unbounded, it sizes its paged cache from free memory (13.6 GiB resident on a 24 GiB machine),
    and a bigger cache is not free: with the small model at c=1 it made 12-15 tokens/s with 256
    blocks (3.2 GiB) against 40-100 with 32-36 blocks (1 GiB) on the same busy machine.
    """
    per_request = -(-(prompt_tokens + max_tokens) // PEER_BLOCK_TOKENS)
    return concurrency * per_request + 8


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ours_command(model_dir: Path, port: int, dtype: str, max_batch: int,
                 max_tokens: int) -> list[str]:
    return [sys.executable, "-m", "inference_server", "--model-dir", str(model_dir),
            "--served-model-name", model_dir.name, "--dtype", dtype,
            "--host", "127.0.0.1", "--port", str(port), "--max-batch-size", str(max_batch),
            "--queue-size", str(4 * max_batch), "--max-new-tokens-cap", str(max_tokens)]


def peer_command(model_dir: Path, port: int, device: str, dtype: str,
                 num_blocks: int | None) -> list[str]:
    argv = [str(Path(sys.executable).with_name("transformers")), "serve", "--continuous-batching",
            "--host", "127.0.0.1", "--port", str(port), "--device", device, "--dtype", dtype]
    if num_blocks is not None:
        argv += ["--cb-num-blocks", str(num_blocks)]
    return [*argv, str(model_dir)]


def request_body(server: str, model: str, prompt: str, max_tokens: int) -> dict[str, Any]:
    """A streaming, greedy completion of exactly ``max_tokens`` tokens (EOS ignored)."""
    body: dict[str, Any] = {"model": model, "prompt": prompt, "max_tokens": max_tokens,
                            "temperature": 0, "stream": True,
                            "stream_options": {"include_usage": True}}
    if server == "ours":
        body["ignore_eos"] = True
    else:  # transformers serve reads a whole GenerationConfig; eos_token_id -1 disables EOS
        body["generation_config"] = json.dumps(
            {"eos_token_id": -1, "do_sample": False, "max_new_tokens": max_tokens})
    return body


class ServerProcess:
    """One server process tree: start, wait ready, CPU seconds, peak RSS, stop."""

    def __init__(self, name: str, argv: list[str], port: int, model: str, log_path: Path) -> None:
        self.name, self.argv, self.port, self.model = name, argv, port, model
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self.peak_rss = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._stop_sampling = threading.Event()
        self._sampler: threading.Thread | None = None

    def start(self, env: dict[str, str]) -> None:
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                          env=env, start_new_session=True,
                                          preexec_fn=_die_with_parent)
        self._sampler = threading.Thread(target=self._sample, name=f"rss-{self.name}", daemon=True)
        self._sampler.start()

    def wait_ready(self, timeout: float) -> None:
        """Until ``/health`` answers 200; raise with the log's tail if it dies or times out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self._proc.returncode}):\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def _tree(self) -> list[psutil.Process]:
        assert self._proc is not None
        try:
            root = psutil.Process(self._proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu_seconds(self) -> float:
        total = 0.0
        for p in self._tree():
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return total

    def _sample(self) -> None:
        while not self._stop_sampling.wait(0.05):
            rss = hwm = 0
            for p in self._tree():
                try:
                    rss += p.memory_info().rss
                    hwm += _high_water_mark(p.pid)
                except (psutil.NoSuchProcess, OSError):
                    pass
            self.peak_rss = max(self.peak_rss, rss, hwm)

    def stop(self) -> None:
        self._stop_sampling.set()
        if self._proc is None or self._proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 15.0)):
            try:
                os.killpg(self._proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self._proc.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue


def _die_with_parent() -> None:
    """In the child before exec: the kernel kills it if the benchmark dies without cleaning up."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def _high_water_mark(pid: int) -> int:
    """The kernel's peak resident set of one process (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0
