"""Turn parsed API requests into token ids and ``SamplingParams``; enforce the limits.

Why a separate module: both APIs share the limit rules (cap on generated tokens, context window)
and the routers stay thin. All checks raise typed errors from ``errors.py``.

Limits: an explicit ``max_tokens`` (OpenAI) or ``max_new_tokens`` (``/chat``) above the configured
cap is a 400; so is a prompt that leaves no room in the context window, or an explicit limit that
does not fit next to the prompt. Limits the client did not set explicitly (OpenAI chat's "as much
as fits", ``/chat``'s default ``max_length`` of 200) are clamped to the cap and the context.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from .engine import Engine
from .errors import ContextLengthError, InvalidRequestError
from .protocol import ChatMessage, GenerateKwargs, KaitoChatRequest, _SamplingRequest
from .sampling import SamplingParams

__all__ = ["chat_request_to_job", "check_limits", "messages_to_dicts", "openai_params"]

#: ``generate_kwargs`` the batch loop implements itself; anything else goes to ``model.generate``.
_BATCHED_KEYS = frozenset(GenerateKwargs.model_fields) | {"pad_token_id", "eos_token_id"}


@lru_cache(maxsize=1)
def _generation_config_keys() -> frozenset[str]:
    from transformers import GenerationConfig

    keys = set(GenerationConfig().to_dict())
    return frozenset(k for k in keys if not k.startswith("_") and k != "transformers_version")


def messages_to_dicts(messages: list[ChatMessage]) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.text()} for m in messages]


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


def openai_params(
    req: _SamplingRequest, prompt_len: int, engine: Engine, cap: int, max_tokens: int | None
) -> SamplingParams:
    for name in ("presence_penalty", "frequency_penalty"):
        if getattr(req, name) != 0.0:
            raise InvalidRequestError(f"{name} is not supported", param=name)
    limit = check_limits(
        prompt_len, max_tokens, cap=cap, context=engine.info.context_length, param="max_tokens"
    )
    if req.min_tokens > limit:
        raise InvalidRequestError(
            f"min_tokens={req.min_tokens} is above max_tokens={limit}", param="min_tokens"
        )
    return SamplingParams(
        max_new_tokens=limit,
        min_new_tokens=req.min_tokens,
        do_sample=req.temperature > 0.0,
        temperature=req.temperature if req.temperature > 0.0 else 1.0,
        top_k=max(0, req.top_k),
        top_p=req.top_p,
        repetition_penalty=req.repetition_penalty,
        seed=req.seed,
        stop=tuple(req.stop_list()),
        ignore_eos=req.ignore_eos,
    )


def chat_request_to_job(
    req: KaitoChatRequest, engine: Engine, cap: int
) -> tuple[list[int], SamplingParams, dict[str, Any] | None]:
    """``/chat`` → (prompt ids, params, options for ``model.generate`` or None if batchable)."""
    gk = req.generate_kwargs
    extra = dict(gk.model_extra or {})
    unknown = sorted(set(extra) - _generation_config_keys())
    if unknown:
        raise InvalidRequestError(
            f"unknown generate_kwargs key(s): {', '.join(unknown)}", param="generate_kwargs"
        )
    if req.messages is not None:
        prompt_ids = engine.encode_chat(messages_to_dicts(req.messages))
    else:
        prompt_ids = engine.encode_prompt(req.prompt or "")
    n = len(prompt_ids)
    context = engine.info.context_length
    if gk.max_new_tokens is not None:
        limit = check_limits(n, gk.max_new_tokens, cap=cap, context=context,
                             param="max_new_tokens")
    else:
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
        clean_up=req.clean_up_tokenization_spaces,
    )
    _check_passthrough_types(extra)
    needs_generate = gk.num_beams > 1 or gk.typical_p < 1.0 or bool(
        set(extra) - _BATCHED_KEYS
    )
    if not needs_generate:
        return prompt_ids, params, None
    options: dict[str, Any] = {
        **extra,
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
    return prompt_ids, params, options


#: Types of the common pass-through keys (``GenerationConfig`` has no annotations to read).
_PASSTHROUGH_TYPES: dict[str, type | tuple[type, ...]] = {
    "no_repeat_ngram_size": int, "encoder_no_repeat_ngram_size": int, "num_beam_groups": int,
    "num_return_sequences": int, "forced_bos_token_id": int, "length_penalty": (int, float),
    "diversity_penalty": (int, float), "epsilon_cutoff": (int, float),
    "eta_cutoff": (int, float), "min_p": (int, float), "max_time": (int, float),
    "renormalize_logits": bool, "remove_invalid_values": bool, "use_cache": bool,
    "bad_words_ids": list, "suppress_tokens": list, "begin_suppress_tokens": list,
    "sequence_bias": (list, dict), "forced_eos_token_id": (int, list),
}
#: Keys that change what ``generate`` returns or need objects a JSON body cannot carry.
_REFUSED_KEYS = frozenset({
    "return_dict_in_generate", "output_attentions", "output_hidden_states", "output_scores",
    "output_logits", "streamer", "assistant_model", "cache_config", "compile_config",
    "watermarking_config", "stop_strings", "prefill_chunk_size",
})


def _check_passthrough_types(extra: dict[str, Any]) -> None:
    """Refuse pass-through keys we cannot honour and values of the wrong type, before the model."""
    for key, value in extra.items():
        if key in _REFUSED_KEYS:
            raise InvalidRequestError(f"generate_kwargs.{key} is not supported by this server",
                                      param=f"generate_kwargs.{key}")
        expected = _PASSTHROUGH_TYPES.get(key)
        if expected is None:
            continue
        wrong_bool = isinstance(value, bool) and expected is not bool
        if wrong_bool or not isinstance(value, expected):
            names = expected.__name__ if isinstance(expected, type) else "/".join(
                t.__name__ for t in expected)
            raise InvalidRequestError(
                f"generate_kwargs.{key} must be of type {names}, got {value!r}",
                param=f"generate_kwargs.{key}",
            )


def _validate_generation_options(options: dict[str, Any]) -> None:
    """Let transformers judge pass-through keys now, so a bad value is a 400 and not a 500."""
    from transformers import GenerationConfig

    try:
        GenerationConfig(**{k: v for k, v in options.items() if k != "seed"}).validate()
    except (ValueError, TypeError) as exc:
        raise InvalidRequestError(f"invalid generate_kwargs: {exc}",
                                  param="generate_kwargs") from exc
