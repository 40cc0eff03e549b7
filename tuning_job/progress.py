"""Progress a user can see: one log line per logging step, and a metrics JSON file.

`kubectl logs job/<workspace>` shows `step 20/60 loss 1.93 tokens/s 4123 samples/s 8.1
eta 0:00:31`; the same figures (and the state: running, succeeded, failed) are rewritten
atomically into a small JSON file that a sidecar, a debugging shell or the tests can read.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any

from transformers import TrainerCallback

from tuning_job.metrics import MetricsFile

log = logging.getLogger("tuning_job")


def _eta(seconds: float) -> str:
    return str(timedelta(seconds=int(max(seconds, 0))))


class ProgressCallback(TrainerCallback):
    """Turns the Trainer's log events into progress lines and metrics."""

    def __init__(self, metrics: MetricsFile, counter: Any) -> None:
        self.metrics = metrics
        self.counter = counter  # the collator: counts tokens and samples it batched
        self.start = 0.0

    def on_train_begin(self, args: Any, state: Any, control: Any, **_: Any) -> None:
        self.start = time.monotonic()
        self.counter.tokens = self.counter.samples = 0
        self.metrics.update(state="running", max_steps=state.max_steps, step=0)
        log.info("training: %d steps, %d epoch(s)", state.max_steps, args.num_train_epochs)

    def figures(self, state: Any) -> dict[str, Any]:
        elapsed = max(time.monotonic() - self.start, 1e-9)
        step = state.global_step
        per_step = elapsed / step if step else 0.0
        return {
            "step": step,
            "max_steps": state.max_steps,
            "epoch": round(float(state.epoch or 0), 4),
            "elapsed_seconds": round(elapsed, 3),
            "tokens_per_second": round(self.counter.tokens / elapsed, 2),
            "samples_per_second": round(self.counter.samples / elapsed, 3),
            "eta_seconds": round(per_step * (state.max_steps - step), 1),
        }

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
               **_: Any) -> None:
        logs = logs or {}
        figures = self.figures(state)
        entry = {**figures, **{k: v for k, v in logs.items() if isinstance(v, int | float)}}
        history = [*self.metrics.data["history"], entry][-200:]
        self.metrics.update(history=history, **entry)
        if "loss" in logs:
            log.info("step %d/%d loss %.4f lr %.3g tokens/s %.0f samples/s %.2f eta %s",
                     figures["step"], figures["max_steps"], logs["loss"],
                     logs.get("learning_rate", 0.0), figures["tokens_per_second"],
                     figures["samples_per_second"], _eta(figures["eta_seconds"]))
        elif "eval_loss" in logs:
            log.info("eval at step %d: loss %.4f", figures["step"], logs["eval_loss"])

    def on_train_end(self, args: Any, state: Any, control: Any, **_: Any) -> None:
        self.metrics.update(**self.figures(state))
