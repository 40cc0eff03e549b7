"""Failures meant for the user, and how a failing pod tells Kubernetes why.

Each error's message is one line that names the file, key or host at fault: it becomes the
container's termination message, which the controller copies into the Workspace's conditions.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DEFAULT_TERMINATION_LOG = "/dev/termination-log"
TERMINATION_LOG_ENV = "KAITO_TERMINATION_LOG"


class TuningError(Exception):
    """A failure with a message meant for the user (the pod's termination message)."""


class ConfigError(TuningError):
    """The training configuration is invalid or inconsistent."""


class DataError(TuningError):
    """The dataset cannot be read or has nothing to train on."""


class PushError(TuningError):
    """The adapter could not be published to the output registry."""


class DownloadError(TuningError):
    """An input URL could not be downloaded."""


def termination_log(explicit: str | None = None) -> str:
    return explicit or os.environ.get(TERMINATION_LOG_ENV, DEFAULT_TERMINATION_LOG)


def report_failure(message: str, path: str) -> str:
    """Print the reason as one line on stderr and write it where the kubelet reads it.

    The default path is only written when it exists (inside a pod); outside a pod nothing is
    created under /dev."""
    line = " ".join(message.split())
    print(line, file=sys.stderr, flush=True)
    target = Path(path)
    if path != DEFAULT_TERMINATION_LOG or target.exists():
        try:
            target.write_text(line + "\n")
        except OSError:
            pass
    return line
