"""Config parsing/merging and dataset handling, without training."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.tuning.conftest import chat_rows, pair_rows, write_jsonl, write_parquet
from tuning_job.config import DatasetSettings, check_library_keys, load_config
from tuning_job.data import IGNORE, Collator, detect_layout, find_files, prepare
from tuning_job.errors import ConfigError, DataError


def cfg_file(tmp_path: Path, sections: dict) -> Path:
    path = tmp_path / "training_config.yaml"
    path.write_text(yaml.safe_dump({"training_config": sections}))
    return path


def test_defaults_come_from_the_method_template(tmp_path: Path):
    cfg = load_config(cfg_file(tmp_path, {"LoraConfig": {"r": 4}}), "qlora")
    assert cfg.method == "qlora"
    assert cfg.lora["r"] == 4 and cfg.lora["lora_alpha"] == 16  # user key over template key
    assert cfg.quantization["bnb_4bit_quant_type"] == "nf4"
    assert cfg.training["optim"] == "paged_adamw_8bit"
    assert cfg.training["warmup_steps"] == 0.03 and "warmup_ratio" not in cfg.training
    assert cfg.dataset == DatasetSettings(path="/mnt/data", shuffle=True, seed=42)
    assert cfg.model_path == "/workspace/weights" and cfg.output_dir == "/mnt/results"


def test_method_is_inferred_and_overrides_apply(tmp_path: Path):
    path = cfg_file(tmp_path, {"QuantizationConfig": {"load_in_4bit": True},
                               "ModelConfig": {"pretrained_model_name_or_path": "/m"}})
    cfg = load_config(path, data_dir="/d", output_dir="/o")
    assert (cfg.method, cfg.model_path, cfg.dataset.path, cfg.output_dir) == ("qlora", "/m", "/d", "/o")
    assert load_config(cfg_file(tmp_path, {})).method == "lora"


@pytest.mark.parametrize("sections, method, message", [
    ({"LoraConfig": {}, "PeftConfig": {}}, None, "unknown section(s) PeftConfig in training_config"),
    ({"QuantizationConfig": {"load_in_4bit": True}}, "lora", "method lora trains the unquantized model"),
    ({"QuantizationConfig": {"load_in_4bit": False}}, "qlora", "method qlora needs QuantizationConfig.load_in_4bit: true"),
    ({"DatasetConfig": {"train_test_split": 0}}, None, "train_test_split must be a fraction in (0, 1]"),
    ({"DatasetConfig": {"dataset_dir": "/x"}}, None, "DatasetConfig: unknown key(s) dataset_dir"),
    ({"DataCollator": {"mlm": True}}, None, "causal LM tuning needs mlm: false"),
    ({"LoraConfig": []}, None, "section LoraConfig must be a map"),
])
def test_bad_configs_are_refused(tmp_path: Path, sections, method, message):
    with pytest.raises(ConfigError) as err:
        load_config(cfg_file(tmp_path, sections), method)
    assert message in str(err.value)


def test_not_a_training_config(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("ModelConfig: {}\n")
    with pytest.raises(ConfigError, match="unknown top-level key"):
        load_config(path)
    path.write_text("training_config: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml")


def test_unknown_library_keys_are_refused(tmp_path: Path):
    cfg = load_config(cfg_file(tmp_path, {"TrainingArguments": {"num_train_epoch": 1}}))
    with pytest.raises(ConfigError, match="TrainingArguments: unknown key.s. num_train_epoch"):
        check_library_keys(cfg)
    cfg = load_config(cfg_file(tmp_path, {"LoraConfig": {"rank": 8}}))
    with pytest.raises(ConfigError, match="LoraConfig: unknown key.s. rank"):
        check_library_keys(cfg)


@pytest.fixture(scope="module")
def tokenizer(tiny_model: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def test_chat_rows_are_rendered_with_the_chat_template(tmp_path: Path, tokenizer):
    write_parquet(tmp_path / "d" / "train.parquet", chat_rows(6))
    train, evals = prepare(DatasetSettings(path=str(tmp_path / "d"), train_fraction=0.5), tokenizer)
    assert (len(train), len(evals)) == (3, 3)
    text = tokenizer.decode(train[0]["input_ids"])
    assert text.startswith("<|system|>\nYou answer about Kubernetes.<|end|>\n<|user|>\n")
    assert train[0]["labels"] == train[0]["input_ids"]


def test_prompt_completion_rows_train_on_the_completion(tmp_path: Path, tokenizer):
    write_jsonl(tmp_path / "pairs.jsonl", pair_rows(3))
    train, evals = prepare(DatasetSettings(path=str(tmp_path / "pairs.jsonl")), tokenizer)
    assert evals is None and len(train) == 3
    row = train[0]
    trained = [t for t, label in zip(row["input_ids"], row["labels"], strict=True) if label != IGNORE]
    assert tokenizer.decode(trained) == " the quick brown fox<|endoftext|>"
    assert row["labels"][0] == IGNORE


def test_csv_and_json_files_and_explicit_columns(tmp_path: Path, tokenizer):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.csv").write_text("Q,A\nhello,world\nfoo,bar\n")
    (tmp_path / "d" / "b.json").write_text('[{"Q": "x", "A": "y"}]')
    settings = DatasetSettings(path=str(tmp_path / "d"), context_column="Q", response_column="A")
    train, _ = prepare(settings, tokenizer)
    assert len(train) == 3


@pytest.mark.parametrize("make, message", [
    (lambda d: write_parquet(d / "empty.parquet", []), "dataset is empty: empty.parquet hold no rows"),
    (lambda d: (d / "empty.jsonl").write_text(""), "dataset is empty"),
    (lambda d: write_jsonl(d / "x.jsonl", [{"text": "a", "label": 1}]),
     "missing columns: need 'messages' (chat rows) or 'prompt' and 'completion'"),
    (lambda d: (d / "bad.parquet").write_bytes(b"PAR1 this is not parquet"), "bad.parquet: cannot read as parquet"),
    (lambda d: (d / "bad.jsonl").write_text('{"prompt": "a", "completion": \n'), "bad.jsonl: cannot read as jsonl"),
    (lambda d: (d / "notes.txt").write_text("x"), "no dataset files (.parquet, .json, .jsonl, .csv)"),
    (lambda d: write_jsonl(d / "m.jsonl", [{"messages": "not json"}]), "row 0: messages is not a JSON list"),
    (lambda d: write_jsonl(d / "p.jsonl", [{"prompt": "a", "completion": ""}]), "no trainable rows"),
])
def test_bad_datasets_name_the_problem(tmp_path: Path, tokenizer, make, message):
    (tmp_path / "d").mkdir()
    make(tmp_path / "d")
    with pytest.raises(DataError) as err:
        prepare(DatasetSettings(path=str(tmp_path / "d")), tokenizer)
    assert message in str(err.value)


def test_layout_and_files(tmp_path: Path):
    assert detect_layout(["messages"], DatasetSettings()).messages == "messages"
    assert detect_layout(["Context", "Response"], DatasetSettings()).prompt == "Context"
    with pytest.raises(DataError, match="missing column 'chat'"):
        detect_layout(["messages"], DatasetSettings(messages_column="chat"))
    with pytest.raises(DataError, match="does not exist"):
        find_files(str(tmp_path / "nope"))


def test_collator_pads_and_counts():
    collate = Collator(pad_id=0, pad_to_multiple_of=4)
    batch = collate([{"input_ids": [5, 6], "attention_mask": [1, 1], "labels": [-100, 6]},
                     {"input_ids": [7], "attention_mask": [1], "labels": [7]}])
    assert batch["input_ids"].tolist() == [[5, 6, 0, 0], [7, 0, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, -100, -100], [7, -100, -100, -100]]
    assert (collate.tokens, collate.samples) == (3, 2)
