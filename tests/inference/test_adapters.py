"""LoRA adapters from the adapters directory: combined by strength, visible, fatal when broken."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from inference_server.app import create_app
from inference_server.engine import TransformersEngine
from inference_server.errors import AdapterError

from .conftest import make_settings, mount_adapters, serve

PROMPT = {"prompt": "Hello there", "max_tokens": 24, "temperature": 0, "ignore_eos": True}


def load(model_dir: Path, root: Path, **kw) -> TransformersEngine:
    return TransformersEngine.load(make_settings(model_dir, root, served_model_name="tiny", **kw))


async def complete(engine: TransformersEngine, settings=None) -> str:
    app = create_app(settings or make_settings(Path(engine.info.model_path), Path("/nonexistent")),
                     engine)
    async with serve(app) as c:
        r = await c.post("/v1/completions", json=PROMPT)
        assert r.status_code == 200, r.text
        return r.json()["choices"][0]["text"]


@pytest.fixture(scope="module")
def base_text(base_engine) -> str:
    import asyncio

    return asyncio.run(complete(base_engine))


async def test_two_adapters_of_different_ranks_change_output(
    tiny_model_dir, adapter_dirs, tmp_path, base_text, caplog
):
    root = mount_adapters(tmp_path / "mnt", adapter_dirs)
    with caplog.at_level(logging.INFO, logger="inference_server.adapters"):
        engine = load(tiny_model_dir, root, adapter_strengths={"alpha": 0.7, "beta": 1.0})
    assert "Adapter added: alpha, beta" in caplog.text
    text = await complete(engine)
    assert text != base_text
    app = create_app(make_settings(tiny_model_dir, root, served_model_name="tiny"), engine)
    async with serve(app) as c:
        card = (await c.get("/v1/models")).json()["data"][0]
    assert card["adapters"] == [
        {"name": "alpha", "strength": 0.7, "rank": 4},
        {"name": "beta", "strength": 1.0, "rank": 8},
    ]
    assert card["adapter_combination"] == "svd"


async def test_strength_zero_equals_base_and_one_differs(
    tiny_model_dir, adapter_dirs, tmp_path, base_text
):
    root = mount_adapters(tmp_path / "mnt", {"alpha": adapter_dirs["alpha"]})
    zero = await complete(load(tiny_model_dir, root, adapter_strengths=[0.0]))
    one = await complete(load(tiny_model_dir, root, adapter_strengths=[1.0]))
    assert zero == base_text
    assert one != base_text


async def test_strength_scales_the_weights(tiny_model_dir, adapter_dirs, tmp_path, base_engine):
    """Half strength moves the merged weights half as far as full strength (linear combo)."""
    root = mount_adapters(tmp_path / "mnt", {"alpha": adapter_dirs["alpha"]})
    half = load(tiny_model_dir, root, adapter_strengths=[0.5], adapter_combination="linear")
    full = load(tiny_model_dir, root, adapter_strengths=[1.0], adapter_combination="linear")
    name = "model.layers.0.self_attn.o_proj.weight"
    w0 = dict(base_engine.model.named_parameters())[name]
    d_half = dict(half.model.named_parameters())[name] - w0
    d_full = dict(full.model.named_parameters())[name] - w0
    assert d_full.abs().max() > 1e-3
    assert (d_half * 2 - d_full).abs().max() < 1e-4


def test_linear_with_different_ranks_is_a_clear_startup_error(
    tiny_model_dir, adapter_dirs, tmp_path
):
    root = mount_adapters(tmp_path / "mnt", adapter_dirs)
    with pytest.raises(AdapterError, match="linear.*ranks"):
        load(tiny_model_dir, root, adapter_combination="linear")


def test_cat_combination_loads(tiny_model_dir, adapter_dirs, tmp_path):
    root = mount_adapters(tmp_path / "mnt", adapter_dirs)
    engine = load(tiny_model_dir, root, adapter_combination="cat")
    assert [a.name for a in engine.info.adapters] == ["alpha", "beta"]


def test_broken_adapter_is_fatal(tiny_model_dir, adapter_dirs, tmp_path):
    root = mount_adapters(tmp_path / "mnt", {"alpha": adapter_dirs["alpha"]})
    broken = root / "broken"
    broken.mkdir()
    (broken / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["qkv_proj"],
         "task_type": "CAUSAL_LM", "base_model_name_or_path": "x"}))
    (broken / "adapter_model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(AdapterError, match="'broken'"):
        load(tiny_model_dir, root)


def test_strengths_for_missing_adapters_are_refused(tiny_model_dir, adapter_dirs, tmp_path):
    root = mount_adapters(tmp_path / "mnt", {"alpha": adapter_dirs["alpha"]})
    with pytest.raises(AdapterError, match="not present.*gamma"):
        load(tiny_model_dir, root, adapter_strengths={"gamma": 0.5})
    with pytest.raises(AdapterError, match="2 adapter strengths given for 1"):
        load(tiny_model_dir, root, adapter_strengths=[0.5, 1.0])


def test_directories_without_config_are_skipped(tiny_model_dir, adapter_dirs, tmp_path):
    root = mount_adapters(tmp_path / "mnt", {"alpha": adapter_dirs["alpha"]})
    (root / "lost+found").mkdir()
    engine = load(tiny_model_dir, root)
    assert [a.name for a in engine.info.adapters] == ["alpha"]
