"""Fixtures shared by every test tier: nothing reaches the Hugging Face hub, one tiny model
per session, and termination messages written where a test can read them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def offline_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """`HF_HUB_OFFLINE=1` and a temporary `HF_HOME` for the whole session (and the processes
    tests start): no test may download weights."""
    keys = ("HF_HUB_OFFLINE", "HF_HOME", "TRANSFORMERS_VERBOSITY", "TOKENIZERS_PARALLELISM")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path_factory.mktemp("hf_home")),
                      TRANSFORMERS_VERBOSITY="error", TOKENIZERS_PARALLELISM="false")
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, offline_hub: None) -> Path:
    """A tiny random Phi-3 style model with a real tokenizer and chat template."""
    from inference_server.tiny_model import create_tiny_model

    return create_tiny_model(tmp_path_factory.mktemp("models") / "tiny-phi3", seed=0)


@pytest.fixture
def tlog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Termination messages go here instead of /dev/termination-log."""
    path = tmp_path / "termination-log"
    monkeypatch.setenv("KAITO_TERMINATION_LOG", str(path))
    return path
