"""Which packages a build carries: every one of PACKAGES whose folder is in the source tree.

The repository has them all, so `pip install -e .` and a wheel built from a checkout carry
everything. An image build copies only the folders its processes import (Dockerfile.operator:
kaito_operator, kaito_egress, presets), and the same `pip install .` then carries only those.
The rest of the configuration is in pyproject.toml.
"""

from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent

#: Top-level package -> folder. `kaito_presets` is the data-only presets/ folder.
TOP_LEVEL = {
    "kaito_operator": "kaito_operator",
    "kaito_egress": "kaito_egress",
    "kaito_workload": "kaito_workload",
    "inference_server": "inference_server",
    "tuning_job": "tuning_job",
    "kaito_sandbox": "kaito_sandbox",
    "kaito_presets": "presets",
}


#: Packages of data files only (no __init__.py): every folder under them is a package.
DATA_ONLY = {"kaito_presets"}


def present_packages() -> list[str]:
    found = []
    for package, folder in TOP_LEVEL.items():
        base = ROOT / folder
        if package in DATA_ONLY:
            dirs = [base, *(d for d in sorted(base.rglob("*")) if d.is_dir())]
        else:
            dirs = [init.parent for init in sorted(base.rglob("__init__.py"))]
        for d in dirs:
            if "__pycache__" not in d.parts:
                found.append(".".join([package, *d.relative_to(base).parts]))
    return found


setup(packages=present_packages())
