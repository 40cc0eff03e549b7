"""The model boundary: an ``Engine`` protocol and its transformers implementation.

Why a protocol: the scheduler and the routers only need "tokenize, run a batch step, decode";
keeping transformers behind this interface lets tests and the benchmark hand ``create_app`` an
engine they built (or a slow/blocking one) and keeps model loading out of the web layer.

``TransformersEngine.load`` is the only place that touches the hub, the tokenizer files, the
weights and the adapters. It runs in the FastAPI lifespan (in a worker thread), never at import.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from . import kvbatch
from .adapters import ActiveAdapter, apply_adapters
from .constrained import Constraint, ConstraintCompiler, ConstraintSpec
from .errors import InvalidRequestError, StartupError
from .fastdecode import LeanDecoder
from .loading import default_stop_strings, load_weights
from .settings import ServerSettings
from .stop_text import TextStopCriteria
from .token_text import TokenText

__all__ = [
    "Engine", "EngineInfo", "TransformersEngine", "resolve_model_path", "with_default_stops",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineInfo:
    model_name: str
    model_path: str
    context_length: int
    adapters: list[ActiveAdapter] = field(default_factory=list)
    adapter_combination: str | None = None
    created: int = field(default_factory=lambda: int(time.time()))
    vocab_size: int | None = None
    """Token ids the model accepts are ``0 .. vocab_size - 1`` (None: not known)."""
    default_stops: tuple[str, ...] = ()
    """The model folder's ``generation_config.stop_strings``: added to every request's stops."""


def with_default_stops(stops: Sequence[str], info: EngineInfo) -> tuple[str, ...]:
    """A request's stop strings plus the model's defaults (which a request cannot remove)."""
    merged = list(stops)
    merged.extend(stop for stop in info.default_stops if stop not in merged)
    return tuple(merged)


class Engine(Protocol):
    """What the scheduler and the routers need from a model."""

    info: EngineInfo
    eos_token_ids: frozenset[int]
    supports_batching: bool

    def encode_prompt(self, text: str) -> list[int]: ...

    def encode_chat(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None,
        template_kwargs: dict[str, Any] | None = None,
    ) -> list[int]: ...

    def chat_template_source(self, *, tools: bool = False) -> str | None: ...

    def token_strings(self, ids: list[int]) -> list[str]: ...

    def token_bytes(self, ids: list[int]) -> list[bytes]: ...

    def special_tokens(self) -> frozenset[str]: ...

    def compile_constraint(self, spec: ConstraintSpec) -> Constraint: ...

    def decode(
        self, ids: list[int], *, skip_special_tokens: bool = True, clean_up: bool = False
    ) -> str: ...

    def new_batch(self) -> kvbatch.KVBatch: ...

    def prefill(self, batch: kvbatch.KVBatch, prompts: list[list[int]]) -> torch.Tensor: ...

    def decode_step(self, batch: kvbatch.KVBatch, tokens: torch.Tensor) -> torch.Tensor: ...

    def generate(self, prompt_ids: list[int], options: dict[str, Any]) -> list[int]: ...


def resolve_model_path(settings: ServerSettings) -> Path:
    """The local model directory, downloading ``--model-id`` first (tqdm progress on stderr)."""
    if settings.model_dir is not None:
        folder = settings.model_dir
        if settings.gguf_file is None and not (folder / "config.json").is_file() and not (
            folder.is_dir() and any(folder.glob("*.gguf"))
        ):
            raise StartupError(
                f"{folder} has neither config.json nor a .gguf file: not a model directory"
            )
        return folder
    from huggingface_hub import snapshot_download

    log.info(
        "Downloading %s (revision %s) into %s",
        settings.model_id,
        settings.revision or "main",
        settings.cache_dir or "the default cache",
    )
    try:
        path = snapshot_download(
            repo_id=str(settings.model_id),
            revision=settings.revision,
            cache_dir=str(settings.cache_dir) if settings.cache_dir else None,
        )
    except Exception as exc:  # hub, network and offline-mode errors all end the start-up
        raise StartupError(
            f"could not download {settings.model_id} (revision {settings.revision or 'main'}): "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    log.info("Downloaded %s to %s", settings.model_id, path)
    return Path(path)


def _read_template(value: str) -> str:
    """``--chat-template`` is a file path when such a file exists, else the template itself."""
    path = Path(value)
    try:
        if len(value) < 4096 and path.is_file():
            return path.read_text()
    except OSError:
        pass
    return value


def _leave_a_core_to_the_event_loop() -> None:
    """Intra-op threads: one per core but one, unless ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` say.

    The model thread's matrix products would use every core, and the event loop (HTTP, SSE,
    detokenization, overlapping the next step) would then preempt one of their threads, so every
    parallel region waits for it: on 2 cores, 1 thread served 1016-1055 tok/s at concurrency 16
    where 2 threads served 761-896 (the small benchmark shape, a busy machine).
    """
    if os.environ.get("OMP_NUM_THREADS") or os.environ.get("MKL_NUM_THREADS"):
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(max(1, (cores or 1) - 1))


class TransformersEngine:
    """A causal LM with its tokenizer and (merged) LoRA adapters."""

    def __init__(self, model: Any, tokenizer: Any, info: EngineInfo) -> None:
        self.model = model
        self.tokenizer = tokenizer
        vocab = getattr(model.config, "vocab_size", None)
        if info.vocab_size is None and isinstance(vocab, int) and vocab > 0:
            info = dataclasses.replace(info, vocab_size=vocab)
        config_stops = default_stop_strings(model.generation_config)
        if config_stops and not info.default_stops:
            info = dataclasses.replace(info, default_stops=config_stops)
        # `generate` ends at them through stop_text, not transformers' slow vocabulary table.
        model.generation_config.stop_strings = None
        self.info = info
        eos: set[int] = set()
        for source in (model.generation_config.eos_token_id, tokenizer.eos_token_id):
            if isinstance(source, int):
                eos.add(source)
            elif source:
                eos.update(int(t) for t in source)
        self.eos_token_ids = frozenset(eos)
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else min(eos, default=0))
        self._sliding_window: int | None = None
        self._lean: LeanDecoder | None = None
        self.supports_batching = self._cache_is_plain()
        if self.supports_batching:
            self._lean = self._checked_lean_decoder()
        self._token_text_cache: TokenText | None = None
        self._constraints = ConstraintCompiler(
            tokenizer, self.info.vocab_size or len(tokenizer), self.eos_token_ids
        )

    @classmethod
    def load(cls, settings: ServerSettings) -> TransformersEngine:
        _leave_a_core_to_the_event_loop()
        path = resolve_model_path(settings)
        started = time.perf_counter()
        device_map = settings.device_map
        if device_map is None and torch.cuda.is_available():
            device_map = "cuda"
        tokenizer, model = load_weights(path, settings, device_map)
        if settings.chat_template:
            tokenizer.chat_template = _read_template(settings.chat_template)
        model, adapters = apply_adapters(
            model, settings.adapters_dir, settings.adapter_strengths, settings.adapter_combination
        )
        context = int(getattr(model.config, "max_position_embeddings", 0) or 0)
        if not context:
            context = int(min(tokenizer.model_max_length, 1_000_000))
        info = EngineInfo(
            model_name=settings.model_name,
            model_path=str(path),
            context_length=context,
            adapters=adapters,
            adapter_combination=settings.adapter_combination if adapters else None,
        )
        engine = cls(model, tokenizer, info)  # reads the folder's default stop strings
        if engine.info.default_stops:
            log.info("Default stop strings (from generation_config.json, added to every "
                     "request's stops): %s", list(engine.info.default_stops))
        log.info(
            "Loaded %s from %s in %.1fs (context %d, dtype %s, device %s)",
            info.model_name, path, time.perf_counter() - started, context,
            next(model.parameters()).dtype, model.device,
        )
        return engine

    def _cache_is_plain(self) -> bool:
        """Continuous batching needs full attention (one window for all layers at most): probe.

        The probe prefills one token into a ``DynamicCache`` (its layers must all be plain
        ``DynamicLayer``s) and decodes one step through the slot cache, so an architecture that
        cannot take it is served one request at a time instead of failing later.
        """
        config = self.model.config
        kinds = set(getattr(config, "layer_types", None) or ())
        if kinds - {"full_attention", "sliding_attention"} or len(kinds) > 1:
            log.warning("Model mixes attention kinds %s; serving one at a time", sorted(kinds))
            return False
        window = getattr(config, "sliding_window", None)
        if kinds == {"full_attention"} or getattr(config, "use_sliding_window", True) is False:
            window = None
        self._sliding_window = int(window) if window else None
        try:
            cache, _ = kvbatch.prefill_cache(self.model, [[self.pad_id]], self.pad_id)
            plain = all(type(layer).__name__ == "DynamicLayer" for layer in cache.layers)
            if plain:
                batch = self.new_batch()
                batch.add(cache, [1])
                kvbatch.decode_step(self.model, batch, torch.tensor([self.pad_id]))
        except Exception:  # pragma: no cover - exotic architectures
            log.warning("Batched decoding probe failed; serving one request at a time",
                        exc_info=True)
            return False
        if not plain:
            log.warning("Model cache is not a plain dynamic cache; serving one at a time")
        return plain

    def _checked_lean_decoder(self) -> LeanDecoder | None:
        """The lean decode step, if it gives the transformers forward's logits on a probe."""
        return LeanDecoder.verified(self.model, self.new_batch, self.pad_id,
                                    self.info.vocab_size or self.pad_id + 1)

    # ------------------------------------------------------------------ text

    def encode_prompt(self, text: str) -> list[int]:
        return self._tokenize(text, add_special_tokens=True, param="prompt")

    def _tokenize(self, text: str, *, add_special_tokens: bool, param: str) -> list[int]:
        """Token ids of ``text``; text the tokenizer cannot take (lone surrogates) is a 400."""
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidRequestError(
                f"{param} is not valid Unicode text: {exc.reason} at position {exc.start}",
                param=param,
            ) from None
        return list(self.tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])

    def encode_chat(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None,
        template_kwargs: dict[str, Any] | None = None,
    ) -> list[int]:
        """The rendered chat template's ids; ``tools`` (OpenAI's definitions) go to the template."""
        if not self.tokenizer.chat_template:
            raise InvalidRequestError(
                "the model has no chat template; start the server with --chat-template",
                param="messages",
            )
        try:
            text = self.tokenizer.apply_chat_template(
                messages, tools=tools, add_generation_prompt=True, tokenize=False,
                **(template_kwargs or {}),
            )
        except Exception as exc:  # jinja2 errors and raise_exception() in templates
            raise InvalidRequestError(f"chat template rejected the messages: {exc}",
                                      param="messages") from exc
        return self._tokenize(text, add_special_tokens=False, param="messages")

    def decode(
        self, ids: list[int], *, skip_special_tokens: bool = True, clean_up: bool = False
    ) -> str:
        """The text of ``ids``. Fast tokenizers without clean-up decode in Rust directly: the
        same text as ``tokenizer.decode``, without its per-id Python conversion (3x cheaper)."""
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is not None and not clean_up:
            return str(backend.decode(ids, skip_special_tokens=skip_special_tokens))
        return str(
            self.tokenizer.decode(
                ids, skip_special_tokens=skip_special_tokens, clean_up_tokenization_spaces=clean_up
            )
        )

    def chat_template_source(self, *, tools: bool = False) -> str | None:
        """The Jinja source ``encode_chat`` renders (its ``tool_use`` variant when ``tools``)."""
        template = self.tokenizer.chat_template
        if isinstance(template, dict):
            chosen = template.get("tool_use") if tools else None
            return str(chosen or template.get("default") or "") or None
        return str(template) if template else None

    def token_strings(self, ids: list[int]) -> list[str]:
        """Each token's text on its own (for logprobs); see ``token_text``."""
        return self._token_text().token_strings(ids)

    def token_bytes(self, ids: list[int]) -> list[bytes]:
        """Each token's exact bytes (for logprobs); see ``token_text``."""
        return self._token_text().token_bytes(ids)

    def special_tokens(self) -> frozenset[str]:
        """The text of the tokenizer's special tokens (``decode`` drops them by default)."""
        return self._token_text().special

    def _token_text(self) -> TokenText:
        if self._token_text_cache is None:
            self._token_text_cache = TokenText(self.tokenizer)
        return self._token_text_cache

    def compile_constraint(self, spec: ConstraintSpec) -> Constraint:
        """``spec`` compiled for this tokenizer (blocking: call it on the text pool)."""
        return self._constraints.compile(spec)

    # ----------------------------------------------------------------- model

    def new_batch(self) -> kvbatch.KVBatch:
        """An empty slot cache for this model (the scheduler keeps one for its running rows)."""
        return kvbatch.KVBatch(int(self.model.config.num_hidden_layers), self._sliding_window)

    def prefill(self, batch: kvbatch.KVBatch, prompts: list[list[int]]) -> torch.Tensor:
        return kvbatch.prefill(self.model, batch, prompts, self.pad_id)

    def decode_step(self, batch: kvbatch.KVBatch, tokens: torch.Tensor) -> torch.Tensor:
        return kvbatch.decode_step(self.model, batch, tokens, self._lean)

    def generate(self, prompt_ids: list[int], options: dict[str, Any]) -> list[int]:
        """Plain ``model.generate`` for what the batch loop does not do (beam search, ...)."""
        from transformers import GenerationConfig, StoppingCriteriaList

        options = dict(options)
        seed = options.pop("seed", None)
        if seed is not None:
            torch.manual_seed(int(seed))
        config = GenerationConfig(
            **{**self.model.generation_config.to_diff_dict(), **options}
        )
        config.pad_token_id = self.pad_id
        # Stop strings (the folder's defaults and any in options) end generation early; the
        # scheduler cuts the text at them anyway. See stop_text for why not transformers' own.
        stops = with_default_stops(default_stop_strings(config), self.info)
        criteria = StoppingCriteriaList(
            [TextStopCriteria(self.decode, len(prompt_ids), stops)] if stops else []
        )
        ids = torch.tensor([prompt_ids], dtype=torch.long, device=self.model.device)
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=config,
                stopping_criteria=criteria,
            )
        return [int(t) for t in out[0, len(prompt_ids):].tolist()]
