"""Without CUDA the tuning job trains in float32 when the config asks for half precision
(bfloat16 LoRA steps on a CPU are ~50x slower than float32 ones), and says so in its log."""

from __future__ import annotations

import logging

import pytest
import torch

from tuning_job.config import TuningConfig
from tuning_job.errors import ConfigError
from tuning_job.train import model_kwargs


def _config(**model: object) -> TuningConfig:
    return TuningConfig(method="lora", model_path="/nowhere", model=dict(model))


@pytest.mark.parametrize("asked", ["bfloat16", "float16", "torch.bfloat16"])
def test_half_precision_becomes_float32_without_cuda(
        asked: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level(logging.INFO, logger="tuning_job"):
        kwargs = model_kwargs(_config(torch_dtype=asked))
    assert kwargs["dtype"] is torch.float32
    assert "torch_dtype" not in kwargs
    lines = [r.getMessage() for r in caplog.records if "float32" in r.getMessage()]
    assert len(lines) == 1
    assert "no CUDA device" in lines[0] and asked.removeprefix("torch.") in lines[0]


def test_half_precision_is_kept_with_cuda(monkeypatch: pytest.MonkeyPatch,
                                          caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with caplog.at_level(logging.INFO, logger="tuning_job"):
        assert model_kwargs(_config(dtype="bfloat16"))["dtype"] is torch.bfloat16
    assert not [r for r in caplog.records if "float32" in r.getMessage()]


@pytest.mark.parametrize(("asked", "expected"), [("float32", torch.float32), ("auto", "auto"),
                                                 (None, None)])
def test_other_dtypes_are_left_alone_without_cuda(
        asked: str | None, expected: object, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level(logging.INFO, logger="tuning_job"):
        assert model_kwargs(_config(dtype=asked))["dtype"] == expected
    assert not caplog.records


def test_an_unknown_dtype_is_still_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="unknown dtype 'bfloat17'"):
        model_kwargs(_config(dtype="bfloat17"))
