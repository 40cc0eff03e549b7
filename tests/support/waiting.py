"""Bounded waiting for the component tests: poll until a check returns something truthy.

The default deadline is long on purpose: a wait returns as soon as the state is observed, so a
long deadline costs nothing when things work and keeps a loaded machine from failing tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(check: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")
