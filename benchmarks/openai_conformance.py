"""Conformance sweep: the official ``openai`` client against this server, one check per feature.

    python benchmarks/openai_conformance.py                 # starts its own server (tiny model)
    python benchmarks/openai_conformance.py --base-url URL  # a server already running

Without ``--base-url`` it builds the tiny random model in a temporary folder and starts
``python -m inference_server`` on a loopback port with the Hermes-style tools template of the
tests (``tests/inference/data/hermes_tools.jinja``), served as ``org/tiny`` with ``--max-n 4``.

Every check (``openai_checks.py``, ``openai_checks_structured.py``, ``openai_checks_http.py``)
is graded as a client author
would: **works** (the call succeeds and its effect is there), **clear 4xx** (refused with a 4xx
whose message names the field), **vague 4xx** (refused, but the message does not say what is
wrong), **wrong** (200 with the field ignored or the wrong shape, an unexpected refusal, a 5xx,
or a pydantic warning while the client parses the answer). Prints a table and the totals; exits
1 when any check is vague or wrong.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai

sys.path.insert(0, str(Path(__file__).resolve().parent))

import openai_checks_http  # noqa: E402,F401  (these two register their checks)
import openai_checks_structured  # noqa: E402,F401
from openai_checks import CHECKS, MODEL, Check, Ctx  # noqa: E402
from serving_peer import ServerProcess, free_port  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "tests" / "inference" / "data" / "hermes_tools.jinja"
GRADES = ("works", "clear 4xx", "vague 4xx", "wrong")
#: The table's order: basic chat, structured chat, then the rest.
MODULES = ("openai_checks", "openai_checks_structured", "openai_checks_http")


def grade(check: Check, ctx: Ctx) -> tuple[str, str]:
    """(grade, what was seen) for one check."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            check.run(ctx)
        except openai.APIStatusError as exc:
            body = exc.body if isinstance(exc.body, dict) else {}
            message = " ".join(str(body.get("message", exc.message)).split())
            if exc.status_code >= 500:
                return "wrong", f"{exc.status_code}: {message}"
            named = check.refusal and all(w.lower() in message.lower() for w in check.refusal)
            seen = f"{exc.status_code}: {message}"
            if not check.refusal:
                return "wrong", f"refused: {seen}"
            return ("clear 4xx" if named else "vague 4xx"), seen
        except AssertionError as exc:
            return "wrong", f"assertion: {str(exc)[:150] or 'failed'}"
        except Exception as exc:  # the client could not read the answer
            return "wrong", f"{type(exc).__name__}: {str(exc)[:150]}"
    pydantic = [w for w in caught if "pydantic" in str(w.message).lower()
                or "serializ" in str(w.message).lower()]
    if pydantic:
        return "wrong", f"warning: {str(pydantic[0].message)[:150]}"
    if check.refusal:
        return "wrong", "200: accepted, but this field cannot be honoured"
    return "works", ""


def run_all(base_url: str) -> list[tuple[Check, str, str]]:
    rows = []
    with openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0,
                       timeout=300) as client, httpx.Client(base_url=base_url,
                                                            timeout=300) as http:
        ctx = Ctx(client, http)
        for check in sorted(CHECKS, key=lambda c: MODULES.index(c.run.__module__)):
            verdict, seen = grade(check, ctx)
            rows.append((check, verdict, seen))
    return rows


def print_table(rows: list[tuple[Check, str, str]]) -> None:
    print("| check | result | seen |")
    print("| --- | --- | --- |")
    for check, verdict, seen in rows:
        print(f"| {check.name} | {verdict} | {seen.replace('|', '/')[:160]} |")
    totals = {g: sum(1 for _, v, _ in rows if v == g) for g in GRADES}
    print(f"\n{len(rows)} checks: " + ", ".join(f"{n} {g}" for g, n in totals.items()))


@contextlib.contextmanager
def local_server() -> Iterator[str]:
    """The tiny model under ``python -m inference_server`` on loopback; yields its URL."""
    from inference_server.tiny_model import create_tiny_model

    with tempfile.TemporaryDirectory(prefix="conformance-") as tmp:
        model = create_tiny_model(Path(tmp) / "tiny", seed=0)
        port = free_port()
        env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
        argv = [sys.executable, "-m", "inference_server", "--model-dir", str(model),
                "--adapters-dir", str(Path(tmp) / "none"), "--served-model-name", MODEL,
                "--chat-template", str(TEMPLATE), "--host", "127.0.0.1", "--port", str(port),
                "--max-n", "4"]
        server = ServerProcess("ours", argv, port, MODEL, Path(tmp) / "server.log")
        server.start(env)
        try:
            server.wait_ready(180)
            yield server.url
        finally:
            server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base-url", help="a running server (else one is started)")
    args = parser.parse_args(argv)
    if args.base_url:
        rows = run_all(args.base_url.rstrip("/"))
    else:
        with local_server() as url:
            rows = run_all(url)
    print_table(rows)
    return 0 if all(v in GRADES[:2] for _, v, _ in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
