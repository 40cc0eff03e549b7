"""Turn parsed ``/chat`` requests and their token ids into ``SamplingParams``; enforce the limits.

Why a separate module: both APIs share the limit rules (cap on generated tokens, context window;
``openai_service`` uses ``check_limits`` too) and the routers stay thin. All checks raise typed
errors from ``errors.py``. ``/chat``'s ``generate_kwargs`` is an allowlist
(``protocol.GenerateKwargs``): ``parse_generate_kwargs`` refuses unknown keys, wrong types and
out-of-range values with a 400 before anything is tokenized, and token ids are checked against
the model's vocabulary.

Limits: an explicit ``max_tokens`` (OpenAI) or ``max_new_tokens`` (``/chat``) above the configured
cap is a 400; so is a prompt that leaves no room in the context window, or an explicit limit that
does not fit next to the prompt. Limits the client did not set explicitly (OpenAI chat's "as much
as fits", ``/chat``'s default ``max_length`` of 200) are clamped to the cap and the context.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from .engine import Engine, with_default_stops
from .errors import ContextLengthError, InvalidRequestError, format_validation_errors
from .protocol import GenerateKwargs, KaitoChatRequest
from .sampling import SamplingParams

__all__ = [
    "chat_request_to_job",
    "check_limits",
    "parse_generate_kwargs",
]

#: ``generate_kwargs`` the batch loop implements itself (or that do not change the output:
#: the server pads on its own, and one sequence is all it returns); any other key set to a
#: non-default value sends the request through ``model.generate``.
_BATCHED_KEYS = frozenset({
    "max_length", "max_new_tokens", "min_length", "min_new_tokens", "do_sample", "temperature",
    "top_k", "top_p", "repetition_penalty", "seed", "stop_strings", "pad_token_id",
    "num_return_sequences", "use_cache", "early_stopping",
})
#: ``generate_kwargs`` that hold token ids (single ids, lists, or lists of lists).
_TOKEN_ID_KEYS = ("bad_words_ids", "suppress_tokens", "begin_suppress_tokens",
                  "forced_bos_token_id", "forced_eos_token_id", "pad_token_id", "eos_token_id")


def check_limits(
    prompt_len: int, requested: int | None, *, cap: int, context: int, param: str
) -> int:
    """Tokens to generate: the explicit request, or as many as fit; 400 when impossible."""
    room = context - prompt_len
    if room <= 0:
        raise ContextLengthError(
            f"this model's maximum context length is {context} tokens; the prompt has "
            f"{prompt_len} tokens and leaves no room to generate",
            param="messages" if param == "max_tokens" else "prompt",
        )
    if requested is None:
        return min(cap, room)
    if requested > cap:
        raise InvalidRequestError(
            f"{param}={requested} is above this server's cap of {cap} generated tokens",
            param=param,
        )
    if requested > room:
        raise ContextLengthError(
            f"this model's maximum context length is {context} tokens; the prompt has "
            f"{prompt_len} tokens and {param}={requested} does not fit",
            param=param,
        )
    return requested


def parse_generate_kwargs(raw: dict[str, Any]) -> GenerateKwargs:
    """``/chat``'s ``generate_kwargs`` → the typed allowlist; 400 naming what is wrong."""
    allowed = sorted(GenerateKwargs.model_fields)
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        shown = ", ".join(repr(key[:60]) for key in unknown[:3])
        more = f" (and {len(unknown) - 3} more)" if len(unknown) > 3 else ""
        raise InvalidRequestError(
            f"unknown generate_kwargs key(s) {shown}{more}; allowed keys: {', '.join(allowed)}",
            param=f"generate_kwargs.{unknown[0][:60]}",
        )
    try:
        return GenerateKwargs.model_validate(raw)
    except ValidationError as exc:
        errors = [{**e, "loc": ("generate_kwargs", *e.get("loc", ()))} for e in exc.errors()]
        message, param = format_validation_errors(errors)
        raise InvalidRequestError(message, param=param) from None


def _check_token_ids(gk: GenerateKwargs, vocab_size: int | None) -> None:
    """Token ids in ``generate_kwargs`` must exist in the model's vocabulary."""
    if not vocab_size:
        return
    for name in _TOKEN_ID_KEYS:
        value = getattr(gk, name)
        if value is None:
            continue
        flat: list[int] = []
        for item in value if isinstance(value, list) else [value]:
            flat.extend(item if isinstance(item, list) else [item])
        bad = [t for t in flat if t >= vocab_size]
        if bad:
            raise InvalidRequestError(
                f"generate_kwargs.{name}: token id {bad[0]} is outside the vocabulary "
                f"(0..{vocab_size - 1})",
                param=f"generate_kwargs.{name}",
            )


def chat_request_to_job(
    req: KaitoChatRequest, gk: GenerateKwargs, prompt_ids: list[int], engine: Engine, cap: int
) -> tuple[SamplingParams, dict[str, Any] | None]:
    """``/chat`` → (params, options for ``model.generate`` or None if batchable)."""
    _check_token_ids(gk, engine.info.vocab_size)
    n = len(prompt_ids)
    context = engine.info.context_length
    if gk.max_new_tokens is not None:
        limit = check_limits(n, gk.max_new_tokens, cap=cap, context=context,
                             param="max_new_tokens")
    else:
        check_limits(n, None, cap=cap, context=context, param="max_length")  # prompt fits?
        wanted = None if gk.max_length is None else gk.max_length - n
        if wanted is not None and wanted <= 0:
            raise ContextLengthError(
                f"max_length={gk.max_length} leaves no room after the {n}-token prompt",
                param="max_length",
            )
        limit = check_limits(n, None, cap=min(cap, wanted or cap), context=context,
                             param="max_length")
    min_new = gk.min_new_tokens if gk.min_new_tokens is not None else max(0, gk.min_length - n)
    params = SamplingParams(
        max_new_tokens=limit,
        min_new_tokens=min(min_new, limit),
        do_sample=gk.do_sample,
        temperature=gk.temperature,
        top_k=gk.top_k,
        top_p=gk.top_p,
        repetition_penalty=gk.repetition_penalty,
        seed=gk.seed,
        stop=with_default_stops(gk.stop_list(), engine.info),
        clean_up=req.clean_up_tokenization_spaces,
    )
    passthrough = {
        key: getattr(gk, key)
        for key in gk.model_fields_set - _BATCHED_KEYS
        if getattr(gk, key) != GenerateKwargs.model_fields[key].default
    }
    if not passthrough:
        return params, None
    options: dict[str, Any] = {
        **passthrough,
        "max_new_tokens": limit,
        "min_new_tokens": params.min_new_tokens,
        "do_sample": gk.do_sample,
        "num_beams": gk.num_beams,
        "early_stopping": gk.early_stopping,
        "temperature": gk.temperature,
        "top_k": gk.top_k,
        "top_p": gk.top_p,
        "typical_p": gk.typical_p,
        "repetition_penalty": gk.repetition_penalty,
        "seed": gk.seed,
    }
    _validate_generation_options(options)
    return params, options


def _validate_generation_options(options: dict[str, Any]) -> None:
    """Let transformers judge the combination now, so a bad one is a 400 and not a 500."""
    from transformers import GenerationConfig

    try:
        GenerationConfig(**{k: v for k, v in options.items() if k != "seed"}).validate()
    except (ValueError, TypeError) as exc:
        raise InvalidRequestError(f"invalid generate_kwargs: {exc}",
                                  param="generate_kwargs") from exc
