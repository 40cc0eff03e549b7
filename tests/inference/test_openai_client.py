"""The official ``openai`` client against ``python -m inference_server`` (a real uvicorn process).

One server for the module: the tiny model with a Hermes-style chat template that renders tools
(``data/hermes_tools.jinja``), on a loopback port. Every feature of the API is called the way
applications call it, streaming and not; the KAITO routes and the malformed-body answers are
checked over the same socket with plain HTTP.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import httpx
import jsonschema
import openai
import pytest

from tests.support.server_process import free_port, start, stop, wait_healthy

pytestmark = pytest.mark.slow

HERMES = Path(__file__).parent / "data" / "hermes_tools.jinja"
MSG: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
WEATHER: Any = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string", "maxLength": 8}},
    "required": ["city"]}}}
TIME: Any = {"type": "function", "function": {"name": "get_time", "parameters": {
    "type": "object", "properties": {"zone": {"type": "string", "maxLength": 6}},
    "required": ["zone"]}}}
SCHEMA = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
                                           "tags": {"type": "array", "maxItems": 2,
                                                    "items": {"enum": ["a", "b"]}}},
          "required": ["name", "tags"], "additionalProperties": False}
GREEDY: Any = {"temperature": 0, "max_tokens": 8}


@pytest.fixture(scope="module")
def base_url(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("openai-client")
    port = free_port()
    log = tmp / "server.log"
    proc = start(["--model-dir", str(tiny_model_dir), "--adapters-dir", str(tmp / "none"),
                  "--served-model-name", "org/tiny", "--chat-template", str(HERMES),
                  "--host", "127.0.0.1", "--port", str(port), "--max-n", "4"], log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(proc, url, log, timeout=120, path="/healthz")
        yield url
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def client(base_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0,
                       timeout=120) as c:
        yield c


def test_models_list_and_retrieve(client):
    assert [m.id for m in client.models.list()] == ["org/tiny"]
    card = client.models.retrieve("org/tiny")
    assert card.id == "org/tiny" and card.object == "model"
    with pytest.raises(openai.NotFoundError) as exc:
        client.models.retrieve("org/other")
    assert "org/other" in exc.value.message


@pytest.mark.parametrize("stream", [False, True])
def test_n_three_choices(client, stream):
    kwargs: Any = {"model": "org/tiny", "messages": MSG, "n": 3, "max_tokens": 5,
                   "temperature": 1.0, "seed": 11, "extra_body": {"ignore_eos": True}}
    if not stream:
        r = client.chat.completions.create(**kwargs)
        assert [c.index for c in r.choices] == [0, 1, 2]
        assert len({c.message.content for c in r.choices}) == 3
        assert r.usage.completion_tokens == 15
        return
    texts = {0: "", 1: "", 2: ""}
    usage = None
    for chunk in client.chat.completions.create(**kwargs, stream=True,
                                                stream_options={"include_usage": True}):
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
        usage = chunk.usage or usage
    assert len(set(texts.values())) == 3 and all(texts.values())
    assert usage is not None and usage.completion_tokens == 15


@pytest.mark.parametrize("stream", [False, True])
def test_chat_logprobs(client, stream):
    kwargs: Any = {"model": "org/tiny", "messages": MSG, **GREEDY, "logprobs": True,
                   "top_logprobs": 3, "extra_body": {"ignore_eos": True}}
    if stream:
        entries = [e for chunk in client.chat.completions.create(**kwargs, stream=True)
                   for c in chunk.choices if c.logprobs and c.logprobs.content
                   for e in c.logprobs.content]
    else:
        r = client.chat.completions.create(**kwargs)
        entries = r.choices[0].logprobs.content
    assert len(entries) == 8
    total = sum(e.logprob for e in entries)
    assert math.isfinite(total) and total < 0
    for e in entries:
        tops = [t.logprob for t in e.top_logprobs]
        assert len(tops) == 3 and tops == sorted(tops, reverse=True)
        assert e.logprob == pytest.approx(tops[0]) and sum(map(math.exp, tops)) <= 1 + 1e-6


def test_completion_logprobs(client):
    r = client.completions.create(model="org/tiny", prompt="The quick", max_tokens=6,
                                  temperature=0, logprobs=2, extra_body={"ignore_eos": True})
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.text_offset) == 6
    assert all(top[t] == v for t, v, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs,
                                                strict=True))


def test_best_of_keeps_the_best_candidate(client):
    kwargs: Any = {"model": "org/tiny", "prompt": "Once", "max_tokens": 5, "temperature": 1.0,
                   "seed": 4, "logprobs": 0, "extra_body": {"ignore_eos": True}}
    best = client.completions.create(**kwargs, best_of=3)
    assert len(best.choices) == 1 and best.usage.completion_tokens == 15
    candidates = client.completions.create(**kwargs, n=3).choices  # the same seeds
    mean = {c.text: sum(c.logprobs.token_logprobs) / 5 for c in candidates}
    assert best.choices[0].text == max(mean, key=mean.__getitem__)


def test_penalties_are_applied(client):
    kwargs: Any = {"model": "org/tiny", "prompt": "Hello", "max_tokens": 30, "temperature": 0,
                   "extra_body": {"ignore_eos": True}}
    plain = client.completions.create(**kwargs).choices[0].text
    assert client.completions.create(**kwargs, presence_penalty=2.0).choices[0].text != plain
    assert client.completions.create(**kwargs, frequency_penalty=2.0).choices[0].text != plain


@pytest.mark.parametrize("stream", [False, True])
def test_json_schema_mode(client, stream):
    fmt: Any = {"type": "json_schema",
                "json_schema": {"name": "person", "schema": SCHEMA, "strict": True}}
    kwargs: Any = {"model": "org/tiny", "messages": MSG, "temperature": 0,
                   "response_format": fmt}
    if stream:
        text = "".join(c.choices[0].delta.content or "" for c in
                       client.chat.completions.create(**kwargs, stream=True) if c.choices)
    else:
        text = client.chat.completions.create(**kwargs).choices[0].message.content
    jsonschema.validate(json.loads(text), SCHEMA)


def test_json_object_mode(client):
    # greedy: a random model's strings may not end within the context; this prompt's do
    r = client.chat.completions.create(model="org/tiny", temperature=0, max_tokens=120,
                                       response_format={"type": "json_object"}, messages=MSG)
    assert r.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(r.choices[0].message.content), dict)


@pytest.mark.parametrize("choice", ["required",
                                    {"type": "function", "function": {"name": "get_time"}}])
def test_tool_calls(client, choice):
    r = client.chat.completions.create(model="org/tiny", messages=MSG, tools=[WEATHER, TIME],
                                       tool_choice=choice, temperature=0)
    out = r.choices[0]
    assert out.finish_reason == "tool_calls"
    (call,) = out.message.tool_calls
    tool = {"get_weather": WEATHER, "get_time": TIME}[call.function.name]
    jsonschema.validate(json.loads(call.function.arguments), tool["function"]["parameters"])
    if isinstance(choice, dict):
        assert call.function.name == "get_time"
    # the call goes back to the model with its result (no tools: the tiny context is short)
    follow = client.chat.completions.create(
        model="org/tiny", max_tokens=3, temperature=0,
        messages=[{"role": "developer", "content": "Be brief."}, *MSG,
                  out.message.model_dump(exclude_none=True),
                  {"role": "tool", "tool_call_id": call.id, "content": "sunny"}])
    assert follow.choices[0].message.role == "assistant"


def test_tool_calls_stream(client):
    calls = []
    finish = None
    for chunk in client.chat.completions.create(model="org/tiny", messages=MSG, tools=[WEATHER],
                                                tool_choice="required", temperature=0,
                                                stream=True):
        delta = chunk.choices[0].delta
        calls.extend(delta.tool_calls or [])
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls" and len(calls) == 1
    assert calls[0].function.name == "get_weather" and calls[0].id.startswith("call_")
    json.loads(calls[0].function.arguments)


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"n": 5}, "cap of 4"),
    ({"logit_bias": {"1": 5}}, "logit_bias"),
    ({"response_format": {"type": "yaml"}}, "response_format"),
    ({"tool_choice": {"type": "function", "function": {"name": "nope"}}, "tools": [WEATHER]},
     "not in tools"),
    ({"audio": {"voice": "alloy", "format": "wav"}, "modalities": ["text", "audio"]}, "audio"),
    ({"web_search_options": {}}, "web search"),
    ({"reasoning_effort": "low"}, "reasoning_effort"),
])
def test_unsupported_chat_fields_are_400s_that_name_them(client, kwargs, words):
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="org/tiny", messages=MSG, **kwargs)
    assert words in exc.value.message


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"suffix": "end"}, "suffix"),
    ({"best_of": 2, "n": 3}, "best_of"),
    ({"echo": True, "logprobs": 1}, "echo"),
])
def test_unsupported_completion_fields_are_400s(client, kwargs, words):
    with pytest.raises(openai.BadRequestError) as exc:
        client.completions.create(model="org/tiny", prompt="x", **kwargs)
    assert words in exc.value.message


def test_harmless_fields_are_accepted(client):
    r = client.chat.completions.create(model="org/tiny", messages=MSG, max_tokens=2, store=False,
                                       metadata={"k": "v"}, service_tier="auto", user="u",
                                       parallel_tool_calls=False, tools=[WEATHER],
                                       tool_choice="none")
    assert r.choices[0].message.role == "assistant"


def test_kaito_routes_and_body_errors(base_url):
    with httpx.Client(base_url=base_url, timeout=30) as c:
        assert c.get("/").json() == {"message": "Server is running"}
        assert c.get("/healthz").json() == {"status": "Healthy"}
        assert c.get("/health").json() == {"status": "ok"}
        r = c.post("/chat", json={"return_full_text": True})
        assert (r.status_code, r.json()) == (400, {
            "detail": "Text generation parameter prompt required"})
        r = c.post("/chat", json={"messages": []})
        assert (r.status_code, r.json()) == (400, {
            "detail": "Conversational parameter messages required"})
        r = c.post("/chat", content=b'{"prompt": "Hi", "generate_kwargs": {"max_new_tokens": 2}}')
        assert r.status_code == 200 and r.json()["Result"].startswith("Hi")  # no Content-Type
        for body, kind in [(b"", "an empty body"), (b"[1]", "a JSON array"),
                           (b'"x"', "a JSON string")]:
            for url in ("/v1/chat/completions", "/chat"):
                r = c.post(url, content=body)
                message = r.json()["error"]["message"] if url != "/chat" else r.json()["detail"]
                assert r.status_code == 400 and "Content-Type: application/json" in message
                assert kind in message


def test_structured_output_helpers(client):
    """``chat.completions.parse`` and ``.stream`` with a pydantic model (strict json_schema)."""
    from pydantic import BaseModel

    class Verdict(BaseModel):
        label: Literal["yes", "no"]
        certain: bool

    kwargs: Any = {"model": "org/tiny", "messages": MSG, "temperature": 0, "max_tokens": 40,
                   "response_format": Verdict}
    parsed = client.chat.completions.parse(**kwargs).choices[0].message.parsed
    assert isinstance(parsed, Verdict)
    with client.chat.completions.stream(**kwargs) as stream:
        deltas = "".join(e.delta for e in stream if e.type == "content.delta")
        final = stream.get_final_completion().choices[0].message
    assert final.parsed == parsed and deltas == final.content


def test_completion_token_prompt_and_offsets(client):
    r = client.completions.create(model="org/tiny", prompt=[5, 6, 7], max_tokens=12, logprobs=1,
                                  temperature=0, extra_body={"ignore_eos": True})
    text, lp = r.choices[0].text, r.choices[0].logprobs
    assert r.usage.prompt_tokens == 3 and r.usage.completion_tokens == 12
    assert lp.text_offset == sorted(lp.text_offset) and lp.text_offset[-1] <= len(text)


def test_response_message_object_goes_back_in_the_history(client):
    first = client.chat.completions.create(model="org/tiny", messages=MSG, tools=[WEATHER],
                                           tool_choice="required", temperature=0)
    message = first.choices[0].message  # the client's object: refusal, audio... are None
    follow = client.chat.completions.create(
        model="org/tiny", max_tokens=2, tools=[WEATHER], messages=[
            *MSG, message, {"role": "tool", "tool_call_id": message.tool_calls[0].id,
                            "content": "sunny"}])
    assert follow.choices[0].message.role == "assistant"


def test_extensions_and_missing_endpoints_are_named(client):
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="org/tiny", messages=MSG,
                                       extra_body={"guided_json": {"type": "object"}})
    assert exc.value.param == "guided_json" and "response_format" in exc.value.message
    with pytest.raises(openai.NotFoundError) as missing:
        client.embeddings.create(model="org/tiny", input="hi")
    assert "POST /v1/embeddings: no such route" in missing.value.message
