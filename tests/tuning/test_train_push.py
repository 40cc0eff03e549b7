"""End to end on CPU: train the tiny model (LoRA and QLoRA), push to a real registry, pull the
adapter back with the inference pods' fetcher, load it in the inference server's adapter code."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from inference_server import fetch_adapter
from kaito_sandbox.sim.registry import LocalRegistry, docker_config_json
from kaito_workload.oci import load_auths
from tests.tuning.conftest import (
    PUSH_PASSWORD,
    PUSH_USER,
    chat_rows,
    pair_rows,
    write_config,
    write_jsonl,
    write_parquet,
)
from tuning_job import download
from tuning_job.cli import main

ROOT = Path(__file__).resolve().parents[2]
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def secret(tmp_path: Path, host: str, password: str = PUSH_PASSWORD) -> Path:
    """The push secret as the Job mounts it: a `.dockerconfigjson` file."""
    path = tmp_path / "push-secret" / ".dockerconfigjson"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(docker_config_json(host, PUSH_USER, password))
    return path


def failure(capsys: pytest.CaptureFixture[str], tlog: Path) -> str:
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert tlog.read_text().strip() == err
    return err


def greedy(model, tokenizer) -> list[int]:
    import torch

    ids = tokenizer.apply_chat_template([{"role": "user", "content": "What does workspace 3 do?"}],
                                        add_generation_prompt=True, return_tensors="pt")
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=12, do_sample=False)
    return out[0, ids.shape[1]:].tolist()


def test_lora_on_chat_parquet_pushes_an_adapter_the_server_loads(
        tiny_model: Path, registry: LocalRegistry, tmp_path: Path, tlog: Path,
        capsys: pytest.CaptureFixture[str]):
    data = write_parquet(tmp_path / "data" / "train.parquet", chat_rows(24))
    config = write_config(tmp_path / "training_config.yaml", tiny_model,
                          {"max_steps": 12, "learning_rate": 0.02, "warmup_ratio": 0.0},
                          ModelConfig={"pretrained_model_name_or_path": str(tiny_model),
                                       "torch_dtype": "float32"},
                          DatasetConfig={"train_test_split": 0.75})
    ref = f"{registry.host}/adapters/phi-chat:0.1"
    out = tmp_path / "results"
    rc = main(["--config", str(config), "--data-dir", str(data.parent), "--output-dir", str(out),
               "--push", ref, "--docker-config", str(secret(tmp_path, registry.host))])
    stdout = capsys.readouterr().out
    assert rc == 0, stdout
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["pushed"] == ref and summary["digest"].startswith("sha256:")
    assert not tlog.exists()

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["state"] == "succeeded" and metrics["step"] == 12 and metrics["max_steps"] == 12
    assert metrics["tokens_per_second"] > 0 and "eval_loss" in metrics
    assert [h["step"] for h in metrics["history"] if "loss" in h] == [2, 4, 6, 8, 10, 12]

    pulled = tmp_path / "mnt" / "adapter" / "phi-chat"
    auths = load_auths(tmp_path / "push-secret")
    fetch_adapter.fetch(ref, pulled, auths, retries=0)
    assert sorted(p.name for p in pulled.iterdir()) == sorted(ADAPTER_FILES)
    for name in ADAPTER_FILES:
        assert (pulled / name).read_bytes() == (out / name).read_bytes(), name

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from inference_server.adapters import apply_adapters

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    base = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    before = greedy(base, tokenizer)
    tuned, active = apply_adapters(AutoModelForCausalLM.from_pretrained(tiny_model),
                                   pulled.parent, {}, "linear")
    assert [a.name for a in active] == ["phi-chat"]
    assert greedy(tuned.eval(), tokenizer) != before


def test_qlora_on_prompt_completion_jsonl(tiny_model: Path, tmp_path: Path, tlog: Path,
                                          capsys: pytest.CaptureFixture[str]):
    """QLoRA with the qlora template's defaults (4-bit NF4, double quantization, paged 8-bit
    AdamW, gradient checkpointing); bitsandbytes runs these on CPU as a smoke test."""
    pytest.importorskip("bitsandbytes")
    data = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(8))
    config = write_config(tmp_path / "c.yaml", tiny_model, {"max_steps": 2})
    out = tmp_path / "results"
    rc = main(["--config", str(config), "--method", "qlora", "--data-dir", str(data),
               "--output-dir", str(out)])
    assert rc == 0, capsys.readouterr().err
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["peft_type"] == "LORA" and adapter["r"] == 8
    assert (out / "adapter_model.safetensors").stat().st_size > 0
    assert json.loads((out / "metrics.json").read_text())["method"] == "qlora"


def test_wrong_registry_credentials(tiny_model: Path, registry: LocalRegistry, tmp_path: Path,
                                    tlog: Path, capsys: pytest.CaptureFixture[str]):
    data = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(4))
    config = write_config(tmp_path / "c.yaml", tiny_model, {"max_steps": 1})
    rc = main(["--config", str(config), "--data-dir", str(data), "--output-dir",
               str(tmp_path / "out"), "--push", f"{registry.host}/adapters/denied:1",
               "--docker-config", str(secret(tmp_path, registry.host, "wrong"))])
    assert rc == 1
    err = failure(capsys, tlog)
    assert err == (f"tuning failed: registry {registry.host} rejected the push secret's "
                   f"credentials (user '{PUSH_USER}'): HTTP 401")
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["state"] == "failed" and metrics["error"] == err


@pytest.mark.parametrize("make, message", [
    (lambda d: write_parquet(d / "empty.parquet", []), "tuning failed: dataset is empty: empty.parquet hold no rows"),
    (lambda d: write_jsonl(d / "x.jsonl", [{"text": "hi"}]), "tuning failed: missing columns: need 'messages'"),
    (lambda d: (d / "broken.parquet").write_bytes(b"PAR1\x00\x01garbage"), "tuning failed: broken.parquet: cannot read as parquet"),
])
def test_bad_data_fails_with_the_reason(tiny_model: Path, tmp_path: Path, tlog: Path,
                                        capsys: pytest.CaptureFixture[str], make, message):
    (tmp_path / "data").mkdir()
    make(tmp_path / "data")
    config = write_config(tmp_path / "c.yaml", tiny_model)
    rc = main(["--config", str(config), "--data-dir", str(tmp_path / "data"),
               "--output-dir", str(tmp_path / "out")])
    assert rc == 1
    assert failure(capsys, tlog).startswith(message)


def test_module_entry_point_refuses_unknown_section(tiny_model: Path, tmp_path: Path):
    """The Job's exact command in a fresh interpreter: fails fast, before torch loads."""
    config = write_config(tmp_path / "c.yaml", tiny_model, Trainer={"epochs": 1})
    log = tmp_path / "termination-log"
    env = {**os.environ, "KAITO_TERMINATION_LOG": str(log)}
    done = subprocess.run([sys.executable, "-m", "tuning_job", "--config", str(config)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    expected = (f"tuning failed: config {config}: unknown section(s) Trainer in training_config; "
                "known sections: ModelConfig, QuantizationConfig, LoraConfig, TrainingArguments, "
                "DatasetConfig, DataCollator")
    assert done.stderr.strip() == expected
    assert log.read_text().strip() == expected


def test_unreachable_input_url(tmp_path: Path, tlog: Path, capsys: pytest.CaptureFixture[str]):
    with socket.socket() as sock:  # a loopback port with nothing listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/datasets/train.parquet"
    rc = download.main([url, f"--output={tmp_path / 'data'}", "--retries=1", "--backoff=0"])
    assert rc == 1
    err = failure(capsys, tlog)
    assert err.startswith(f"download {url}: cannot fetch from 127.0.0.1:{port} after 2 attempt(s)")
    assert not list((tmp_path / "data").iterdir())


def test_download_names_files_after_the_url(registry: LocalRegistry, tmp_path: Path, tlog: Path,
                                            capsys: pytest.CaptureFixture[str]):
    """Any loopback HTTP server does; the registry's /v2/ endpoint answers 401 (not retried)."""
    import http.server
    import threading

    (tmp_path / "srv").mkdir()
    write_jsonl(tmp_path / "srv" / "train.jsonl", pair_rows(2))
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path / "srv"))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        assert download.main([f"{base}/train.jsonl", f"{base}/train.jsonl",
                              f"--output={tmp_path / 'data'}", "--backoff=0"]) == 0
        assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["1-train.jsonl", "train.jsonl"]
        assert download.main([f"{base}/missing.csv", f"--output={tmp_path / 'd2'}",
                              "--backoff=0"]) == 1
        assert failure(capsys, tlog) == f"download {base}/missing.csv: HTTP 404 File not found"
    finally:
        server.shutdown()
        server.server_close()
