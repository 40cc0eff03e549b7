"""Which model the sandbox's inference pods serve, on CPU.

A real small model when one is in the local Hugging Face cache, or can be downloaded (unless
`HF_HUB_OFFLINE` is set), or `KAITO_SANDBOX_MODEL` names a model folder; otherwise the tiny
random model the tests use, generated once. The sandbox says which, so nobody mistakes the
tiny model's gibberish for a bug.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Small instruct models that run on a laptop CPU, first found wins.
SMALL_MODELS = ("HuggingFaceTB/SmolLM2-135M-Instruct", "Qwen/Qwen2.5-0.5B-Instruct")


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


def choose_model(root: Path) -> tuple[Path, str]:
    """(model folder, a sentence saying which model and why)."""
    if env := os.environ.get("KAITO_SANDBOX_MODEL"):
        return Path(env), f"the model in KAITO_SANDBOX_MODEL ({env})"
    for repo in SMALL_MODELS:
        if (path := _cached(repo)) is not None:
            return path, f"{repo} from the local Hugging Face cache (a real small model)"
    if (path := _download(SMALL_MODELS[0])) is not None:
        return path, f"{SMALL_MODELS[0]}, downloaded into the Hugging Face cache"
    tiny = root / "models" / "tiny-phi3"
    if not (tiny / "config.json").exists():
        from inference_server.tiny_model import create_tiny_model

        create_tiny_model(tiny)
    return tiny, (
        "the tiny generated model (random weights: answers are gibberish). No small model "
        "is in the local Hugging Face cache and the hub cannot be reached; set "
        "KAITO_SANDBOX_MODEL to a model folder, or run "
        f"`huggingface-cli download {SMALL_MODELS[0]}` where the hub is reachable"
    )
