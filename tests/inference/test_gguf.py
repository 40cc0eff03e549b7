"""GGUF checkpoints on the server: finding the file, loading it dequantized, converting it,
hostile files, and the model folder's default stop strings.

The GGUF is a tiny random llama written in-test by ``gguf_files.write_tiny_gguf`` (Q8_0, F16 and
F32 tensors, tokenizer metadata, llama.cpp's q/k row order); its reference folder holds the same
weights as transformers saves them, so "served from GGUF" can be compared with "served normally".
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from inference_server.app import create_app
from inference_server.engine import TransformersEngine
from inference_server.errors import StartupError
from inference_server.gguf import GgufError, convert_gguf, find_gguf, inspect_gguf, load_gguf
from inference_server.settings import ServerSettings, parse_args

from .conftest import serve
from .gguf_files import write_tiny_gguf

PROMPT = "Kubernetes AI Toolchain Operator deploys"


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory, offline_hub: None) -> tuple[Path, Path]:
    """``(folder holding only tiny.gguf, reference transformers folder with the same weights)``."""
    root = tmp_path_factory.mktemp("gguf")
    path = write_tiny_gguf(root / "gguf-model", root / "reference")
    return path, root / "reference"


def _settings(model_dir: Path, adapters: Path, **kw: Any) -> ServerSettings:
    return ServerSettings(model_dir=model_dir, adapters_dir=adapters, dtype="float32", **kw)


@pytest.fixture(scope="module")
def gguf_engine(tiny_gguf: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Any:
    adapters = tmp_path_factory.mktemp("no-adapters")
    return TransformersEngine.load(_settings(tiny_gguf[0].parent, adapters))


@pytest.fixture(scope="module")
def reference_engine(tiny_gguf: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Any:
    adapters = tmp_path_factory.mktemp("no-adapters-ref")
    return TransformersEngine.load(_settings(tiny_gguf[1], adapters))


# ------------------------------------------------------------------------------ find_gguf


def test_find_gguf_rules(tmp_path: Path) -> None:
    assert find_gguf(tmp_path) is None  # empty folder
    (tmp_path / "a.gguf").write_bytes(b"x")
    assert find_gguf(tmp_path) == tmp_path / "a.gguf"
    (tmp_path / "b.gguf").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"2 GGUF files \(a.gguf, b.gguf\).*--gguf-file"):
        find_gguf(tmp_path)
    assert find_gguf(tmp_path, "b.gguf") == tmp_path / "b.gguf"
    assert find_gguf(Path("/nonexistent"), str(tmp_path / "a.gguf")) == tmp_path / "a.gguf"
    with pytest.raises(FileNotFoundError, match="c.gguf does not exist"):
        find_gguf(tmp_path, "c.gguf")
    (tmp_path / "config.json").write_text("{}")
    assert find_gguf(tmp_path) is None  # a transformers folder: its .gguf files are not used
    assert find_gguf(tmp_path, "a.gguf") == tmp_path / "a.gguf"  # the flag wins


def test_gguf_file_flag_reaches_settings() -> None:
    settings = parse_args(["--model-dir", "/m", "--gguf-file", "x.gguf"])
    assert settings.gguf_file == "x.gguf"
    assert parse_args(["--model-dir", "/m"]).gguf_file is None


# ------------------------------------------------------------------------------ loading


def test_inspect_reads_types_and_size(tiny_gguf: tuple[Path, Path]) -> None:
    summary = inspect_gguf(tiny_gguf[0])
    assert summary.architecture == "llama"
    assert set(summary.quant_types) == {"Q8_0", "F16", "F32"}
    assert summary.file_bytes == tiny_gguf[0].stat().st_size
    assert summary.fast_reader


def test_load_logs_one_line_with_types_dtype_and_memory(
    tiny_gguf: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="inference_server.gguf"):
        _, model = load_gguf(tiny_gguf[0], dtype=torch.bfloat16)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("GGUF ")]
    assert len(lines) == 1, lines
    gib = sum(p.numel() * 2 for p in model.parameters()) / 2**30
    assert lines[0] == (
        f"GGUF tiny.gguf (0 MiB, {'/'.join(inspect_gguf(tiny_gguf[0]).quant_types)}) "
        f"dequantized to bfloat16: {gib:.2f} GiB of weights in memory"
    )
    assert next(model.parameters()).dtype == torch.bfloat16


def test_gguf_weights_equal_the_reference_and_fallback_loader(tiny_gguf: tuple[Path, Path]) -> None:
    """The fast reader, transformers' own GGUF loader and the plain folder give the same logits."""
    from dataclasses import replace

    from transformers import AutoModelForCausalLM

    from inference_server import gguf

    tokenizer, fast = load_gguf(tiny_gguf[0], dtype=torch.float32)
    slow_tok, slow = gguf._read(
        tiny_gguf[0], replace(inspect_gguf(tiny_gguf[0]), fast_reader=False), torch.float32
    )
    ref = AutoModelForCausalLM.from_pretrained(str(tiny_gguf[1]), dtype=torch.float32)
    ids = torch.tensor([tokenizer(PROMPT)["input_ids"]])
    assert slow_tok(PROMPT)["input_ids"] == ids[0].tolist()
    with torch.no_grad():
        want = ref(ids).logits
        assert torch.equal(fast(ids).logits, want)
        assert torch.equal(slow(ids).logits, want)


