"""OpenAI requests → a ``Job``: the prompt's token ids and one ``SamplingParams`` per choice.

Why a module of its own: everything that decides what an OpenAI request means lives here, so
the routers only shape answers. In order: fields this server refuses (400 naming them), ``n``
against the server's cap, tools against the chat template (a template that never references
``tools`` cannot show them to the model: 400), template variables likewise, the prompt
(rendered and tokenized on the runtime's text pool; completions may send token ids instead),
``response_format`` and forced tool calls compiled into a constraint
(also on the text pool: compiling a schema takes milliseconds, never the event loop's), the
limits, and the per-choice parameters (seeded requests use ``seed + i`` for choice ``i``, so
the choices differ and are each reproducible). Completions' ``best_of`` generates that many
candidates with logprobs and keeps the ``n`` with the best mean token logprob.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from .chat_messages import template_messages
from .constrained import ConstraintSpec
from .engine import Engine, with_default_stops
from .errors import InvalidRequestError
from .protocol_openai import (
    ChatCompletionRequest,
    CompletionRequest,
    NamedToolChoice,
    _SamplingRequest,
)
from .sampling import SamplingParams
from .service import check_limits
from .state import Runtime
from .tools import ToolFormat, detect_format, forced_call_spec, template_supports_tools

__all__ = ["Job", "ToolPlan", "chat_job", "completion_job"]

_SEED_MODULUS = 2**63


@dataclass(frozen=True)
class ToolPlan:
    """How to read tool calls back from the output."""

    fmt: ToolFormat
    names: frozenset[str]
    parallel: bool


@dataclass(frozen=True)
class Job:
    prompt_ids: list[int]
    params: list[SamplingParams]
    """One per generated choice (``n``, or completions' ``best_of`` candidates)."""
    tools: ToolPlan | None = None
    keep: int | None = None
    """Return only this many, the best by mean token logprob (completions' ``best_of``)."""
    echo: str = ""
    """The prompt's text, put before each choice's text (completions' ``echo``)."""


def _refuse(req: _SamplingRequest, max_n: int, choices: int | None = None) -> None:
    refused = req.refused_fields()
    if refused:
        name, reason = refused[0]
        raise InvalidRequestError(reason if name in reason else f"{name}: {reason}", param=name)
    wanted = choices or req.n
    if wanted > max_n:
        param = "n" if wanted == req.n else "best_of"
        raise InvalidRequestError(f"{param}={wanted} is above this server's cap of {max_n} "
                                  "choices per request", param=param)


#: Variables ``apply_chat_template`` sets itself: not for ``chat_template_kwargs``.
_RESERVED_TEMPLATE_VARS = frozenset({
    "messages", "tools", "documents", "add_generation_prompt", "continue_final_message",
    "tokenize", "chat_template", "return_dict", "return_tensors", "return_assistant_tokens_mask",
    "padding", "truncation", "max_length", "tokenizer_kwargs",
})
_TEMPLATE_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


def _template_kwargs(req: ChatCompletionRequest, template: str | None) -> dict[str, Any]:
    """``reasoning_effort``, ``verbosity`` and ``chat_template_kwargs`` reach templates that
    read them; one the template never mentions would be dropped silently, so it is a 400."""
    sent: dict[str, tuple[Any, str]] = {
        name: (getattr(req, name), name) for name in ("reasoning_effort", "verbosity")
        if getattr(req, name) is not None}
    for name, value in (req.chat_template_kwargs or {}).items():
        param = f"chat_template_kwargs.{name[:64]}"
        if not _TEMPLATE_VAR.match(name) or name in _RESERVED_TEMPLATE_VARS:
            raise InvalidRequestError(f"{param}: not a variable a request may set in the chat "
                                      "template", param=param)
        sent[name] = (value, param)
    for name, (_, param) in sent.items():
        if not template or re.search(rf"\b{name}\b", template) is None:
            raise InvalidRequestError(f"{param} is not supported: this model's chat template "
                                      "does not use it", param=param)
    return {name: value for name, (value, _) in sent.items()}


def _constraint_spec(req: ChatCompletionRequest, tools: ToolPlan | None) -> ConstraintSpec | None:
    choice = req.effective_tool_choice()
    forced = tools is not None and (choice == "required" or isinstance(choice, NamedToolChoice))
    fmt = req.response_format
    wants_json = fmt is not None and fmt.type != "text"
    if forced and wants_json:
        raise InvalidRequestError("response_format json_object/json_schema cannot be combined "
                                  "with tool_choice 'required' or a named function",
                                  param="response_format")
    if forced and tools is not None:
        name = choice.function.name if isinstance(choice, NamedToolChoice) else None
        return forced_call_spec(tools.fmt, req.tools or [], name)
    if fmt is None or fmt.type == "text":
        return None
    schema = fmt.json_schema.json_schema if fmt.json_schema is not None else None
    return ConstraintSpec(json_schema=schema)


async def chat_job(req: ChatCompletionRequest, runtime: Runtime, engine: Engine) -> Job:
    _refuse(req, runtime.settings.max_n)
    choice = req.effective_tool_choice()
    tools: ToolPlan | None = None
    template = engine.chat_template_source(tools=bool(req.tools) and choice != "none")
    if req.tools and choice != "none":
        if not template_supports_tools(template):
            raise InvalidRequestError(
                "this model's chat template has no tool support (it never references 'tools'); "
                "start the server with a --chat-template that renders tools, or send no tools",
                param="tools")
        tools = ToolPlan(detect_format(template or ""),
                         frozenset(t.function.name for t in req.tools), req.parallel_tool_calls)
    definitions = [t.model_dump(exclude_none=True) for t in req.tools or []] if tools else None
    prompt_ids = await runtime.text.run(
        engine.encode_chat, template_messages(req.messages, template), definitions,
        _template_kwargs(req, template))
    spec = _constraint_spec(req, tools)
    try:
        constraint = await runtime.text.run(engine.compile_constraint, spec) if spec else None
    except InvalidRequestError as exc:
        param = "tools" if req.response_format is None or req.response_format.type == "text" \
            else "response_format"
        raise InvalidRequestError(f"{param}: {exc.message}", param=param) from None
    base = openai_params(req, len(prompt_ids), engine, runtime.settings.max_new_tokens_cap,
                         req.max_completion_tokens or req.max_tokens)
    base = dataclasses.replace(
        base, logprobs=req.logprobs, top_logprobs=req.top_logprobs or 0, constraint=constraint,
        skip_special_tokens=not (tools and tools.fmt.marker in engine.special_tokens()))
    return Job(prompt_ids, _per_choice(base, req.n, engine), tools)


async def completion_job(req: CompletionRequest, runtime: Runtime, engine: Engine) -> Job:
    _refuse(req, runtime.settings.max_n, req.candidates())
    prompt = req.single_prompt()
    if isinstance(prompt, str):
        prompt_ids = await runtime.text.run(engine.encode_prompt, prompt)
    else:
        prompt_ids = _checked_ids(prompt, engine.info.vocab_size)
    echo = ""
    if req.echo:
        echo = prompt if isinstance(prompt, str) else await runtime.text.run(
            engine.decode, prompt_ids)
    base = openai_params(req, len(prompt_ids), engine, runtime.settings.max_new_tokens_cap,
                         req.max_tokens)
    ranked = req.candidates() > req.n
    if req.logprobs is not None or ranked:
        base = dataclasses.replace(base, logprobs=True, top_logprobs=req.logprobs or 0)
    return Job(prompt_ids, _per_choice(base, req.candidates(), engine),
               keep=req.n if ranked else None, echo=echo)


def _checked_ids(ids: list[int], vocab_size: int | None) -> list[int]:
    """A prompt sent as token ids is used as given; each must be in the vocabulary."""
    bad = [t for t in ids if vocab_size and t >= vocab_size]
    if bad:
        raise InvalidRequestError(f"prompt: token id {bad[0]} is outside the vocabulary "
                                  f"(0..{(vocab_size or 0) - 1})", param="prompt")
    return list(ids)


def _per_choice(base: SamplingParams, n: int, engine: Engine) -> list[SamplingParams]:
    if not engine.supports_batching:
        _check_unbatched(base)
    if n == 1:
        return [base]
    if base.seed is None:
        return [base] * n
    return [dataclasses.replace(base, seed=(base.seed + i) % _SEED_MODULUS) for i in range(n)]


def _check_unbatched(params: SamplingParams) -> None:
    """Models served one at a time go through ``model.generate``, which lacks these features."""
    features = {"presence_penalty": params.presence_penalty != 0.0,
                "frequency_penalty": params.frequency_penalty != 0.0,
                "logprobs": params.logprobs,
                "response_format": params.constraint is not None}
    for name, used in features.items():
        if used:
            raise InvalidRequestError(
                f"{name} is not supported for this model: its cache layout makes the server "
                "generate through model.generate, one request at a time", param=name)


def openai_params(
    req: _SamplingRequest, prompt_len: int, engine: Engine, cap: int, max_tokens: int | None
) -> SamplingParams:
    """The sampling fields both endpoints share, with the limits applied."""
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
        stop=with_default_stops(req.stop_list(), engine.info),
        ignore_eos=req.ignore_eos,
        presence_penalty=req.presence_penalty,
        frequency_penalty=req.frequency_penalty,
    )
