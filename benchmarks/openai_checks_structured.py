"""Checks of ``openai_conformance.py`` for chat: JSON mode, tools, accepted and refused fields.

Registered into ``openai_checks.CHECKS`` on import (after the basic chat checks).
"""

from __future__ import annotations

import json
from typing import Any, Literal

import jsonschema
from openai_checks import (
    MODEL,
    MSG,
    SCHEMA,
    TIME,
    WEATHER,
    Ctx,
    chat,
    chat_stream,
    chat_text,
    check,
    joined,
    same_as_plain,
    streamed_text,
)
from pydantic import BaseModel

__all__: list[str] = []


# -- chat: response_format -------------------------------------------------------------------

@check("chat: response_format text")
def _format_text(ctx: Ctx) -> None:
    assert chat_text(ctx, response_format={"type": "text"}) == chat_text(ctx)


@check("chat: response_format json_object")
def _json_object(ctx: Ctx) -> None:
    r = chat(ctx, max_tokens=120, response_format={"type": "json_object"})
    assert isinstance(json.loads(r.choices[0].message.content), dict)


@check("chat: response_format json_schema")
def _json_schema(ctx: Ctx) -> None:
    fmt: Any = {"type": "json_schema", "json_schema": {"name": "p", "schema": SCHEMA}}
    jsonschema.validate(json.loads(chat_text(ctx, max_tokens=60, response_format=fmt)), SCHEMA)


@check("chat: response_format json_schema streamed, sampled")
def _json_schema_stream(ctx: Ctx) -> None:
    fmt: Any = {"type": "json_schema", "json_schema": {"name": "p", "schema": SCHEMA,
                                                       "strict": True}}
    chunks = chat_stream(ctx, max_tokens=60, temperature=1.0, seed=1, response_format=fmt)
    jsonschema.validate(json.loads(streamed_text(chunks)), SCHEMA)


class Verdict(BaseModel):
    label: Literal["yes", "no"]
    certain: bool


@check("chat: client.chat.completions.parse (pydantic model)")
def _parse(ctx: Ctx) -> None:
    r = ctx.client.chat.completions.parse(model=MODEL, messages=MSG, temperature=0,
                                          max_tokens=40, response_format=Verdict)
    assert isinstance(r.choices[0].message.parsed, Verdict)


@check("chat: stream helper client.chat.completions.stream (pydantic model)")
def _stream_helper(ctx: Ctx) -> None:
    with ctx.client.chat.completions.stream(model=MODEL, messages=MSG, max_tokens=40,
                                            temperature=0, response_format=Verdict) as stream:
        deltas = "".join(e.delta for e in stream if e.type == "content.delta")
        final = stream.get_final_completion()
    assert deltas == final.choices[0].message.content
    assert isinstance(final.choices[0].message.parsed, Verdict)


@check("chat: response_format unknown type", "response_format")
def _format_yaml(ctx: Ctx) -> None:
    chat(ctx, response_format={"type": "yaml"})


@check("chat: json_schema the library refuses", "response_format")
def _bad_schema(ctx: Ctx) -> None:
    chat(ctx, response_format={"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "object", "properties": {"a": {"$ref": "#/nowhere"}},
                                "required": ["a"]}}})


# -- chat: tools -----------------------------------------------------------------------------

def _calls(r: Any) -> list[Any]:
    calls = r.choices[0].message.tool_calls or []
    for call in calls:
        tool = {"get_weather": WEATHER, "get_time": TIME}[call.function.name]
        jsonschema.validate(json.loads(call.function.arguments), tool["function"]["parameters"])
        assert call.id and call.type == "function"
    return calls


@check("chat: tools, tool_choice auto")
def _tools_auto(ctx: Ctx) -> None:
    r = chat(ctx, tools=[WEATHER, TIME], max_tokens=40)
    calls = _calls(r)
    assert (r.choices[0].finish_reason == "tool_calls") == bool(calls)


@check("chat: tool_choice required")
def _tools_required(ctx: Ctx) -> None:
    r = chat(ctx, tools=[WEATHER, TIME], tool_choice="required", max_tokens=None)
    assert len(_calls(r)) == 1 and r.choices[0].finish_reason == "tool_calls"


@check("chat: tool_choice named function")
def _tools_named(ctx: Ctx) -> None:
    r = chat(ctx, tools=[WEATHER, TIME], max_tokens=None,
             tool_choice={"type": "function", "function": {"name": "get_time"}})
    assert [c.function.name for c in _calls(r)] == ["get_time"]


@check("chat: tool_choice none (tools not shown)")
def _tools_none(ctx: Ctx) -> None:
    r = chat(ctx, tools=[WEATHER], tool_choice="none")
    assert not r.choices[0].message.tool_calls and r.choices[0].message.content == chat_text(ctx)


