"""The metrics file: the run's state and latest figures, replaced atomically on every write.

Kept free of heavy imports so that the command line can record a failure that happens before
(or while) torch loads."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class MetricsFile:
    """`{"state": starting|running|succeeded|failed, "step", "loss", "tokens_per_second", ...}`;
    with no path it only keeps the figures in memory."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.data: dict[str, Any] = {"state": "starting", "history": []}

    def update(self, **values: Any) -> None:
        self.data.update(values)
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(json.dumps(self.data, indent=1, sort_keys=True))
        os.replace(tmp, self.path)