async def test_server_serves_the_gguf_like_the_reference_folder(
    gguf_engine: Any, reference_engine: Any, tiny_gguf: tuple[Path, Path]
) -> None:
    assert gguf_engine.info.model_path == str(tiny_gguf[0].parent)
    outputs = []
    for engine in (gguf_engine, reference_engine):
        name = engine.info.model_name
        body = {"model": name, "prompt": PROMPT, "max_tokens": 24, "temperature": 0}
        chat = {"model": name, "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 16, "temperature": 0}
        async with serve(create_app(engine_settings(engine), engine)) as client:
            completion = await client.post("/v1/completions", json=body)
            chatted = await client.post("/v1/chat/completions", json=chat)
        assert completion.status_code == 200, completion.text
        assert chatted.status_code == 200, chatted.text  # the GGUF's own chat template
        outputs.append((completion.json()["choices"][0]["text"],
                        chatted.json()["choices"][0]["message"]["content"]))
    assert outputs[0] == outputs[1]
    assert outputs[0][0]  # the comparison is not between two empty strings


def engine_settings(engine: Any) -> ServerSettings:
    return ServerSettings(model_dir=Path(engine.info.model_path), adapters_dir=Path("/nonexistent"))


# ------------------------------------------------------------------------------ convert_gguf


def test_convert_writes_a_plain_folder_atomically(
    tiny_gguf: tuple[Path, Path], tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "cache" / "converted"
    out.mkdir(parents=True)
    (out / "stale.txt").write_text("an older conversion")  # replaced as a whole
    lines: list[str] = []
    result = convert_gguf(tiny_gguf[0], out, dtype=torch.float32, chat_template="T{{ x }}",
                          stop_strings=["\nQuestion:"], progress=lines.append)
    assert result == out
    assert lines == ["reading the tokenizer", "dequantizing the weights", "writing safetensors"]
    assert sorted(p.name for p in out.iterdir()) == [
        "chat_template.jinja", "config.json", "generation_config.json", "model.safetensors",
        "tokenizer.json", "tokenizer_config.json",
    ]
    assert [p.name for p in out.parent.iterdir()] == ["converted"]  # no temp folder left
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    assert json.loads((out / "generation_config.json").read_text())["stop_strings"] == [
        "\nQuestion:"
    ]
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    assert tokenizer.chat_template == "T{{ x }}"
    model = AutoModelForCausalLM.from_pretrained(str(out))
    ref = AutoModelForCausalLM.from_pretrained(str(tiny_gguf[1]), dtype=torch.float32)
    ids = torch.tensor([tokenizer(PROMPT)["input_ids"]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, ref(ids).logits)


def test_failed_convert_leaves_nothing(
    tiny_gguf: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from inference_server import gguf

    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf at all, just text" * 4)
    (tmp_path / "out").mkdir()
    with pytest.raises(GgufError, match="bad.gguf is not a usable GGUF file"):
        convert_gguf(bad, tmp_path / "out" / "model")
    assert list((tmp_path / "out").iterdir()) == []

    def disk_full(*args: Any, **kwargs: Any) -> Any:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(gguf, "_read", disk_full)  # fails after the temp folder exists
    with pytest.raises(OSError, match="No space left"):
        convert_gguf(tiny_gguf[0], tmp_path / "out" / "model")
    assert list((tmp_path / "out").iterdir()) == []


# ------------------------------------------------------------------------------ hostile files


def _truncated(src: Path, dst: Path) -> Path:
    data = src.read_bytes()
    dst.mkdir()
    (dst / "cut.gguf").write_bytes(data[: len(data) - 1000])
    return dst


def _header_only(src: Path, dst: Path) -> Path:
    dst.mkdir()
    (dst / "head.gguf").write_bytes(src.read_bytes()[:100])
    return dst


def _other_arch(dst: Path) -> Path:
    from gguf import GGUFWriter

    dst.mkdir()
    writer = GGUFWriter(str(dst / "alien.gguf"), "nosucharch")
    writer.add_tensor("w", torch.zeros(4, 32).numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dst


def _not_gguf(dst: Path) -> Path:
    dst.mkdir()
    (dst / "model.gguf").write_text("<html>404 Not Found</html>")
    return dst


def _two(src: Path, dst: Path) -> Path:
    dst.mkdir()
    shutil.copy(src, dst / "one.gguf")
    shutil.copy(src, dst / "two.gguf")
    return dst


@pytest.mark.parametrize(("case", "message"), [
    ("not-gguf", r"model\.gguf is not a usable GGUF file: it does not start with the GGUF magic"),
    ("truncated", r"cut\.gguf is not a usable GGUF file: it is truncated: tensor \S+ ends at"),
    ("header-only", r"head\.gguf is not a usable GGUF file: .*(ends early|does not fit)"),
    ("other-arch", r"alien\.gguf holds a 'nosucharch' model, an architecture transformers "
                   r"cannot load from GGUF"),
    ("two-files", r"2 GGUF files \(one\.gguf, two\.gguf\); name one with --gguf-file"),
])
def test_hostile_files_are_clear_startup_errors(
    case: str, message: str, tiny_gguf: tuple[Path, Path], tmp_path: Path
) -> None:
    folder = {
        "not-gguf": lambda: _not_gguf(tmp_path / "m"),
        "truncated": lambda: _truncated(tiny_gguf[0], tmp_path / "m"),
        "header-only": lambda: _header_only(tiny_gguf[0], tmp_path / "m"),
        "other-arch": lambda: _other_arch(tmp_path / "m"),
        "two-files": lambda: _two(tiny_gguf[0], tmp_path / "m"),
    }[case]()
    with pytest.raises(StartupError, match=message):
        TransformersEngine.load(_settings(folder, tmp_path))


async def test_server_reports_a_broken_gguf_on_health(tmp_path: Path) -> None:
    folder = _not_gguf(tmp_path / "m")
    failures: list[BaseException] = []
    app = create_app(_settings(folder, tmp_path), on_load_failure=failures.append)
    async with serve(app) as client:
        for _ in range(600):  # the load runs in a thread: wait for its observed outcome
            health = await client.get("/health")
            if health.json()["status"] != "loading":
                break
            await asyncio.sleep(0.05)
    assert health.status_code == 503
    assert health.json()["status"] == "failed"
    assert "model.gguf is not a usable GGUF file" in health.json()["detail"]
    assert isinstance(failures[0], StartupError)


def test_a_folder_without_config_or_gguf_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StartupError, match="neither config.json nor a .gguf file"):
        TransformersEngine.load(_settings(tmp_path, tmp_path))


# ------------------------------------------------------------------------------ default stops


@pytest.fixture(scope="module")
def stop_model(tiny_gguf: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory,
               reference_engine: Any) -> tuple[Path, str, str]:
    """The reference folder with a stop string its greedy output contains, and that output."""
    ids = reference_engine.encode_prompt(PROMPT)
    out = reference_engine.generate(ids, {"max_new_tokens": 24, "do_sample": False})
    text = reference_engine.decode(out)
    stop = text[6:9]
    assert stop.strip() and stop not in text[:6], text
    folder = tmp_path_factory.mktemp("stops") / "model"
    shutil.copytree(tiny_gguf[1], folder)
    config = json.loads((folder / "generation_config.json").read_text())
    (folder / "generation_config.json").write_text(json.dumps({**config, "stop_strings": [stop]}))
    return folder, stop, text


async def test_default_stop_strings_cut_every_route(
    stop_model: tuple[Path, str, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder, stop, full = stop_model
    with caplog.at_level(logging.INFO, logger="inference_server.engine"):
        engine = TransformersEngine.load(_settings(folder, tmp_path))
    assert engine.info.default_stops == (stop,)
    assert any("Default stop strings" in r.getMessage() and stop in r.getMessage()
               for r in caplog.records)
    want = full[: full.index(stop)]
    async with serve(create_app(_settings(folder, tmp_path), engine)) as client:
        completion = await client.post("/v1/completions", json={
            "model": engine.info.model_name, "prompt": PROMPT, "max_tokens": 24,
            "temperature": 0, "stop": ["zzz-never"],  # a request's own stops add to the defaults, never replace
        })
        kaito = await client.post("/chat", json={
            "prompt": PROMPT, "return_full_text": False,
            "generate_kwargs": {"max_new_tokens": 24, "do_sample": False},
        })
        beams = await client.post("/chat", json={  # num_beams: served by model.generate
            "prompt": PROMPT, "return_full_text": False,
            "generate_kwargs": {"max_new_tokens": 24, "do_sample": False, "num_beams": 1,
                                "typical_p": 0.99},
        })
    assert completion.status_code == 200, completion.text
    assert completion.json()["choices"][0]["text"] == want
    assert completion.json()["choices"][0]["finish_reason"] == "stop"
    assert kaito.status_code == 200, kaito.text
    assert kaito.json()["Result"] == want
    assert beams.status_code == 200, beams.text
    assert beams.json()["Result"] == want


def test_weights_map_matches_transformers(tiny_gguf: tuple[Path, Path]) -> None:
    """Our one-name-map version of ``get_gguf_hf_weights_map`` gives transformers' mapping."""
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.modeling_gguf_pytorch_utils import (
        TENSOR_PROCESSORS,
        TensorProcessor,
        get_gguf_hf_weights_map,
    )

    from inference_server.gguf_header import read_header
    from inference_server.gguf_reader import config_dict, weights_map

    header = read_header(tiny_gguf[0])
    values = config_dict(header.metadata, tuple(t.name for t in header.tensors))
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**values))
    processor = TENSOR_PROCESSORS.get("llama", TensorProcessor)(config=values)
    expected = get_gguf_hf_weights_map(model, processor)
    assert len(expected) == len(header.tensors)
    assert weights_map(model, processor, "llama") == expected
