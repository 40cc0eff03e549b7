"""setup.py builds every package and pyproject.toml ships the catalog; the CLI works as an
installed command."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from tests.support.setup_py import setup_top_level

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


#: Folders with an __init__.py at the top that are not installed.
NOT_INSTALLED = {"tests"}


def test_every_top_level_package_folder_is_built():
    """setup.py builds the packages of TOP_LEVEL whose folders are present: a package folder it
    does not name would be left out of every install and image."""
    top_level = setup_top_level()
    on_disk = {init.parent.name for init in ROOT.glob("*/__init__.py")} - NOT_INSTALLED
    assert on_disk <= set(top_level.values()), (
        f"add to setup.py's TOP_LEVEL: {sorted(on_disk - set(top_level.values()))}")
    assert all((ROOT / folder).is_dir() for folder in top_level.values())
    # Code packages are installed under their folder's name; presets/ is the data package.
    assert {pkg: folder for pkg, folder in top_level.items() if pkg != folder} == {
        "kaito_presets": "presets"}
    assert PYPROJECT["tool"]["setuptools"]["package-dir"] == {"kaito_presets": "presets"}
    assert "packages" not in PYPROJECT["tool"]["setuptools"], "setup.py lists the packages"


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
