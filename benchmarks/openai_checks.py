"""The checks of ``openai_conformance.py``: what a client author tries with the official client.

Each check calls the server the way an application would and asserts what OpenAI's API promises
(an ``AssertionError`` is a "wrong" answer). A check that expects a refusal is declared with the
words the error message must contain; ``openai_conformance`` grades the answers. Checks run
against the tiny model with a Hermes-style template (tools render), so outputs are random text:
each check asserts the field's effect (a stop string cuts, a seed repeats, a schema validates),
never particular words.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import openai

__all__ = ["CHECKS", "EXACT", "MODEL", "MSG", "SCHEMA", "SPECIAL", "TIME", "WEATHER", "Check",
           "Ctx", "chat", "chat_stream", "chat_text", "check", "complete", "joined",
           "same_as_plain", "streamed_text"]

MODEL = "org/tiny"
MSG: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
EXACT: Any = {"ignore_eos": True}
#: The tiny model's special tokens (decoded answers leave them out).
SPECIAL = re.compile(r"<\|\w+\|>|<s>|<unk>")
WEATHER: Any = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather of a city", "parameters": {
        "type": "object", "properties": {"city": {"type": "string", "maxLength": 8}},
        "required": ["city"], "additionalProperties": False}}}
TIME: Any = {"type": "function", "function": {"name": "get_time", "parameters": {
    "type": "object", "properties": {"zone": {"enum": ["utc", "cet"]}}, "required": ["zone"]}}}
SCHEMA = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 10},
                                           "ok": {"type": "boolean"}},
          "required": ["name", "ok"], "additionalProperties": False}


@dataclass
class Ctx:
    client: openai.OpenAI
    http: httpx.Client
    """Plain HTTP on the server's root URL (the body and content-type cases)."""


@dataclass(frozen=True)
class Check:
    name: str
    run: Callable[[Ctx], None]
    refusal: tuple[str, ...] = ()
    """Words a clear refusal's message contains; empty: the feature is expected to work."""


CHECKS: list[Check] = []


def check(name: str, *refusal: str) -> Callable[[Callable[[Ctx], None]], Callable[[Ctx], None]]:
    def register(fn: Callable[[Ctx], None]) -> Callable[[Ctx], None]:
        CHECKS.append(Check(name, fn, tuple(refusal)))
        return fn
    return register


def chat(ctx: Ctx, **kwargs: Any) -> Any:
    kwargs.setdefault("messages", MSG)
    kwargs.setdefault("max_tokens", 8)
    kwargs.setdefault("temperature", 0)
    return ctx.client.chat.completions.create(model=MODEL, **kwargs)


def chat_text(ctx: Ctx, **kwargs: Any) -> str:
    return str(chat(ctx, **kwargs).choices[0].message.content)


def joined(entries: list[Any]) -> str:
    """The text of logprobs entries: their bytes joined, without the special tokens' text
    (the answer's text leaves them out)."""
    raw = b"".join(bytes(e.bytes) for e in entries).decode("utf-8", errors="replace")
    return SPECIAL.sub("", raw)


def chat_stream(ctx: Ctx, **kwargs: Any) -> list[Any]:
    return list(chat(ctx, stream=True, **kwargs))


def streamed_text(chunks: list[Any], index: int = 0) -> str:
    return "".join(c.delta.content or "" for chunk in chunks for c in chunk.choices
                   if c.index == index)


def complete(ctx: Ctx, **kwargs: Any) -> Any:
    kwargs.setdefault("prompt", "The quick")
    kwargs.setdefault("max_tokens", 8)
    kwargs.setdefault("temperature", 0)
    return ctx.client.completions.create(model=MODEL, **kwargs)


def same_as_plain(**fields: Any) -> Callable[[Ctx], None]:
    """A field that changes nothing: accepted, and the greedy output is the same as without."""
    def run(ctx: Ctx) -> None:
        assert chat_text(ctx, **fields) == chat_text(ctx)
    return run


# -- chat: messages and roles ----------------------------------------------------------------

@check("chat: plain request, typed response")
def _plain(ctx: Ctx) -> None:
    r = chat(ctx)
    assert r.object == "chat.completion" and r.id and r.created > 0 and r.model == MODEL
    c = r.choices[0]
    assert c.index == 0 and c.message.role == "assistant" and isinstance(c.message.content, str)
    assert c.finish_reason in ("stop", "length")
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


