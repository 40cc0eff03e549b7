"""Training throughput of the tuning job against a plain peft + transformers `Trainer` loop.

    python benchmarks/tuning_throughput.py                    # small random model, CPU
    python benchmarks/tuning_throughput.py --shape tiny --steps 20

Both sides train the same generated Phi-3 style model, on the same chat rows (rendered through
the same chat template, same sequence lengths), with the same LoRA config, batch size, learning
rate and number of steps, in one process. (a) is the baseline: `get_peft_model` + `Trainer` +
`DataCollatorForLanguageModeling`, the loop from peft's examples. (b) is `tuning_job.train.main`,
fed a `training_config` document like the one the Job mounts. Each side runs `--repeats` times,
alternating, and its best run counts (first runs pay one-off costs). Throughput is the Trainer's
own `train_runtime` over `steps × batch` samples, so model loading is excluded on both sides.
Prints samples/s for both and the ratio b/a (goal >= 0.95).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHAPES: dict[str, dict[str, Any]] = {
    "tiny": {},
    "small": {"hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 4,
              "num_attention_heads": 8, "num_key_value_heads": 8},
}
LORA = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.05, "target_modules": "all-linear",
        "bias": "none", "task_type": "CAUSAL_LM"}


def rows(n: int) -> list[dict[str, Any]]:
    return [{"messages": [
        {"role": "user", "content": f"Question {i}: what does the operator do with workspace {i}?"},
        {"role": "assistant", "content": "It provisions GPU nodes and deploys the model. " * 2},
    ]} for i in range(n)]


def common_args(out: Path, steps: int, batch: int) -> dict[str, Any]:
    return {"output_dir": str(out), "max_steps": steps, "per_device_train_batch_size": batch,
            "gradient_accumulation_steps": 1, "learning_rate": 2e-4, "logging_steps": steps,
            "save_strategy": "no", "report_to": "none", "disable_tqdm": True,
            "lr_scheduler_type": "linear", "warmup_steps": 0.03, "weight_decay": 0.0,
            "dataloader_pin_memory": False}


def baseline(model_dir: Path, data: list[dict[str, Any]], out: Path, steps: int,
             batch: int) -> float:
    """peft's example loop: returns samples/s."""
    import datasets
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForLanguageModeling,
        Trainer,
        TrainingArguments,
    )

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(**LORA))
    texts = [tokenizer.apply_chat_template(r["messages"], tokenize=False) for r in data]
    encoded = datasets.Dataset.from_dict({"text": texts}).map(
        lambda b: tokenizer(b["text"], truncation=True, max_length=2048), batched=True,
        remove_columns=["text"])
    trainer = Trainer(model=model, args=TrainingArguments(**common_args(out, steps, batch)),
                      train_dataset=encoded.shuffle(seed=42),
                      data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False))
    runtime = trainer.train().metrics["train_runtime"]
    return steps * batch / runtime


def ours(model_dir: Path, data_dir: Path, out: Path, steps: int, batch: int) -> float:
    """The tuning job's trainer, configured as the Job configures it: returns samples/s."""
    import yaml

    from tuning_job.config import load_config
    from tuning_job.train import main

    args = common_args(out, steps, batch)
    args.pop("output_dir")
    doc = {"training_config": {
        "ModelConfig": {"pretrained_model_name_or_path": str(model_dir),
                        "torch_dtype": "float32"},
        "LoraConfig": LORA, "TrainingArguments": args,
        "DatasetConfig": {"dataset_path": str(data_dir)},
    }}
    path = out.parent / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    result = main(load_config(path, "lora", output_dir=str(out)))
    return steps * batch / float(result.metrics["train_runtime"])


def run(args: argparse.Namespace) -> tuple[float, float]:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    from inference_server.tiny_model import create_tiny_model

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model_dir = create_tiny_model(root / "model", seed=0,
                                      shape_overrides=SHAPES[args.shape] or None)
        data = rows(args.rows)
        (root / "data").mkdir()
        pq.write_table(pa.Table.from_pylist(data), root / "data" / "train.parquet")
        base: list[float] = []
        mine: list[float] = []
        for i in range(args.repeats):
            base.append(baseline(model_dir, data, root / f"base{i}", args.steps, args.batch))
            mine.append(ours(model_dir, root / "data", root / f"ours{i}", args.steps,
                             args.batch))
            print(f"run {i + 1}: baseline {base[-1]:.2f} samples/s, "
                  f"tuning_job {mine[-1]:.2f} samples/s", flush=True)
        return max(base), max(mine)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="small")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import logging

    logging.basicConfig(level=logging.WARNING)
    base, mine = run(args)
    print(f"\nshape={args.shape} steps={args.steps} batch={args.batch} "
          f"threads={__import__('torch').get_num_threads()}")
    print(f"baseline peft + Trainer : {base:8.2f} samples/s")
    print(f"tuning_job              : {mine:8.2f} samples/s")
    print(f"ratio                   : {mine / base:8.3f} (goal >= 0.95)")


if __name__ == "__main__":
    main()