@check("chat: tool_choice required streamed")
def _tools_stream(ctx: Ctx) -> None:
    chunks = chat_stream(ctx, tools=[WEATHER], tool_choice="required", max_tokens=None)
    calls = [t for ch in chunks for c in ch.choices for t in c.delta.tool_calls or []]
    assert len(calls) == 1 and calls[0].index == 0 and calls[0].function.name == "get_weather"
    json.loads(calls[0].function.arguments)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


@check("chat: parallel_tool_calls false")
def _tools_serial(ctx: Ctx) -> None:
    r = chat(ctx, tools=[WEATHER, TIME], tool_choice="required", parallel_tool_calls=False,
             max_tokens=None)
    assert len(_calls(r)) == 1


@check("chat: tool_choice naming an undefined function", "nope")
def _tools_undefined(ctx: Ctx) -> None:
    chat(ctx, tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "nope"}})


@check("chat: deprecated functions", "functions")
def _functions(ctx: Ctx) -> None:
    chat(ctx, functions=[WEATHER["function"]])


# -- chat: fields that change nothing, fields refused ----------------------------------------

for _name, _fields in {
    "store + metadata": {"store": True, "metadata": {"k": "v"}},
    "user + safety_identifier": {"user": "u1", "safety_identifier": "s1"},
    "service_tier": {"service_tier": "auto"},
    "prompt_cache_key + retention": {"prompt_cache_key": "k", "prompt_cache_retention": "24h"},
    "prompt_cache_options": {"prompt_cache_options": {"mode": "implicit", "ttl": "30m"}},
    "prediction": {"prediction": {"type": "content", "content": "Sunny"}},
}.items():
    check(f"chat: {_name} (no effect on output)")(same_as_plain(**_fields))

for _name, _fields, _word in [
    ("audio", {"audio": {"voice": "alloy", "format": "wav"},
               "modalities": ["text", "audio"]}, "audio"),
    ("web_search_options", {"web_search_options": {}}, "web search"),
    ("reasoning_effort (template ignores it)", {"reasoning_effort": "low"}, "reasoning_effort"),
    ("verbosity (template ignores it)", {"verbosity": "low"}, "verbosity"),
]:
    check(f"chat: {_name}", _word)(lambda ctx, f=_fields: chat(ctx, **f))


# -- chat: combinations ----------------------------------------------------------------------

@check("chat: the response's message object sent back in the history")
def _message_back(ctx: Ctx) -> None:
    first = chat(ctx, tools=[WEATHER], tool_choice="required", max_tokens=None)
    message = first.choices[0].message  # a pydantic object, with refusal/audio/... as None
    call = message.tool_calls[0]
    r = chat(ctx, max_tokens=3, tools=[WEATHER], messages=[
        *MSG, message, {"role": "tool", "tool_call_id": call.id, "content": "sunny"}])
    assert r.choices[0].message.role == "assistant"


@check("chat: deprecated function_call in a history message", "function_call")
def _history_function_call(ctx: Ctx) -> None:
    chat(ctx, messages=[*MSG, {"role": "assistant", "content": None, "function_call": {
        "name": "get_weather", "arguments": "{}"}}])


@check("chat: n=2 + json_schema")
def _n_json(ctx: Ctx) -> None:
    fmt: Any = {"type": "json_schema", "json_schema": {"name": "p", "schema": SCHEMA}}
    r = chat(ctx, n=2, temperature=1.0, seed=3, max_tokens=60, response_format=fmt)
    for choice in r.choices:
        jsonschema.validate(json.loads(choice.message.content), SCHEMA)


@check("chat: n=2 + tool_choice required, streamed")
def _n_tools_stream(ctx: Ctx) -> None:
    chunks = chat_stream(ctx, n=2, temperature=1.0, seed=3, max_tokens=None, tools=[WEATHER],
                         tool_choice="required")
    calls = {c.index: t for ch in chunks for c in ch.choices for t in c.delta.tool_calls or []}
    assert sorted(calls) == [0, 1] and all(json.loads(t.function.arguments) for t in
                                           calls.values())


@check("chat: logprobs + json_schema")
def _logprobs_json(ctx: Ctx) -> None:
    fmt: Any = {"type": "json_schema", "json_schema": {"name": "p", "schema": SCHEMA}}
    r = chat(ctx, max_tokens=60, response_format=fmt, logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert joined(content) == r.choices[0].message.content
    assert all(e.logprob <= 0 and e.top_logprobs for e in content)


@check("chat: typed response dumps without serializer warnings")
def _dump(ctx: Ctx) -> None:
    r = chat(ctx, tools=[WEATHER], tool_choice="required", max_tokens=None, logprobs=True,
             top_logprobs=1)
    json.loads(r.model_dump_json())
    for chunk in chat_stream(ctx, logprobs=True, stream_options={"include_usage": True}):
        json.loads(chunk.model_dump_json())
