"""Throughput of our inference server side by side with ``transformers serve --continuous-batching``.

    python benchmarks/inference_throughput.py                        # small model, both servers
    python benchmarks/inference_throughput.py --servers ours --rounds 1 --concurrency 1
    python benchmarks/inference_throughput.py --shape phi3-mini --device cuda   # GPU, bf16
    python benchmarks/inference_throughput.py --in-process           # server vs model.generate

Saves a random model of the chosen shape (the tiny model's tokenizer) to a temporary folder,
starts both servers on it as processes on loopback ports, warms each up, then drives them in
turn (ours, peer, ours, peer ...) for ``--rounds`` rounds at each concurrency: OpenAI
completions, greedy, exactly ``--max-tokens`` tokens each (ours: ``ignore_eos``; the peer: a
generation config with EOS disabled; both counts checked from ``usage``), once not streamed
(the throughput) and once streamed (time to first token, and a streaming client's throughput).
Prints per round and the median: tokens/s of both and their ratio, time to first token
p50/p95, the CPU cores each server used (CPU time of its process tree / wall time) and each
server's peak RSS. The peer's KV cache is bounded (``--peer-num-blocks``) so it does not take
most of the machine's memory; on a GPU the memory-bandwidth bound is printed next to both.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_models import PROMPTS, SHAPES, bandwidth_bound, save_model  # noqa: E402
from http_load import LoadResult, run_load  # noqa: E402
from serving_peer import (  # noqa: E402
    PEER_BLOCK_TOKENS,
    ServerProcess,
    free_port,
    ours_command,
    peer_command,
    peer_num_blocks,
    request_body,
)

NAMES = {"ours": "ours", "peer": "transformers serve"}


def start_servers(args: argparse.Namespace, model_dir: Path, dtype: str,
                  logs: Path) -> list[ServerProcess]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    servers = []
    for name in args.servers:
        port = free_port()
        if name == "ours":
            argv = ours_command(model_dir, port, dtype, max(16, max(args.concurrency)),
                                args.max_tokens)
            model = model_dir.name
        else:
            blocks = None if args.peer_unbounded else (
                args.peer_num_blocks or peer_num_blocks(max(args.concurrency), args.max_tokens))
            argv = peer_command(model_dir, port, args.device, dtype, blocks)
            model = str(model_dir)
            print("peer KV cache: " + ("unbounded (sized from free memory)" if blocks is None else
                  f"--cb-num-blocks {blocks} ({blocks * PEER_BLOCK_TOKENS} tokens)"))
        server = ServerProcess(name, argv, port, model, logs / f"{name}.log")
        server.start(env)
        servers.append(server)
    for server in servers:
        server.wait_ready(args.start_timeout)
    return servers


def measure(server: ServerProcess, others: list[ServerProcess], args: argparse.Namespace,
            concurrency: int, requests: int, max_tokens: int,
            stream: bool = True) -> tuple[LoadResult, float, float]:
    """One load run; returns it, the cores the server used and the most any idle other used."""
    def body(i: int) -> dict[str, Any]:
        sent = request_body(server.name, server.model, PROMPTS[i % len(PROMPTS)], max_tokens)
        if not stream:
            sent["stream"] = False
            sent.pop("stream_options", None)
        return sent

    cpu0, idle0 = server.cpu_seconds(), [o.cpu_seconds() for o in others]
    result = asyncio.run(run_load(server.url, body, requests, concurrency, args.request_timeout))
    cores = (server.cpu_seconds() - cpu0) / result.wall_s
    idle = max([(o.cpu_seconds() - c) / result.wall_s for o, c in zip(others, idle0, strict=True)], default=0.0)
    return result, cores, idle


def report_row(name: str, whole: LoadResult, r: LoadResult, cores: float, idle: float) -> str:
    warn = f" (other server idle used {idle:.2f} cores)" if idle > 0.1 else ""
    shorts = whole.short + r.short
    short = f" SHORT: {len(shorts)} requests got {sorted(set(shorts))} tokens" if shorts else ""
    return (f"{name:>18s}: {whole.tokens_per_s:8.1f} tok/s, streamed {r.tokens_per_s:8.1f} tok/s"
            f"  TTFT p50 {1e3 * r.ttft_quantile(0.5):6.1f} ms  p95 {1e3 * r.ttft_quantile(0.95):6.1f}"
            f" ms  {cores:4.2f} cores{short}{warn}")


def run_side_by_side(args: argparse.Namespace, model_dir: Path, dtype: str) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-logs-") as logs:
        servers = start_servers(args, model_dir, dtype, Path(logs))
        try:
            warm_up(args, servers)
            medians = drive(args, servers)
            print_table(args, servers, medians, model_dir)
        finally:
            for server in servers:
                server.stop()


def warm_up(args: argparse.Namespace, servers: list[ServerProcess]) -> None:
    """Every concurrency once per warm-up round, one full request per client: the peer is slow
    on its first requests and on batch shapes it has not seen yet."""
    for rnd in range(args.warmup_rounds):
        for server in servers:
            done = []
            for c in args.concurrency:
                r, _, _ = measure(server, [], args, c, max(2, c), args.max_tokens)
                done.append(f"c={c}: {r.tokens_per_s:.0f}")
            print(f"warm-up {rnd + 1} {NAMES[server.name]}: tok/s " + ", ".join(done))


Run = tuple[LoadResult, LoadResult, float]
"""One server at one concurrency: the answers not streamed, the streamed ones, cores used."""


def drive(args: argparse.Namespace, servers: list[ServerProcess]) -> dict[tuple[str, int], Any]:
    """Each round, each concurrency, each server in turn: once not streamed (throughput), once
    streamed (time to first token, and the throughput of a streaming client)."""
    runs: dict[tuple[str, int], list[Run]] = {}
    for rnd in range(1, args.rounds + 1):
        for c in args.concurrency:
            requests = max(8, args.requests_per_client * c)
            print(f"round {rnd}, concurrency {c}, {requests} requests x {args.max_tokens} tokens")
            for server in servers:
                others = [s for s in servers if s is not server]
                whole, cores, idle = measure(server, others, args, c, requests, args.max_tokens,
                                             stream=False)
                streamed, _, idle2 = measure(server, others, args, c, requests, args.max_tokens)
                runs.setdefault((server.name, c), []).append((whole, streamed, cores))
                print(report_row(NAMES[server.name], whole, streamed, cores, max(idle, idle2)))
            if len(servers) == 2:
                a, b = (runs[(s.name, c)][-1][0].tokens_per_s for s in servers)
                print(f"{'ours / peer':>18s}: {a / b:8.2f}")
    return {key: median_of(values) for key, values in runs.items()}


def median_of(values: list[Run]) -> dict[str, float]:
    return {"tps": statistics.median(w.tokens_per_s for w, _, _ in values),
            "stps": statistics.median(s.tokens_per_s for _, s, _ in values),
            "p50": statistics.median(s.ttft_quantile(0.5) for _, s, _ in values),
            "p95": statistics.median(s.ttft_quantile(0.95) for _, s, _ in values),
            "cores": statistics.median(c for _, _, c in values)}


def print_table(args: argparse.Namespace, servers: list[ServerProcess],
                medians: dict[tuple[str, int], dict[str, float]], model_dir: Path) -> None:
    names = [s.name for s in servers]
    both = len(names) == 2
    print(f"\nmedian of {args.rounds} rounds")
    print("| | " + " | ".join(NAMES[n] for n in names) + (" | ours / peer |" if both else " |"))
    print("|---" * (len(names) + 1 + both) + "|")

    def row(label: str, key: str, fmt: str, scale: float = 1.0) -> None:
        for c in args.concurrency:
            cells = [medians[(n, c)][key] * scale for n in names]
            extra = f" | {cells[0] / cells[1]:.2f}" if both else ""
            print(f"| {label}, c={c} | " + " | ".join(format(v, fmt) for v in cells) + extra + " |")

    row("tokens/s", "tps", ".1f")
    row("tokens/s streamed", "stps", ".1f")
    row("CPU cores", "cores", ".2f")
    row("TTFT p50 ms", "p50", ".1f", 1e3)
    row("TTFT p95 ms", "p95", ".1f", 1e3)
    rss = [s.peak_rss / 2**20 for s in servers]
    print("| peak RSS MiB | " + " | ".join(f"{v:.0f}" for v in rss)
          + (f" | {rss[0] / rss[1]:.2f} |" if both else " |"))
    bound = bandwidth_bound(model_dir)
    if bound is not None:
        name, per_seq = bound
        print(f"{name}: memory-bandwidth bound {per_seq:.1f} tokens/s per sequence; at c=k at most "
              f"~k x that while the weights dominate the bytes a step reads: "
              + ", ".join(f"c={c}: {per_seq * c:.0f}" for c in args.concurrency))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", choices=sorted(SHAPES), default="small")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--dtype", default=None, help="default: float32 on CPU, bfloat16 on GPU")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 32])
    p.add_argument("--requests-per-client", type=int, default=4,
                   help="requests per concurrent client in a run (at least 8 requests a run)")
    p.add_argument("--servers", nargs="+", choices=["ours", "peer"], default=["ours", "peer"])
    p.add_argument("--peer-num-blocks", type=int, default=None,
                   help="the peer's --cb-num-blocks (blocks of 256 tokens); default: enough for "
                        "the highest concurrency")
    p.add_argument("--peer-unbounded", action="store_true",
                   help="let the peer size its KV cache from free memory (GiBs)")
    p.add_argument("--warmup-rounds", type=int, default=1)
    p.add_argument("--start-timeout", type=float, default=300.0)
    p.add_argument("--request-timeout", type=float, default=600.0)
    p.add_argument("--in-process", action="store_true",
                   help="instead: our app in this process against model.generate")
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)  # `timeout` and kill stop the servers too
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    dtype = args.dtype or ("float32" if args.device == "cpu" else "bfloat16")
    with tempfile.TemporaryDirectory(prefix="bench-model-") as tmp:
        model_dir = save_model(args.shape, dtype, Path(tmp))
        print(f"model: random {args.shape} ({dtype}, {args.device}) in {model_dir}; "
              f"{args.max_tokens} tokens per request, greedy, EOS ignored")
        if args.in_process:
            from inprocess_throughput import run

            run(model_dir, dtype, args.max_tokens, 16, max(args.concurrency), args.rounds)
        else:
            run_side_by_side(args, model_dir, dtype)
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # the servers were stopped on the way out
        print("interrupted; both servers stopped", file=sys.stderr)
        sys.exit(130)
