"""pyproject.toml ships every package and the catalog; the CLI works as an installed command."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_folder_is_listed():
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("kaito_operator", "inference_server", "tuning_job")
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert on_disk <= listed, f"add to [tool.setuptools] packages: {sorted(on_disk - listed)}"
    assert PYPROJECT["tool"]["setuptools"]["package-dir"] == {"kaito_presets": "presets"}


def test_operator_extra_carries_no_torch():
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert not any(dep.startswith("torch") for dep in extras["operator"])
    assert "torch==2.13.0" in extras["inference"]


def test_installed_kaito_command_runs():
    kaito = Path(sys.executable).parent / "kaito"
    assert kaito.exists(), "install the project (make test does) to get the `kaito` command"
    out = subprocess.run(
        [str(kaito), "presets"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert out.splitlines()[0].split()[:2] == ["NAME", "PARAMS"]
    assert "phi-3-mini-4k-instruct" in out
