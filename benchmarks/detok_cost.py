"""Cost of incremental detokenization per token, by output length (the tiny model's tokenizer).

    python benchmarks/detok_cost.py [--lengths 64 1024] [--old path/to/old_detok.py]

Streams the same tokens through ``IncrementalText`` (decoding with the tokenizer exactly as the
server does) and prints microseconds of CPU time per token; ``--old`` loads another version of
the module (e.g. ``git show HEAD~1:inference_server/detok.py > /tmp/old.py``) to compare.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TEXT = ("Kubernetes AI Toolchain Operator deploys models on GPU nodes. Héllo wörld, 日本語 😀! "
        "A workspace names a preset and an instance type; the operator does the rest. ")


def per_token_us(cls: Any, decode: Any, ids: list[int], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        inc = cls(decode, ("never-seen-stop",))
        start = time.process_time()
        for token in ids:
            inc.push(token)
        inc.finish()
        best = min(best, time.process_time() - start)
    return best / len(ids) * 1e6


def load_class(path: str) -> Any:
    spec = importlib.util.spec_from_file_location("old_detok", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.IncrementalText


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lengths", type=int, nargs="+", default=[64, 1024])
    p.add_argument("--old", help="another detok.py to compare with")
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args(argv)
    from transformers import AutoTokenizer

    from inference_server.detok import IncrementalText
    from inference_server.tiny_model import create_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        tok = AutoTokenizer.from_pretrained(str(create_tiny_model(Path(tmp) / "tiny", seed=0)))
    ids_all = tok(TEXT * 200, verbose=False).input_ids
    decoders = {  # what engine.decode calls, and the Rust tokenizer under it without the wrapper
        "tokenizer.decode": lambda ids: tok.decode(ids, skip_special_tokens=True),
        "backend decode": lambda ids: tok.backend_tokenizer.decode(ids, skip_special_tokens=True),
    }
    versions = {"new": IncrementalText} | ({"old": load_class(args.old)} if args.old else {})
    print("CPU microseconds per token, best of", args.repeat)
    for label, decode in decoders.items():
        for n in args.lengths:
            ids = ids_all[:n]
            row = "  ".join(f"{name} {per_token_us(cls, decode, ids, args.repeat):7.1f}"
                            for name, cls in versions.items())
            print(f"{label:>17s}, {n:5d} tokens: {row}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
