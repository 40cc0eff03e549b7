"""`main(cfg) -> result`: load the model (4-bit for QLoRA), wrap it with LoRA, train, save.

The Trainer is transformers' own; what we add is the data handling (tuning_job.data), the
progress callback and a collator that counts tokens. The adapter is written with peft's
`save_pretrained`, i.e. exactly the `adapter_config.json` + `adapter_model.safetensors` pair that
the inference server loads with `PeftModel.from_pretrained`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuning_job.config import TuningConfig
from tuning_job.errors import ConfigError, TuningError
from tuning_job.metrics import MetricsFile

log = logging.getLogger("tuning_job")

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
#: Our defaults for TrainingArguments the templates leave out (log lines instead of bars).
TRAINING_DEFAULTS: dict[str, Any] = {"disable_tqdm": True, "report_to": "none"}


@dataclass
class TrainResult:
    """What a run produced: where the adapter is and the final figures."""

    adapter_dir: Path
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def files(self) -> list[Path]:
        return [self.adapter_dir / name for name in ADAPTER_FILES]


def _dtype(value: Any) -> Any:
    import torch

    if value in (None, "auto") or not isinstance(value, str):
        return value
    found = getattr(torch, value.removeprefix("torch."), None)
    if not isinstance(found, torch.dtype):
        raise ConfigError(f"unknown dtype {value!r}; use bfloat16, float16 or float32")
    return found


def cpu_dtype(dtype: Any) -> Any:
    """The dtype to train in: float32 instead of bfloat16/float16 when there is no CUDA device.

    Half-precision LoRA steps on a CPU are pathologically slow (one bfloat16 step of Gemma 3
    270M took 190 s on 2 cores, the same step in float32 3.5 s), and float16 training on a CPU
    is not supported well either; the adapter trained in float32 loads on any base dtype.
    """
    import torch

    if dtype not in (torch.bfloat16, torch.float16) or torch.cuda.is_available():
        return dtype
    log.info("no CUDA device: training in float32 instead of the configured %s "
             "(half-precision training on a CPU is many times slower)",
             str(dtype).removeprefix("torch."))
    return torch.float32


def model_kwargs(cfg: TuningConfig) -> dict[str, Any]:
    """`from_pretrained` keyword arguments: ModelConfig plus the 4-bit quantization."""
    kwargs = dict(cfg.model)
    if "torch_dtype" in kwargs:  # KAITO's (transformers 4) name; transformers 5 says `dtype`
        kwargs.setdefault("dtype", kwargs.pop("torch_dtype"))
    kwargs["dtype"] = cpu_dtype(_dtype(kwargs.get("dtype")))
    quant = {k: v for k, v in cfg.quantization.items() if v is not None}
    if quant.get("load_in_4bit") or quant.get("load_in_8bit"):
        try:
            import bitsandbytes  # noqa: F401
        except ImportError as err:
            raise ConfigError("QLoRA needs bitsandbytes, which is not installed in this "
                              "image (pip install bitsandbytes)") from err
        from transformers import BitsAndBytesConfig

        if "bnb_4bit_compute_dtype" in quant:
            quant["bnb_4bit_compute_dtype"] = _dtype(quant["bnb_4bit_compute_dtype"])
        kwargs["quantization_config"] = BitsAndBytesConfig(**quant)
    return kwargs


def load_model(cfg: TuningConfig) -> tuple[Any, Any]:
    """Tokenizer and the LoRA-wrapped model."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer

    local = bool(cfg.model.get("local_files_only", False))
    extra = {k: cfg.model[k] for k in ("revision", "trust_remote_code") if k in cfg.model}
    try:
        tokenizer = AutoTokenizer.from_pretrained(cfg.model_path, local_files_only=local, **extra)
        kwargs = model_kwargs(cfg)
        model = AutoModelForCausalLM.from_pretrained(cfg.model_path, **kwargs)
    except (OSError, ValueError) as err:
        raise TuningError(f"cannot load model {cfg.model_path}: "
                          f"{' '.join(str(err).split())[:400]}") from err
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    checkpointing = bool(cfg.training.get("gradient_checkpointing"))
    if "quantization_config" in kwargs:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=checkpointing)
    elif checkpointing:
        model.enable_input_require_grads()
    try:
        lora = LoraConfig(**cfg.lora)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"LoraConfig: {err}") from err
    return get_peft_model(model, lora), tokenizer


def training_arguments(cfg: TuningConfig, has_eval: bool) -> Any:
    from transformers import TrainingArguments

    values = {**TRAINING_DEFAULTS, **cfg.training}
    if values.get("gradient_checkpointing"):
        values.setdefault("gradient_checkpointing_kwargs", {"use_reentrant": False})
    if not has_eval:
        values["eval_strategy"] = "no"
    try:
        return TrainingArguments(**values)
    except (TypeError, ValueError, ImportError) as err:
        raise ConfigError(f"TrainingArguments: {' '.join(str(err).split())[:400]}") from err


def main(cfg: TuningConfig, metrics: MetricsFile | None = None) -> TrainResult:
    """Train and save; returns the adapter directory and the final metrics."""
    from peft import PeftModel
    from transformers import PrinterCallback, Trainer
    from transformers.utils import logging as hf_logging

    from tuning_job import data
    from tuning_job.config import check_library_keys
    from tuning_job.progress import ProgressCallback

    check_library_keys(cfg)
    hf_logging.disable_progress_bar()
    metrics = metrics or MetricsFile(None)
    began = time.monotonic()
    model, tokenizer = load_model(cfg)
    train_set, eval_set = data.prepare(cfg.dataset, tokenizer)
    log.info("model %s (%s) with %d trainable parameters; %d training rows, %d eval rows",
             cfg.model_path, cfg.method, model.num_parameters(only_trainable=True),
             len(train_set), len(eval_set) if eval_set is not None else 0)
    collator = data.Collator(tokenizer.pad_token_id, cfg.collator.get("pad_to_multiple_of"))
    args = training_arguments(cfg, eval_set is not None)
    trainer = Trainer(model=model, args=args, train_dataset=train_set, eval_dataset=eval_set,
                      data_collator=collator, callbacks=[ProgressCallback(metrics, collator)])
    trainer.remove_callback(PrinterCallback)  # our callback logs the same, as one line
    output = trainer.train()
    final: dict[str, Any] = {"train_loss": output.training_loss,
                             "train_runtime": output.metrics.get("train_runtime")}
    if eval_set is not None:
        final["eval_loss"] = trainer.evaluate()["eval_loss"]
    adapter_dir = Path(cfg.output_dir)
    trained = trainer.model
    if not isinstance(trained, PeftModel):  # Trainer types it as any torch Module
        raise TuningError(f"the trainer holds a {type(trained).__name__}, not the LoRA model")
    trained.save_pretrained(str(adapter_dir))
    missing = [n for n in ADAPTER_FILES if not (adapter_dir / n).is_file()]
    if missing:
        raise TuningError(f"training finished but {', '.join(missing)} was not written")
    metrics.update(state="succeeded", total_seconds=round(time.monotonic() - began, 3), **final)
    log.info("adapter written to %s (train loss %.4f)", adapter_dir, output.training_loss)
    return TrainResult(adapter_dir, dict(metrics.data))
