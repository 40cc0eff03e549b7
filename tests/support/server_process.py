"""`python -m inference_server` as a process for the tests: a free loopback port, start, wait
until healthy, stop. One copy for tests/inference and tests/realmodel."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    """The server with `args`, offline, its output in `log`."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "inference_server", *args], cwd=ROOT,
                                env=env, stdout=out, stderr=subprocess.STDOUT)


def wait_healthy(proc: subprocess.Popen[bytes], base_url: str, log: Path, timeout: float,
                 path: str = "/health") -> None:
    """Until `path` answers 200; AssertionError with the server's output if the process exits
    or the deadline passes first."""
    deadline = time.monotonic() + timeout
    last: object = None
    with httpx.Client(base_url=base_url, timeout=10) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"the server exited with {proc.returncode}:\n"
                                     f"{log.read_text(errors='replace')}")
            try:
                last = client.get(path).status_code
            except httpx.TransportError as err:
                last = err
            if last == 200:
                return
            time.sleep(0.1)
    raise AssertionError(f"the server did not answer {path} with 200 in {timeout:.0f} s "
                         f"(last: {last!r}):\n{log.read_text(errors='replace')[-4000:]}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
