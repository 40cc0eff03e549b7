"""Where the sandbox keeps its state: `$KAITO_SANDBOX_DIR` or `~/.kaito/sandbox`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def sandbox_dir() -> Path:
    return Path(os.environ.get("KAITO_SANDBOX_DIR") or Path.home() / ".kaito" / "sandbox")


def state_file(root: Path | None = None) -> Path:
    return (root or sandbox_dir()) / "state.json"


def read_state(root: Path | None = None) -> dict[str, Any] | None:
    path = state_file(root)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_state(state: dict[str, Any], root: Path | None = None) -> None:
    path = state_file(root)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(path)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def running_state() -> dict[str, Any] | None:
    """The state of the sandbox when its daemon is up and running, else None."""
    state = read_state()
    if state and state.get("phase") == "running" and alive(int(state["pid"])):
        return state
    return None


def need_running() -> dict[str, Any]:
    state = running_state()
    if state is None:
        raise SystemExit("the sandbox is not running: start it with `kaito sandbox up`")
    return state