@check("chat: system + user + assistant history")
def _history(ctx: Ctx) -> None:
    chat_text(ctx, messages=[{"role": "system", "content": "Be brief."}, *MSG,
                             {"role": "assistant", "content": "Sunny."},
                             {"role": "user", "content": "And tomorrow?"}])


@check("chat: developer role (same as system)")
def _developer(ctx: Ctx) -> None:
    def text(role: str) -> str:
        return chat_text(ctx, messages=[{"role": role, "content": "Be brief."}, *MSG])
    assert text("developer") == text("system")


@check("chat: content as text parts")
def _parts(ctx: Ctx) -> None:
    parts = [{"type": "text", "text": "What is the weather "}, {"type": "text", "text": "in Paris?"}]
    assert chat_text(ctx, messages=[{"role": "user", "content": parts}]) == chat_text(ctx)


@check("chat: image part", "image")
def _image(ctx: Ctx) -> None:
    chat(ctx, messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}])


@check("chat: assistant tool_calls + tool result")
def _tool_result(ctx: Ctx) -> None:
    call = {"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    r = chat(ctx, tools=[WEATHER], max_tokens=4, messages=[
        *MSG, {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}])
    assert r.choices[0].message.role == "assistant"


@check("chat: empty messages", "messages")
def _no_messages(ctx: Ctx) -> None:
    chat(ctx, messages=[])


@check("chat: unknown role", "role")
def _bad_role(ctx: Ctx) -> None:
    chat(ctx, messages=[{"role": "wizard", "content": "hi"}])


@check("chat: model that is not served", "org/other")
def _other_model(ctx: Ctx) -> None:
    ctx.client.chat.completions.create(model="org/other", messages=MSG, max_tokens=2)


# -- chat: sampling and length ---------------------------------------------------------------

@check("chat: max_tokens")
def _max_tokens(ctx: Ctx) -> None:
    assert chat(ctx, max_tokens=5, extra_body=EXACT).usage.completion_tokens == 5


@check("chat: max_completion_tokens")
def _max_completion(ctx: Ctx) -> None:
    r = chat(ctx, max_tokens=None, max_completion_tokens=6, extra_body=EXACT)
    assert r.usage.completion_tokens == 6 and r.choices[0].finish_reason == "length"


@check("chat: max_tokens above the context", "max_tokens")
def _too_long(ctx: Ctx) -> None:
    chat(ctx, max_tokens=10**6)


@check("chat: temperature 0 repeats")
def _greedy(ctx: Ctx) -> None:
    assert chat_text(ctx, max_tokens=12) == chat_text(ctx, max_tokens=12)


@check("chat: temperature 2 + seed differ from greedy")
def _temperature(ctx: Ctx) -> None:
    hot = {chat_text(ctx, max_tokens=12, temperature=2.0, seed=s, extra_body=EXACT)
           for s in (1, 2)}
    assert len(hot) == 2 and chat_text(ctx, max_tokens=12, extra_body=EXACT) not in hot


@check("chat: seed reproduces a sampled answer")
def _seed(ctx: Ctx) -> None:
    a, b = (chat_text(ctx, temperature=1.0, seed=7, max_tokens=12) for _ in range(2))
    assert a == b


@check("chat: top_p tiny = greedy")
def _top_p(ctx: Ctx) -> None:
    assert chat_text(ctx, temperature=1.0, top_p=1e-9, seed=3) == chat_text(ctx)


@check("chat: temperature out of range", "temperature")
def _bad_temperature(ctx: Ctx) -> None:
    chat(ctx, temperature=3.5)


