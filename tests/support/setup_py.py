"""What setup.py builds, read from its source (running it would call setup())."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def setup_top_level() -> dict[str, str]:
    """setup.py's TOP_LEVEL: top-level package -> the folder it is built from."""
    for node in ast.parse((ROOT / "setup.py").read_text()).body:
        targets = [node.target] if isinstance(node, ast.AnnAssign) else getattr(node, "targets", [])
        if any(isinstance(t, ast.Name) and t.id == "TOP_LEVEL" for t in targets):
            value = ast.literal_eval(node.value)
            assert isinstance(value, dict)
            return value
    raise AssertionError("setup.py defines no TOP_LEVEL")
