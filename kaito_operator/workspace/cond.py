"""One Workspace condition as a reconcile pass computes it (rendered by `status`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Cond:
    type: str
    status: bool
    reason: str
    message: str
