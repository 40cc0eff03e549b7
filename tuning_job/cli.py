"""`python -m tuning_job`: config → train → push, with one failure line for Kubernetes.

Exit code 0 and a final JSON line on stdout mean success; any failure exits 1 after writing
its reason to the termination log (`/dev/termination-log` in a pod, `--termination-log` or
`$KAITO_TERMINATION_LOG` elsewhere), which the controller shows in the Workspace's conditions.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from kaito_workload.termination import report_failure, termination_log
from tuning_job.errors import TuningError
from tuning_job.metrics import MetricsFile

log = logging.getLogger("tuning_job")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tuning_job", description="LoRA/QLoRA tuning job")
    p.add_argument("--config", required=True, type=Path, help="training_config.yaml")
    p.add_argument("--method", choices=["lora", "qlora"], help="default: from the config")
    p.add_argument("--data-dir", help="dataset file or folder (overrides dataset_path)")
    p.add_argument("--output-dir", help="adapter folder (overrides TrainingArguments.output_dir)")
    p.add_argument("--model-dir", help="base model (overrides pretrained_model_name_or_path)")
    p.add_argument("--revision", help="model revision (with --allow-download)")
    p.add_argument("--allow-download", action="store_true",
                   help="let the model be downloaded (overrides ModelConfig.local_files_only)")
    p.add_argument("--push", metavar="IMAGE", help="registry/repository:tag to push the adapter")
    p.add_argument("--docker-config", type=Path,
                   help="docker config with push credentials (the mounted .dockerconfigjson)")
    p.add_argument("--insecure-registry", action="store_true", help="plain http to the registry")
    p.add_argument("--allow-private-registry", action="store_true", default=None,
                   help="allow a registry on a private (RFC 1918, CGNAT, ULA) address")
    p.add_argument("--metrics-file", type=Path, help="default: <output-dir>/metrics.json")
    p.add_argument("--termination-log", help="where the failure line goes")
    return p


def run(args: argparse.Namespace, metrics: MetricsFile) -> dict[str, object]:
    from tuning_job.config import load_config
    from tuning_job.train import main as train

    cfg = load_config(args.config, args.method, data_dir=args.data_dir,
                      output_dir=args.output_dir, model_dir=args.model_dir)
    if args.allow_download:
        cfg.model["local_files_only"] = False
    if args.revision:
        cfg.model["revision"] = args.revision
    metrics.path = args.metrics_file or Path(cfg.output_dir) / "metrics.json"
    metrics.update(state="starting", method=cfg.method)
    result = train(cfg, metrics)
    summary: dict[str, object] = {"adapter_dir": str(result.adapter_dir),
                                  "files": [p.name for p in result.files],
                                  "train_loss": result.metrics.get("train_loss")}
    if args.push:
        from kaito_egress.guard import EgressGuard
        from tuning_job.push import push_adapter

        log.info("pushing the adapter to %s", args.push)
        guard = EgressGuard.from_env(allow_private=args.allow_private_registry)
        digest = push_adapter(result.files, args.push, args.docker_config,
                              insecure=args.insecure_registry, guard=guard)
        metrics.update(pushed=args.push, digest=digest)
        log.info("pushed %s (%s)", args.push, digest)
        summary.update(pushed=args.push, digest=digest)
    return summary


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    log_path = termination_log(args.termination_log)
    metrics = MetricsFile(args.metrics_file)
    try:
        summary = run(args, metrics)
    except TuningError as err:
        reason = report_failure(f"tuning failed: {err}", log_path)
    except Exception as err:  # noqa: BLE001 - the pod must say why, whatever broke
        log.exception("tuning failed")
        reason = report_failure(f"tuning failed: {type(err).__name__}: {err}", log_path)
    else:
        print(json.dumps(summary), flush=True)
        return 0
    try:
        metrics.update(state="failed", error=reason)
    except OSError:
        pass
    return 1
