"""The layer contracts are configured for every package and `make test` checks them."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from tests.support.setup_py import setup_top_level

ROOT = Path(__file__).resolve().parents[2]
IMPORTLINTER = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
CONTRACTS = {c["id"]: c for c in IMPORTLINTER["contracts"]}
PRODUCT = {"kaito_operator", "kaito_egress", "kaito_workload", "inference_server", "tuning_job"}


def code_packages() -> set[str]:
    return {pkg for pkg, folder in setup_top_level().items() if (ROOT / folder / "__init__.py").exists()}


def test_every_package_is_in_the_import_graph():
    assert set(IMPORTLINTER["root_packages"]) == code_packages()
    assert IMPORTLINTER["include_external_packages"] is True
    assert set(CONTRACTS["no-cycles"]["ancestors"]) == code_packages()


def test_the_contracts_of_issue_12_are_there():
    layers = CONTRACTS["operator-layers"]
    assert layers["type"] == "layers" and layers["containers"] == ["kaito_operator"]
    order = [{name.strip(" ()") for name in re.split(r"[|:]", layer)} for layer in layers["layers"]]
    assert order[0] == {"cli"} and {"api", "catalog"} <= order[-1]
    assert order.index({"workspace", "provisioner"}) < order.index({"controller", "cache"})
    assert order.index({"controller", "cache"}) < next(
        i for i, layer in enumerate(order) if "validation" in layer)

    sandbox = CONTRACTS["product-without-sandbox"]
    assert set(sandbox["source_modules"]) == PRODUCT
    assert "kaito_sandbox" in sandbox["forbidden_modules"]
    kube = CONTRACTS["kube-client"]
    assert {"kubernetes", "aiohttp"} <= set(kube["forbidden_modules"])
    assert set(kube["source_modules"]) == PRODUCT
    assert all(i.startswith("kaito_operator.kube -> ") for i in kube["ignore_imports"])
    azure = CONTRACTS["azure-sdk"]
    assert azure["forbidden_modules"] == ["azure"] and set(azure["source_modules"]) == PRODUCT
    assert azure["ignore_imports"] == ["kaito_operator.provisioner.azure -> azure"]
    torch = CONTRACTS["torch-in-pods"]
    assert "torch" in torch["forbidden_modules"]
    assert set(torch["source_modules"]) == PRODUCT - {"inference_server", "tuning_job"}
    assert not torch.get("allow_indirect_imports", False)


def make_rules() -> dict[str, tuple[list[str], list[str]]]:
    """target -> (prerequisites, recipe lines) of the Makefile's plain rules."""
    rules: dict[str, tuple[list[str], list[str]]] = {}
    current: list[str] | None = None
    for line in (ROOT / "Makefile").read_text().splitlines():
        if line.startswith("\t") and current is not None:
            current.append(line.strip())
            continue
        rule = re.match(r"^([\w.$()/-]+)\s*:(?!=)\s*(.*)$", line)
        if rule and not line.startswith("."):
            current = []
            prereqs = rule.group(2).replace("|", " ").split()
            rules[rule.group(1)] = (prereqs, current)
        elif not line.startswith("\t"):
            current = None
    return rules


def test_make_test_runs_the_contracts():
    rules = make_rules()
    seen, todo, recipes = set(), ["test"], []
    while todo:
        target = todo.pop()
        if target in seen or target not in rules:
            continue
        seen.add(target)
        prereqs, recipe = rules[target]
        todo += prereqs
        recipes += recipe
    assert any(line.split()[0].endswith("/lint-imports") for line in recipes if line), recipes
    assert "contracts" in rules["test"][0]
