"""A short LoRA run on the real model learns facts from the shipped dataset.

The tuning job's own entry point trains Gemma 3 270M (float32 on CPU) on two rows of
examples/tuning/kaito-facts/train.jsonl for each of two facts (about 30 s on 2 cores); the loss
the trainer records falls, and the adapter (loaded with peft, as the inference server does)
answers the dataset's held-out phrasing of each fact with that fact, which the base model does
not.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tuning_job.cli import main

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DATASET = ROOT / "examples" / "tuning" / "kaito-facts"
STOP = "\nQuestion:"
#: Enough for the held-out question's answer; the facts are one short sentence.
ANSWER_TOKENS = 14
#: The held-out questions used (indexes into held-out.json) and training rows per fact.
FACTS, ROWS_PER_FACT = (0, 1), 2


def rows_teaching(expected: str) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in (DATASET / "train.jsonl").read_text().splitlines()
            if line.strip()]
    chosen = [r for r in rows if expected.lower() in r["messages"][-1]["content"].lower()]
    assert len(chosen) >= ROWS_PER_FACT, f"train.jsonl has too few rows teaching {expected!r}"
    return chosen[:ROWS_PER_FACT]


def training_config(path: Path, model: Path) -> Path:
    """Six full-batch steps (about 4.5 s each on 2 cores) at a high, constant learning rate;
    no dropout and no shuffling, so the run is the same every time."""
    doc = {"training_config": {
        "ModelConfig": {"pretrained_model_name_or_path": str(model), "torch_dtype": "float32",
                        "device_map": None},
        "LoraConfig": {"r": 16, "lora_alpha": 32, "lora_dropout": 0.0},
        "TrainingArguments": {"max_steps": 6, "learning_rate": 0.001, "warmup_ratio": 0.0,
                              "lr_scheduler_type": "constant", "logging_steps": 1,
                              "save_strategy": "no", "per_device_train_batch_size": 8,
                              "gradient_accumulation_steps": 1, "seed": 0},
        "DatasetConfig": {"shuffle_dataset": False},
    }}
    path.write_text(yaml.safe_dump(doc))
    return path


def answer(model: Any, tokenizer: Any, question: str) -> str:
    """The greedy answer through the folder's base-model template, cut at the stop string."""
    import torch

    ids = tokenizer.apply_chat_template([{"role": "user", "content": question}],
                                        add_generation_prompt=True, return_tensors="pt",
                                        return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=ANSWER_TOKENS, do_sample=False)
    text = tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    return str(text).split(STOP)[0]


def test_short_lora_run_lowers_the_loss_and_teaches_the_fact(
        gemma_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    held_out = json.loads((DATASET / "held-out.json").read_text())
    facts = [(held_out[i]["question"], held_out[i]["expected"]) for i in FACTS]
    rows = [row for _, expected in facts for row in rows_teaching(expected)]
    data = tmp_path / "data" / "train.jsonl"
    data.parent.mkdir()
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "results"

    rc = main(["--config", str(training_config(tmp_path / "c.yaml", gemma_model)),
               "--data-dir", str(data.parent), "--output-dir", str(out)])
    assert rc == 0, capsys.readouterr().err[-3000:]

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["state"] == "succeeded", metrics
    losses = [h["loss"] for h in metrics["history"] if "loss" in h]
    assert len(losses) == 6, metrics["history"]
    assert losses[-1] < losses[0] / 2, losses

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gemma_model)
    base = AutoModelForCausalLM.from_pretrained(gemma_model, dtype=torch.float32).eval()
    # the folder's stop string would make generate() scan the 262k-token vocabulary (~5 s a
    # call); answer() cuts at it instead
    base.generation_config.stop_strings = None
    before = [answer(base, tokenizer, question) for question, _ in facts]
    tuned = PeftModel.from_pretrained(base, str(out)).eval()
    after = [answer(tuned, tokenizer, question) for question, _ in facts]
    for (question, expected), base_answer, tuned_answer in zip(facts, before, after, strict=True):
        assert expected.lower() not in base_answer.lower(), (question, base_answer)
        assert expected.lower() in tuned_answer.lower(), (question, tuned_answer, losses)
    # each question gets its own fact, not whatever the adapter learned last
    for (_, expected), tuned_answer in zip(facts, reversed(after), strict=True):
        assert expected.lower() not in tuned_answer.lower(), after
