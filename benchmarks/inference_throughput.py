"""Throughput of the inference server against plain ``model.generate``, in one process.

    python benchmarks/inference_throughput.py                       # tiny model, CPU
    python benchmarks/inference_throughput.py --shape small         # a somewhat bigger random model
    python benchmarks/inference_throughput.py --shape phi3-mini --device cuda   # GPU, bf16

Measures (a) ``model.generate`` one request at a time, (b) the server (the real FastAPI app,
scheduler and routers, driven in-process through httpx's ASGI transport, no sockets) at
concurrency 1 and (c) at concurrency 16. Every request generates exactly ``--max-tokens`` tokens
(greedy, EOS ignored) so the three numbers count the same work. Prints tokens/s and the ratios
b/a (server overhead; goal >= 0.9) and c/b (batching gain; goal >= 4 on CPU). On a GPU it also
prints the memory-bandwidth bound: every decode step must read all weights once, so one sequence
cannot exceed ``bandwidth / weight bytes`` tokens/s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHAPES: dict[str, dict[str, Any]] = {
    "tiny": {},
    "small": {"hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 4,
              "num_attention_heads": 8, "num_key_value_heads": 8},
    "phi3-mini": {"hidden_size": 3072, "intermediate_size": 8192, "num_hidden_layers": 32,
                  "num_attention_heads": 32, "num_key_value_heads": 32,
                  "max_position_embeddings": 4096, "vocab_size": 32064},
}
#: Peak HBM bandwidth in bytes/s, by a substring of ``torch.cuda.get_device_name()``.
GPU_BANDWIDTH = {"H200": 4.8e12, "H100 PCIe": 2.0e12, "H100": 3.35e12, "A100-SXM4-80GB": 2.04e12,
                 "A100": 1.56e12, "L40S": 0.864e12, "A10": 0.6e12, "T4": 0.32e12}
PROMPTS = ["Hello there", "The quick brown fox", "Kubernetes deploys", "def main():",
           "LoRA adapters change", "Once upon a time", "0123456789", "A workspace names"]


def build_engine(shape: str, device: str, dtype: str, workdir: Path) -> Any:
    """The tiny tokenizer plus a random model of the requested shape, as a server engine."""
    import torch
    from transformers import AutoTokenizer, Phi3Config, Phi3ForCausalLM

    from inference_server.engine import EngineInfo, TransformersEngine
    from inference_server.tiny_model import create_tiny_model

    model_dir = create_tiny_model(workdir / "tiny", seed=0)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    overrides = dict(SHAPES[shape])
    if overrides:
        config = Phi3Config.from_pretrained(str(model_dir))
        for key, value in overrides.items():
            setattr(config, key, value)
        torch.manual_seed(0)
        torch.set_default_dtype(getattr(torch, dtype))
        with torch.device(device):
            model = Phi3ForCausalLM(config)
        torch.set_default_dtype(torch.float32)
    else:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=getattr(torch, dtype))
        model = model.to(device)
    model.eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    info = EngineInfo(model_name=f"random-{shape}", model_path=str(model_dir),
                      context_length=int(model.config.max_position_embeddings))
    return TransformersEngine(model, tokenizer, info)


def bench_generate(engine: Any, n: int, max_tokens: int) -> float:
    import torch

    tok, model = engine.tokenizer, engine.model
    total, start = 0, time.perf_counter()
    for i in range(n):
        ids = tok(PROMPTS[i % len(PROMPTS)], return_tensors="pt").input_ids.to(model.device)
        with torch.inference_mode():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                 max_new_tokens=max_tokens, min_new_tokens=max_tokens,
                                 pad_token_id=tok.pad_token_id)
        total += out.shape[1] - ids.shape[1]
    _sync()
    return total / (time.perf_counter() - start)


async def bench_server(engine: Any, n: int, max_tokens: int, concurrency: int) -> float:
    import httpx

    from inference_server.app import create_app
    from inference_server.settings import ServerSettings

    settings = ServerSettings(model_dir=Path(engine.info.model_path), adapters_dir=Path("/none"),
                              max_batch_size=max(16, concurrency), queue_size=4 * n,
                              max_new_tokens_cap=max_tokens)
    app = create_app(settings, engine)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://b", timeout=600) as c:
            queue: asyncio.Queue[int] = asyncio.Queue()
            for i in range(n):
                queue.put_nowait(i)
            counted = 0

            async def worker() -> None:
                nonlocal counted
                while not queue.empty():
                    i = queue.get_nowait()
                    r = await c.post("/v1/completions", json={
                        "prompt": PROMPTS[i % len(PROMPTS)], "max_tokens": max_tokens,
                        "temperature": 0, "ignore_eos": True})
                    r.raise_for_status()
                    counted += r.json()["usage"]["completion_tokens"]

            start = time.perf_counter()
            await asyncio.gather(*[worker() for _ in range(concurrency)])
            _sync()
            return counted / (time.perf_counter() - start)


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def bandwidth_bound(engine: Any) -> tuple[str, float] | None:
    import torch

    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    bw = next((v for k, v in GPU_BANDWIDTH.items() if k in name), None)
    if bw is None:
        return None
    weight_bytes = sum(p.numel() * p.element_size() for p in engine.model.parameters())
    return name, bw / weight_bytes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--dtype", default=None, help="default: float32 on CPU, bfloat16 on GPU")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--requests", type=int, default=16, help="requests for (a) and (b)")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--repeat", type=int, default=3, help="best of N runs (shared CPUs are noisy)")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    dtype = args.dtype or ("float32" if args.device == "cpu" else "bfloat16")
    with tempfile.TemporaryDirectory() as tmp:
        engine = build_engine(args.shape, args.device, dtype, Path(tmp))
        params = sum(p.numel() for p in engine.model.parameters())
        print(f"best of {args.repeat}; model: random {args.shape} ({params / 1e6:.1f}M params, {dtype}, {args.device}); "
              f"{args.max_tokens} tokens per request, greedy, EOS ignored")
        bench_generate(engine, 2, 8)  # warm-up
        asyncio.run(bench_server(engine, 2, 8, 2))
        n_c = max(args.requests, 2 * args.concurrency)
        a = b = c = 0.0
        for _ in range(args.repeat):  # interleaved, so a load spike hurts all three alike
            a = max(a, bench_generate(engine, args.requests, args.max_tokens))
            b = max(b, asyncio.run(bench_server(engine, args.requests, args.max_tokens, 1)))
            c = max(c, asyncio.run(bench_server(engine, n_c, args.max_tokens, args.concurrency)))
        print(f"(a) model.generate, one at a time : {a:10.1f} tokens/s")
        print(f"(b) server, concurrency 1         : {b:10.1f} tokens/s")
        print(f"(c) server, concurrency {args.concurrency:<10d}: {c:10.1f} tokens/s")
        print(f"b/a = {b / a:.2f} (goal >= 0.9)   c/b = {c / b:.2f} (goal >= 4)")
        bound = bandwidth_bound(engine)
        if bound is not None:
            name, per_seq = bound
            print(f"{name}: memory-bandwidth bound {per_seq:.1f} tokens/s per sequence "
                  f"(concurrency 1: b = {100 * b / per_seq:.0f}% of it; "
                  f"concurrency {args.concurrency} bound ~{per_seq * args.concurrency:.0f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
