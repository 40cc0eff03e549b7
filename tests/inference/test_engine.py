"""Model loading options (chat template, dtype, hub download) and the one-at-a-time fallback."""

from __future__ import annotations

import pytest

from inference_server.app import create_app
from inference_server.engine import TransformersEngine
from inference_server.errors import StartupError

from .conftest import make_settings, serve

MSGS = [{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"}]
TEMPLATE = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}>>"


@pytest.mark.parametrize("as_file", [True, False], ids=["file", "inline"])
def test_chat_template_override(tiny_model_dir, empty_adapters_dir, tmp_path, as_file):
    value = TEMPLATE
    if as_file:
        (tmp_path / "t.jinja").write_text(TEMPLATE)
        value = str(tmp_path / "t.jinja")
    engine = TransformersEngine.load(
        make_settings(tiny_model_dir, empty_adapters_dir, chat_template=value))
    expected = engine.tokenizer("[system] S\n[user] Hi\n>>", add_special_tokens=False)
    assert engine.encode_chat(MSGS) == expected["input_ids"]


async def test_bfloat16_model_serves(tiny_model_dir, empty_adapters_dir):
    import torch

    settings = make_settings(tiny_model_dir, empty_adapters_dir, dtype="bfloat16")
    engine = TransformersEngine.load(settings)
    assert next(engine.model.parameters()).dtype == torch.bfloat16
    async with serve(create_app(settings, engine)) as c:
        r = await c.post("/v1/completions", json={"prompt": "Hello", "max_tokens": 6,
                                                  "ignore_eos": True, "temperature": 0})
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 6


def test_model_id_download_failure_is_a_startup_error(tmp_path, empty_adapters_dir):
    from inference_server.settings import ServerSettings

    settings = ServerSettings(model_id="kaito-test/does-not-exist", cache_dir=tmp_path / "cache",
                              adapters_dir=empty_adapters_dir)
    with pytest.raises(StartupError, match="could not download kaito-test/does-not-exist"):
        TransformersEngine.load(settings)


def test_model_dir_without_config_is_a_startup_error(tmp_path, empty_adapters_dir):
    with pytest.raises(StartupError, match="not a model directory"):
        TransformersEngine.load(make_settings(tmp_path, empty_adapters_dir))


class _NoBatching:
    """The real engine, but declaring it cannot batch (as for exotic cache layouts)."""

    supports_batching = False

    def __init__(self, inner: TransformersEngine) -> None:
        self._inner = inner

    def __getattr__(self, name: str):
        return getattr(self._inner, name)


async def test_one_at_a_time_fallback_gives_the_same_answers(base_settings, base_engine):
    body = {"prompt": "Hello there", "max_tokens": 20, "temperature": 0, "min_tokens": 20}
    async with serve(create_app(base_settings, base_engine)) as c:
        batched = (await c.post("/v1/completions", json=body)).json()
    async with serve(create_app(base_settings, _NoBatching(base_engine))) as c:
        alone = (await c.post("/v1/completions", json=body)).json()
        stop = batched["choices"][0]["text"][4:6]
        cut = (await c.post("/v1/completions", json={**body, "stop": stop})).json()
    assert alone["choices"][0]["text"] == batched["choices"][0]["text"]
    assert alone["usage"] == batched["usage"]
    text = batched["choices"][0]["text"]
    assert cut["choices"][0]["text"] == text[: text.find(stop)]
