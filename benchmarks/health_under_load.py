"""``/health`` latency while concurrent clients send huge prompts to a real inference server.

    python benchmarks/health_under_load.py                      # 3 rounds, 10 clients, CPU
    python benchmarks/health_under_load.py --rounds 1 --clients 4 --phases tokenize

Starts ``python -m inference_server`` (uvicorn) on 127.0.0.1 with the tiny random model, waits
until ``/health`` answers 200, then runs ``--rounds`` rounds of each phase:

* ``413``: every client POSTs a ``--big-bytes`` (10 MiB) prompt; the body limit answers 413
  from the declared length, before the body is read;
* ``tokenize``: every client POSTs a prompt just under ``--max-body-bytes``, which is parsed and
  tokenized (off the event loop) and then refused with 400, as it exceeds the context window.

During each round a separate thread polls ``/health`` every ``--poll-interval`` seconds. Prints
p50/p95/max ``/health`` latency per round and overall, the statuses the clients got (the 413
count among them) and any ``/health`` answer that was not 200. Everything binds loopback; every
loop is bounded by a count or a deadline.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MIB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(workdir: Path, max_body: int, threads: int) -> tuple[subprocess.Popen, str]:
    from inference_server.tiny_model import create_tiny_model

    model = create_tiny_model(workdir / "tiny", seed=0)
    adapters = workdir / "no-adapters"
    adapters.mkdir()
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "TRANSFORMERS_VERBOSITY": "error"}
    log = (workdir / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "inference_server", "--model-dir", str(model), "--adapters-dir",
         str(adapters), "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
         "--max-body-bytes", str(max_body), "--tokenizer-threads", str(threads)],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    with httpx.Client(base_url=base, timeout=5) as c:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"server exited: {(workdir / 'server.log').read_text()}")
            try:
                if c.get("/health").status_code == 200:
                    return proc, base
            except httpx.TransportError:
                pass
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not become ready within 120 s")


def prompt_body(size: int) -> bytes:
    """A JSON completion request of about ``size`` bytes (English-like text, so it tokenizes)."""
    text = "The quick brown fox jumps over the lazy dog. " * (size // 45 + 1)
    body = json.dumps({"prompt": text, "max_tokens": 8}).encode()
    if len(body) <= size:
        return body
    head = body[: size - 20]
    return head[: head.rfind(b" ")] + b'", "max_tokens": 8}'


def poll_health(base: str, interval: float, stop: threading.Event,
                latencies: list[float], bad: list[str]) -> None:
    with httpx.Client(base_url=base, timeout=30) as c:
        for _ in range(100_000):  # bounded; ``stop`` ends it long before
            if stop.is_set():
                return
            started = time.perf_counter()
            try:
                r = c.get("/health")
                if r.status_code != 200:
                    bad.append(str(r.status_code))
            except httpx.HTTPError as exc:
                bad.append(type(exc).__name__)
            latencies.append(time.perf_counter() - started)
            stop.wait(interval)


def run_round(base: str, body: bytes, clients: int, interval: float) -> dict[str, object]:
    stop = threading.Event()
    latencies: list[float] = []
    bad: list[str] = []
    poller = threading.Thread(target=poll_health, args=(base, interval, stop, latencies, bad))
    poller.start()
    statuses: list[str] = []
    lock = threading.Lock()

    def send() -> None:
        with httpx.Client(base_url=base, timeout=300) as c:
            try:
                status = str(c.post("/v1/completions", content=body,
                                    headers={"content-type": "application/json"}).status_code)
            except httpx.HTTPError as exc:
                status = type(exc).__name__
        with lock:
            statuses.append(status)

    stop.wait(3 * interval)  # some polls before the load starts
    started = time.perf_counter()
    senders = [threading.Thread(target=send) for _ in range(clients)]
    for t in senders:
        t.start()
    for t in senders:
        t.join(timeout=600)
    elapsed = time.perf_counter() - started
    stop.wait(2 * interval)
    stop.set()
    poller.join(timeout=60)
    return {"latencies": latencies, "bad": bad, "statuses": Counter(statuses),
            "elapsed": elapsed}


def fmt(latencies: list[float]) -> str:
    if not latencies:
        return "no samples"
    ms = sorted(x * 1000 for x in latencies)
    p95 = ms[min(len(ms) - 1, int(round(0.95 * (len(ms) - 1))))]
    return (f"n={len(ms):4d}  p50={statistics.median(ms):7.1f} ms  p95={p95:7.1f} ms  "
            f"max={ms[-1]:7.1f} ms")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--big-bytes", type=int, default=10 * MIB)
    ap.add_argument("--max-body-bytes", type=int, default=MIB)
    ap.add_argument("--tokenizer-threads", type=int, default=2)
    ap.add_argument("--poll-interval", type=float, default=0.1)
    ap.add_argument("--phases", default="413,tokenize", help="comma list of: 413, tokenize")
    args = ap.parse_args()
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    bodies = {"413": prompt_body(args.big_bytes),
              "tokenize": prompt_body(args.max_body_bytes - 1024)}
    with tempfile.TemporaryDirectory() as tmp:
        proc, base = start_server(Path(tmp), args.max_body_bytes, args.tokenizer_threads)
        try:
            overall: dict[str, list[float]] = {p: [] for p in phases}
            for phase in phases:
                body = bodies[phase]
                print(f"phase {phase}: {args.clients} clients x {len(body) / MIB:.2f} MiB "
                      f"bodies, limit {args.max_body_bytes / MIB:.2f} MiB")
                for i in range(args.rounds):
                    res = run_round(base, body, args.clients, args.poll_interval)
                    overall[phase] += res["latencies"]  # type: ignore[arg-type]
                    statuses = dict(sorted(res["statuses"].items()))  # type: ignore[union-attr]
                    print(f"  round {i + 1}: /health {fmt(res['latencies'])}  "  # type: ignore
                          f"clients {statuses} in {res['elapsed']:.1f} s  "
                          f"413s={statuses.get('413', 0)}  bad /health={res['bad'] or 'none'}")
                print(f"  overall {phase}: /health {fmt(overall[phase])}")
            print(f"overall: /health {fmt([x for v in overall.values() for x in v])}")
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
