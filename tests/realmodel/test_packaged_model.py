"""The sandbox's conversion of the packaged Gemma 3 270M, for real (slow).

Uses the session's one conversion (`prepared_gemma` in conftest.py, which calls
`kaito_sandbox.model.prepare_packaged_model`): the folder is a plain transformers model with the
base-model prompt format and stop string, the .gguf is gone, and a second call reuses it.
"""

from __future__ import annotations

import json

import pytest

from kaito_operator.catalog import presets_dir
from kaito_sandbox import model

pytestmark = pytest.mark.slow


def test_the_converted_folder_is_a_plain_transformers_model(prepared_gemma):
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    folder = prepared_gemma.path
    assert folder == model.packaged_model_dir(model.model_cache_dir())
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"].startswith("gemma3")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    template = (presets_dir() / "chat_templates" / "base-model.jinja").read_text()
    assert tokenizer.chat_template == template
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is Kubernetes?"}],
                                           tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("Question: What is Kubernetes?\nAnswer:")
    assert GenerationConfig.from_pretrained(folder).stop_strings == ["\nQuestion:"]
    loaded = AutoModelForCausalLM.from_pretrained(folder)
    assert str(loaded.dtype) == "torch.bfloat16" and loaded.num_parameters() > 250_000_000
    marker = json.loads((folder / model.MARKER).read_text())
    assert marker["source"] == model.PACKAGE_DIST and marker["dtype"] == "bfloat16"
    cache_models = folder.parent
    assert not list(cache_models.rglob("*.gguf")), "the assembled .gguf is deleted"
    assert not (cache_models / f".building-{folder.name}").exists()


def test_a_second_call_reuses_the_conversion(prepared_gemma):
    lines: list[str] = []
    again = model.prepare_packaged_model(model.model_cache_dir(), lines.append)
    assert again == prepared_gemma.path
    assert lines == [f"using the converted Gemma 3 270M in {again}"]
