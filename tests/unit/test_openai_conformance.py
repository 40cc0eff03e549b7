"""benchmarks/openai_conformance.py grades answers as documented (no server: fake checks)."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from openai_checks import CHECKS, Check  # noqa: E402
from openai_conformance import grade  # noqa: E402


def _refusal(status: int, message: str) -> openai.APIStatusError:
    response = httpx.Response(status, request=httpx.Request("POST", "http://127.0.0.1/v1/x"))
    return openai.APIStatusError(message, response=response, body={"message": message})


def _raises(exc: BaseException) -> Any:
    def run(ctx: Any) -> None:
        raise exc
    return run


def _warns(ctx: Any) -> None:
    warnings.warn("Pydantic serializer warnings: expected str", UserWarning, stacklevel=1)


@pytest.mark.parametrize(("check", "verdict"), [
    (Check("ok", lambda ctx: None), "works"),
    (Check("refused as expected", _raises(_refusal(400, "min_p is not supported")), ("min_p",)),
     "clear 4xx"),
    (Check("refused, vaguely", _raises(_refusal(400, "Invalid request")), ("min_p",)),
     "vague 4xx"),
    (Check("should work, refused", _raises(_refusal(400, "nope"))), "wrong"),
    (Check("5xx", _raises(_refusal(500, "Internal error")), ("x",)), "wrong"),
    (Check("accepted, cannot be honoured", lambda ctx: None, ("min_p",)), "wrong"),
    (Check("effect missing", _raises(AssertionError("same text"))), "wrong"),
    (Check("client cannot read it", _raises(KeyError("choices"))), "wrong"),
    (Check("serializer warning", _warns), "wrong"),
])
def test_grades(check, verdict):
    assert grade(check, None)[0] == verdict  # type: ignore[arg-type]


def test_the_sweep_has_its_checks():
    import openai_checks_http  # noqa: F401
    import openai_checks_structured  # noqa: F401

    names = [c.name for c in CHECKS]
    assert len(names) >= 100 and len(set(names)) == len(names)
