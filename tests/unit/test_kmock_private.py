"""kmock's private API is used in one module, for the one kmock release it is pinned to."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

from kaito_sandbox.sim.kmock_private import KMOCK_VERSION, KmockVersionError, check_kmock_version

ROOT = Path(__file__).resolve().parents[2]


def test_another_kmock_version_fails_with_a_message():
    check_kmock_version(KMOCK_VERSION)
    with pytest.raises(KmockVersionError, match=r"needs kmock==0\.8 .* kmock 0\.9 is installed"):
        check_kmock_version("0.9")
    with pytest.raises(ImportError, match="kmock none is installed"):
        check_kmock_version("none")


def test_the_sandbox_extra_pins_that_version():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert f"kmock=={KMOCK_VERSION}" in extras["sandbox"]


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    text = path.read_text()
    if "kmock" not in text:
        return names
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def test_only_kmock_private_imports_kmock_internals():
    users = sorted(
        str(path.relative_to(ROOT))
        for top in ("kaito_sandbox", "kaito_operator", "tests", "benchmarks")
        for path in (ROOT / top).rglob("*.py")
        if any(name.startswith("kmock._internal") for name in imports_of(path))
    )
    assert users == ["kaito_sandbox/sim/kmock_private.py"]
