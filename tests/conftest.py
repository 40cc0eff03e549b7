"""Fixtures shared by every test tier: nothing reaches the Hugging Face hub, one tiny model
per session, and termination messages written where a test can read them.

The `slow` marker: besides the few tests that carry it themselves, it is set here on every
test that uses one of SLOW_FIXTURES (directly or through another fixture) and on the tests
SLOW_TESTS names. `make test-fast` (``pytest -m "not slow and not e2e"``) runs the rest: the
unit tests and the in-process tests that start no emulator, operator, registry, process or
model.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

#: Fixtures that start something: a test using one is `slow`.
SLOW_FIXTURES = {
    "kube_api": "the Kubernetes API emulator (component tests; operators run against it)",
    "tiny_model_dir": "torch and transformers, and a tiny model built with them",
    "registry": "an OCI registry process (Debian's docker-registry)",
    "arm": "the simulated ARM endpoint with its TLS server",
    "gemma_model": "the real Gemma 3 270M, converted from the packaged GGUF once per machine",
    "prepared_gemma": "the real Gemma 3 270M, converted from the packaged GGUF once per machine",
}

#: Tests that are slow without such a fixture, by file or file::test, with the reason.
SLOW_TESTS = {
    "tests/component/test_demo.py": "runs the demo in a process of its own",
    "tests/component/test_sandbox.py": "runs the sandbox daemon and the kaito command",
    "tests/component/test_rbac.py": "runs both operators against an emulator of their own",
    "tests/component/test_fetch_adapter.py": "runs the adapter fetcher against registry processes",
    "tests/component/test_hostile_fetches.py":
        "a hostile HTTP server; several cases wait out deadlines of about a second",
    "tests/inference/test_units.py::test_importing_does_no_work":
        "imports torch and transformers in a process",
    "tests/inference/test_engine.py::test_model_id_download_failure_is_a_startup_error":
        "loads transformers to try a download",
    "tests/tuning/test_config_data.py::test_unknown_library_keys_are_refused":
        "imports transformers and peft to read their argument names",
    "tests/unit/test_charts.py::test_every_object_is_valid_for_kubernetes_1_30_to_1_37":
        "checks every rendered object against eight Kubernetes versions' schemas",
    "tests/unit/test_cli_garbage.py::test_command_in_a_process_with_an_ascii_terminal":
        "runs the kaito command in a process",
    "tests/unit/test_packaging.py::test_installed_kaito_command_runs":
        "runs the installed kaito command in a process",
    "tests/unit/test_benchmark_cli.py": "runs the benchmark, which starts our server in a process",
    "tests/inference/test_openai_client.py": "runs python -m inference_server in a process",
}


def _check_slow_tests(root: Path) -> None:
    """Every entry of SLOW_TESTS names a file that exists and a test defined in it."""
    for entry in SLOW_TESTS:
        path, _, test = entry.partition("::")
        source = root / path
        if not source.is_file():
            raise pytest.UsageError(f"SLOW_TESTS in tests/conftest.py names {path}: no such file")
        if test and f"def {test}(" not in source.read_text():
            raise pytest.UsageError(f"SLOW_TESTS in tests/conftest.py names {entry}: no such test")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = Path(config.rootpath)
    _check_slow_tests(root)
    for item in items:
        path = item.path.relative_to(root).as_posix() if item.path.is_relative_to(root) else ""
        test = f"{path}::{item.name.split('[')[0]}"
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & SLOW_FIXTURES.keys() or path in SLOW_TESTS or test in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session", autouse=True)
def offline_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """`HF_HUB_OFFLINE=1` and a temporary `HF_HOME` for the whole session (and the processes
    tests start): no test may download weights."""
    keys = ("HF_HUB_OFFLINE", "HF_HOME", "TRANSFORMERS_VERBOSITY", "TOKENIZERS_PARALLELISM")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path_factory.mktemp("hf_home")),
                      TRANSFORMERS_VERBOSITY="error", TOKENIZERS_PARALLELISM="false")
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, offline_hub: None) -> Path:
    """A tiny random Phi-3 style model with a real tokenizer and chat template."""
    from inference_server.tiny_model import create_tiny_model

    return create_tiny_model(tmp_path_factory.mktemp("models") / "tiny-phi3", seed=0)


@pytest.fixture
def tlog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Termination messages go here instead of /dev/termination-log."""
    path = tmp_path / "termination-log"
    monkeypatch.setenv("KAITO_TERMINATION_LOG", str(path))
    return path
