"""Integrity of the preset and SKU catalogs in presets/."""

from __future__ import annotations

import shutil

import jinja2
import pytest
import yaml

from kaito_operator.catalog import CatalogError, fit_preset, load_catalog, nodes_needed

REQUIRED_PRESETS = [
    "phi-3-mini-4k-instruct", "phi-3-mini-128k-instruct", "phi-3-medium-4k-instruct",
    "phi-3-medium-128k-instruct", "phi-3.5-mini-instruct", "phi-4", "phi-4-mini-instruct",
    "llama-3.1-8b-instruct", "mistral-7b", "mistral-7b-instruct", "falcon-7b",
    "falcon-7b-instruct", "falcon-40b", "falcon-40b-instruct", "qwen2.5-coder-7b-instruct",
    "qwen2.5-coder-32b-instruct", "deepseek-r1-distill-llama-8b", "deepseek-r1-distill-qwen-14b",
]

#: One representative per required family, with its published GPU figures.
PUBLISHED = [
    ("Standard_NC6s_v3", 1, 16, "V100"),
    ("Standard_NC24s_v3", 4, 16, "V100"),
    ("Standard_NC4as_T4_v3", 1, 16, "T4"),
    ("Standard_NC24ads_A100_v4", 1, 80, "A100"),
    ("Standard_ND96asr_v4", 8, 40, "A100"),
    ("Standard_ND96amsr_A100_v4", 8, 80, "A100"),
    ("Standard_NC40ads_H100_v5", 1, 94, "H100"),
    ("Standard_ND96isr_H100_v5", 8, 80, "H100"),
    ("Standard_ND96isr_H200_v5", 8, 141, "H200"),
    ("Standard_NV36ads_A10_v5", 1, 24, "A10"),
    ("p3.2xlarge", 1, 16, "V100"),
    ("p4d.24xlarge", 8, 40, "A100"),
    ("p5.48xlarge", 8, 80, "H100"),
    ("g4dn.xlarge", 1, 16, "T4"),
    ("g5.48xlarge", 8, 24, "A10G"),
    ("g6.xlarge", 1, 24, "L4"),
]


def test_required_presets_are_present(catalog):
    assert set(REQUIRED_PRESETS) <= set(catalog.presets)


@pytest.mark.parametrize("name", REQUIRED_PRESETS)
def test_every_preset_fits_at_least_one_sku(catalog, name):
    preset = catalog.presets[name]
    assert any(nodes_needed(preset, sku) for sku in catalog.skus.values())


@pytest.mark.parametrize(("name", "gpus", "memory", "model"), PUBLISHED)
def test_published_sku_figures(catalog, name, gpus, memory, model):
    sku = catalog.sku(name)
    assert (sku.gpu_count, sku.gpu_memory_gib) == (gpus, memory)
    assert model in sku.gpu_model


def test_every_sku_figure_is_positive(catalog):
    for sku in catalog.skus.values():
        assert sku.gpu_count > 0 and sku.gpu_memory_gib > 0, sku.name
        assert sku.vcpus > 0 and sku.memory_gib > 0, sku.name
    clouds = {sku.cloud for sku in catalog.skus.values()}
    assert clouds == {"azure", "aws"}


def test_sku_families_cover_the_required_series(catalog):
    names = set(catalog.skus)
    for prefix in ("p3.", "p4d.", "p5.", "g4dn.", "g5.", "g6."):
        assert any(n.startswith(prefix) for n in names), prefix


def test_preset_entries_are_complete(catalog):
    for preset in catalog.presets.values():
        assert len(preset.hugging_face.revision) == 40
        assert preset.resources.disk_gib > 0
        assert preset.readiness_timeout_seconds > 0
        assert preset.runtime.max_model_len > 0
        if preset.tuning.supported:
            assert preset.tuning_methods


def test_quick_start_fits_and_medium_does_not(catalog):
    nc6 = catalog.sku("Standard_NC6s_v3")
    assert fit_preset(catalog.presets["phi-3-mini-4k-instruct"], nc6).ok
    fit = fit_preset(catalog.presets["phi-3-medium-4k-instruct"], nc6)
    assert not fit.ok and "needs 28 GiB of GPU memory in total" in fit.reason


def test_multi_node_presets_count_nodes(catalog):
    falcon = catalog.presets["falcon-40b-instruct"]
    nc6 = catalog.sku("Standard_NC6s_v3")
    needed = nodes_needed(falcon, nc6)
    assert needed and needed > 1
    assert not fit_preset(falcon, nc6, needed - 1).ok
    assert fit_preset(falcon, nc6, needed).ok


CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hello?"},
    {"role": "assistant", "content": "Hi."},
    {"role": "user", "content": "Bye?"},
]


def test_chat_templates_render_conversations(catalog):
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = lambda message: (_ for _ in ()).throw(ValueError(message))
    files = sorted((catalog.root / "chat_templates").glob("*.jinja"))
    assert files
    for path in files:
        text = env.from_string(path.read_text()).render(
            messages=CONVERSATION, add_generation_prompt=True, bos_token="<s>", eos_token="</s>"
        )
        for message in CONVERSATION[1:]:
            assert message["content"] in text, path.name


def test_presets_reference_existing_templates(catalog):
    for preset in catalog.presets.values():
        if preset.chat_template:
            assert catalog.chat_template(preset)


@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_tuning_templates_have_kaito_sections(catalog, method):
    config = catalog.tuning_template(method)["training_config"]
    assert {"ModelConfig", "QuantizationConfig", "LoraConfig", "TrainingArguments",
            "DatasetConfig", "DataCollator"} <= set(config)
    assert bool(config["QuantizationConfig"].get("load_in_4bit")) is (method == "qlora")
    assert config["TrainingArguments"]["output_dir"]


def _copy(catalog, tmp_path):
    root = tmp_path / "presets"
    shutil.copytree(catalog.root, root)
    return root


def test_broken_catalog_names_the_file_and_entry(catalog, tmp_path):
    root = _copy(catalog, tmp_path)
    data = yaml.safe_load((root / "models.yaml").read_text())
    data["models"][0]["resources"]["gpuCount"] = 0
    (root / "models.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(CatalogError) as info:
        load_catalog(root)
    assert "models.yaml" in str(info.value)
    assert data["models"][0]["name"] in str(info.value)
    assert "gpuCount" in str(info.value)


def test_duplicate_and_missing_template_are_refused(catalog, tmp_path):
    root = _copy(catalog, tmp_path)
    data = yaml.safe_load((root / "skus.yaml").read_text())
    data["skus"].append(dict(data["skus"][0]))
    (root / "skus.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(CatalogError, match="duplicate name"):
        load_catalog(root)

    root = _copy(catalog, tmp_path / "again")
    data = yaml.safe_load((root / "models.yaml").read_text())
    data["models"][0]["chatTemplate"] = "missing.jinja"
    (root / "models.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(CatalogError, match="missing.jinja not found"):
        load_catalog(root)


def test_catalog_location_can_be_overridden(catalog, tmp_path, monkeypatch):
    root = _copy(catalog, tmp_path)
    monkeypatch.setenv("KAITO_PRESETS_DIR", str(root))
    assert load_catalog().root == root
