"""Fixtures for the tuning job: a tiny generated model, small datasets, a real OCI registry.

Everything runs offline (`HF_HUB_OFFLINE=1`, a temporary `HF_HOME`); the trainer runs
in-process through its command-line `main` (torch loads once per session), plus one fresh
interpreter for the module entry point.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kaito_sandbox.sim.registry import LocalRegistry, RegistryUnavailable

PUSH_USER, PUSH_PASSWORD = "tuner", "s3cret-push"


@pytest.fixture(autouse=True)
def loopback_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The registry and HTTP servers here listen on 127.0.0.1, which the egress guard refuses
    by default."""
    monkeypatch.setenv("KAITO_EGRESS_ALLOW_LOOPBACK", "1")


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir: Path) -> Path:
    return tiny_model_dir


def chat_rows(n: int) -> list[dict[str, Any]]:
    return [{"messages": [
        {"role": "system", "content": "You answer about Kubernetes."},
        {"role": "user", "content": f"What does workspace {i} do?"},
        {"role": "assistant", "content": "The operator deploys models on GPU nodes."},
    ]} for i in range(n)]


def pair_rows(n: int) -> list[dict[str, Any]]:
    return [{"prompt": f"Question {i}: who jumps?", "completion": " the quick brown fox"}
            for i in range(n)]


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(rows) if rows else pa.table({"messages": pa.array([], pa.string())})
    pq.write_table(table, path)
    return path


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_config(path: Path, model: Path, training: dict[str, Any] | None = None,
                 **sections: dict[str, Any]) -> Path:
    """A user ConfigMap's `training_config.yaml`: only what differs from the defaults."""
    doc: dict[str, Any] = {"training_config": {
        "ModelConfig": {"pretrained_model_name_or_path": str(model)},
        "TrainingArguments": {"max_steps": 4, "logging_steps": 2, "save_strategy": "no",
                              "per_device_train_batch_size": 4,
                              "gradient_accumulation_steps": 1, **(training or {})},
        **sections,
    }}
    path.write_text(yaml.safe_dump(doc))
    return path


def start_registry(**kwargs: str) -> LocalRegistry:
    try:
        return LocalRegistry(**kwargs).start()
    except RegistryUnavailable as err:  # a missing binary must fail CI loudly, not skip
        pytest.fail(f"{err} (the Makefile's setup installs it: apt-get install docker-registry)")


@pytest.fixture(scope="session")
def registry() -> Iterator[LocalRegistry]:
    reg = start_registry(user=PUSH_USER, password=PUSH_PASSWORD)
    yield reg
    reg.stop()


