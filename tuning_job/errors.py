"""The tuning job's failures meant for the user.

Each error's message is one line that names the file, key or host at fault: the job reports
it with `kaito_workload.termination.report_failure`, so it becomes the container's termination
message, which the controller copies into the Workspace's conditions.
"""

from __future__ import annotations


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
