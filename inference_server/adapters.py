"""Discover LoRA adapters under the adapters directory and combine them into one active adapter.

KAITO mounts each adapter of ``Workspace.inference.adapters`` at ``/mnt/adapter/<name>/``. Every
sub-directory holding an ``adapter_config.json`` is loaded with peft and the set is combined with
``add_weighted_adapter`` by the configured strengths into a single adapter, which is then merged
into the base weights (so serving costs the same as the base model). ``svd`` is the default
because it accepts adapters of different ranks; ``linear`` needs equal ranks (peft raises, and we
turn that into a clear start-up error); ``cat`` concatenates.

Why failures are fatal: serving the base model when the user asked for an adapter would answer
every request wrongly while looking healthy. A broken adapter raises ``AdapterError``; the process
exits and the pod's status shows the reason.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import AdapterError

__all__ = ["ActiveAdapter", "apply_adapters", "discover_adapters", "resolve_strengths"]

log = logging.getLogger(__name__)

COMBINED_NAME = "kaito_combined"


@dataclass(frozen=True)
class ActiveAdapter:
    name: str
    path: Path
    rank: int
    strength: float


def discover_adapters(adapters_dir: Path) -> list[tuple[str, Path]]:
    """Sorted ``(name, path)`` of sub-directories with an ``adapter_config.json``."""
    if not adapters_dir.is_dir():
        return []
    found = []
    for child in sorted(adapters_dir.iterdir()):
        if child.is_dir() and (child / "adapter_config.json").is_file():
            found.append((child.name, child))
        elif child.is_dir() and not child.name.startswith("."):
            log.warning("Ignoring %s: no adapter_config.json", child)
    return found


def resolve_strengths(
    names: list[str], strengths: dict[str, float] | list[float]
) -> dict[str, float]:
    """Strength per adapter: named, positional (sorted names), or 1.0 when not given."""
    if isinstance(strengths, list):
        if len(strengths) != len(names):
            raise AdapterError(
                f"{len(strengths)} adapter strengths given for {len(names)} adapters {names}"
            )
        return dict(zip(names, strengths, strict=True))
    unknown = sorted(set(strengths) - set(names))
    if unknown:
        raise AdapterError(f"strengths given for adapters that are not present: {unknown}")
    return {name: strengths.get(name, 1.0) for name in names}


def _read_rank(name: str, path: Path) -> int:
    try:
        config = json.loads((path / "adapter_config.json").read_text())
    except (OSError, ValueError) as exc:
        raise AdapterError(f"adapter {name!r}: unreadable adapter_config.json: {exc}") from exc
    if not isinstance(config, dict) or config.get("peft_type", "LORA") != "LORA":
        raise AdapterError(f"adapter {name!r}: only LoRA adapters are supported")
    return int(config.get("r", 8))


def apply_adapters(
    model: Any,
    adapters_dir: Path,
    strengths: dict[str, float] | list[float],
    combination: str,
) -> tuple[Any, list[ActiveAdapter]]:
    """Load, combine and merge the adapters; return the (plain) model and what is active."""
    found = discover_adapters(adapters_dir)
    if not found:
        if strengths:
            raise AdapterError(f"adapter strengths given but no adapters in {adapters_dir}")
        return model, []
    names = [name for name, _ in found]
    by_name = resolve_strengths(names, strengths)
    active = [
        ActiveAdapter(name, path, _read_rank(name, path), by_name[name]) for name, path in found
    ]
    from peft import PeftModel

    peft_model: Any = None
    for adapter in active:
        try:
            if peft_model is None:
                peft_model = PeftModel.from_pretrained(
                    model, str(adapter.path), adapter_name=adapter.name
                )
            else:
                peft_model.load_adapter(str(adapter.path), adapter_name=adapter.name)
        except Exception as exc:  # peft raises many types; all mean "this adapter is broken"
            raise AdapterError(
                f"adapter {adapter.name!r} at {adapter.path} failed to load: {exc}"
            ) from exc
    try:
        peft_model.add_weighted_adapter(
            adapters=[a.name for a in active],
            weights=[a.strength for a in active],
            adapter_name=COMBINED_NAME,
            combination_type=combination,
        )
        peft_model.set_adapter(COMBINED_NAME)
        merged = peft_model.merge_and_unload()
    except Exception as exc:
        ranks = {a.name: a.rank for a in active}
        raise AdapterError(
            f"combining adapters {names} with {combination!r} failed (ranks {ranks}): {exc}"
        ) from exc
    log.info("Adapter added: %s", ", ".join(a.name for a in active))
    log.info(
        "Adapters combined with %s: %s",
        combination,
        ", ".join(f"{a.name}={a.strength:g}" for a in active),
    )
    return merged.eval(), active
