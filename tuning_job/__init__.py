"""The LoRA/QLoRA trainer that runs inside a tuning Job pod (docs/design.md §6).

`python -m tuning_job --config /mnt/config/training_config.yaml` reads KAITO's `training_config`
layout, trains an adapter on the data in `/mnt/data` and pushes it as an OCI artifact (or leaves
it in the output volume). `python -m tuning_job.download` is the init container that fetches the
input URLs. Importing this package is free: torch, transformers and peft load inside functions.
"""

from tuning_job.errors import ConfigError, DataError, PushError, TuningError

__all__ = ["ConfigError", "DataError", "PushError", "TuningError"]