@check("chat: stop string cuts the answer")
def _stop(ctx: Ctx) -> None:
    full = chat_text(ctx, max_tokens=16, extra_body=EXACT)
    cut = full[len(full) // 2:][:3]
    assert cut.strip(), full
    r = chat(ctx, max_tokens=16, stop=[cut], extra_body=EXACT)
    assert r.choices[0].message.content == full[: full.index(cut)]
    assert r.choices[0].finish_reason == "stop"


@check("chat: five stop strings", "stop")
def _five_stops(ctx: Ctx) -> None:
    chat(ctx, stop=["a", "b", "c", "d", "e"])


@check("chat: presence_penalty changes greedy output")
def _presence(ctx: Ctx) -> None:
    assert chat_text(ctx, max_tokens=30, presence_penalty=2.0, extra_body=EXACT) != chat_text(
        ctx, max_tokens=30, extra_body=EXACT)


@check("chat: frequency_penalty changes greedy output")
def _frequency(ctx: Ctx) -> None:
    assert chat_text(ctx, max_tokens=30, frequency_penalty=2.0, extra_body=EXACT) != chat_text(
        ctx, max_tokens=30, extra_body=EXACT)


@check("chat: n=3")
def _n(ctx: Ctx) -> None:
    r = chat(ctx, n=3, temperature=1.0, seed=5, extra_body=EXACT)
    assert [c.index for c in r.choices] == [0, 1, 2] and r.usage.completion_tokens == 24
    assert len({c.message.content for c in r.choices}) == 3


@check("chat: n above the cap", "n")
def _n_cap(ctx: Ctx) -> None:
    chat(ctx, n=50)


@check("chat: logit_bias", "logit_bias")
def _logit_bias(ctx: Ctx) -> None:
    chat(ctx, logit_bias={"5": 10})


# -- chat: logprobs --------------------------------------------------------------------------

@check("chat: logprobs + top_logprobs")
def _logprobs(ctx: Ctx) -> None:
    r = chat(ctx, logprobs=True, top_logprobs=2, extra_body=EXACT)
    content = r.choices[0].logprobs.content
    assert len(content) == 8 and all(e.logprob <= 0 and len(e.top_logprobs) == 2
                                     for e in content)
    assert joined(content) == r.choices[0].message.content
    assert all(e.logprob == e.top_logprobs[0].logprob for e in content)  # greedy


@check("chat: logprobs streamed")
def _logprobs_stream(ctx: Ctx) -> None:
    chunks = chat_stream(ctx, logprobs=True, extra_body=EXACT)
    entries = [e for ch in chunks for c in ch.choices if c.logprobs and c.logprobs.content
               for e in c.logprobs.content]
    assert joined(entries) == streamed_text(chunks) and len(entries) == 8


@check("chat: logprobs end where a stop string cuts the text")
def _logprobs_stop(ctx: Ctx) -> None:
    full = chat_text(ctx, max_tokens=16, extra_body=EXACT)
    cut = full[len(full) // 2:][:3]
    r = chat(ctx, max_tokens=16, stop=[cut], logprobs=True, extra_body=EXACT)
    content, entries = r.choices[0].message.content, r.choices[0].logprobs.content
    assert joined(entries).startswith(content) and len(joined(entries[:-1])) < len(content)


@check("chat: top_logprobs without logprobs", "logprobs")
def _top_without(ctx: Ctx) -> None:
    chat(ctx, top_logprobs=2)


@check("chat: top_logprobs above 20", "top_logprobs")
def _top_cap(ctx: Ctx) -> None:
    chat(ctx, logprobs=True, top_logprobs=21)


# -- chat: streaming -------------------------------------------------------------------------

@check("chat: stream = the same text as not streamed")
def _stream(ctx: Ctx) -> None:
    chunks = chat_stream(ctx, max_tokens=12)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert streamed_text(chunks) == chat_text(ctx, max_tokens=12)
    assert len({c.id for c in chunks}) == 1 and all(c.object == "chat.completion.chunk"
                                                    for c in chunks)


@check("chat: stream_options.include_usage")
def _stream_usage(ctx: Ctx) -> None:
    chunks = chat_stream(ctx, stream_options={"include_usage": True}, extra_body=EXACT)
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 8
    assert all(c.usage is None for c in chunks[:-1])


@check("chat: stream n=2")
def _stream_n(ctx: Ctx) -> None:
    chunks = chat_stream(ctx, n=2, temperature=1.0, seed=9, extra_body=EXACT)
    texts = [streamed_text(chunks, i) for i in (0, 1)]
    assert all(texts) and texts[0] != texts[1]
    finishes = [c.index for ch in chunks for c in ch.choices if c.finish_reason]
    assert sorted(finishes) == [0, 1]
