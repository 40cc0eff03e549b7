"""OpenAI features in process: n, logprobs, penalties, JSON mode, tools, models/{id}, KAITO shapes.

The same features are checked with the official ``openai`` client against a real server process
in ``test_openai_client.py``; here the answers' details (token counts, offsets, seeds, 400
messages) are checked where they are cheap to reach.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from inference_server.app import create_app
from inference_server.engine import TransformersEngine
from inference_server.settings import ServerSettings

from .conftest import serve
from .test_openai_api import sse_events

CHAT_URL, COMPL_URL = "/v1/chat/completions", "/v1/completions"
MSG = [{"role": "user", "content": "What is the weather in Paris?"}]
HERMES = Path(__file__).parent / "data" / "hermes_tools.jinja"
#: Small definitions (the tiny model's context is 512 tokens of a 465-token vocabulary); bounded
#: strings, so that a random model's argument ends within the tokens left.
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string", "maxLength": 8}},
    "required": ["city"]}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {
    "type": "object", "properties": {"zone": {"type": "string", "maxLength": 6}},
    "required": ["zone"]}}}
SCHEMA = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
                                           "age": {"type": "integer"}},
          "required": ["name", "age"], "additionalProperties": False}


@pytest.fixture(scope="module")
def tools_engine(base_settings: ServerSettings) -> Any:
    settings = base_settings.model_copy(update={"chat_template": str(HERMES)})
    return TransformersEngine.load(settings)


@pytest.fixture
async def tools_client(base_settings: ServerSettings,
                       tools_engine: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(create_app(base_settings, tools_engine)) as c:
        yield c


async def test_n_choices_differ_and_usage_sums(client):
    body = {"messages": MSG, "n": 3, "max_tokens": 6, "temperature": 1.0, "seed": 5,
            "ignore_eos": True}
    r = (await client.post(CHAT_URL, json=body)).json()
    texts = [c["message"]["content"] for c in r["choices"]]
    assert [c["index"] for c in r["choices"]] == [0, 1, 2] and len(set(texts)) == 3
    assert r["usage"]["completion_tokens"] == 18
    again = (await client.post(CHAT_URL, json=body)).json()
    assert [c["message"]["content"] for c in again["choices"]] == texts  # seed + i per choice
    # choice 0 is the request with the same seed and n=1
    one = (await client.post(CHAT_URL, json={**body, "n": 1})).json()
    assert one["choices"][0]["message"]["content"] == texts[0]


async def test_n_streaming_carries_the_index(client):
    body = {"prompt": "Once", "n": 2, "max_tokens": 8, "temperature": 0, "ignore_eos": True,
            "stream": True, "stream_options": {"include_usage": True}}
    events = sse_events((await client.post(COMPL_URL, json=body)).text)
    chunks = [json.loads(e) for e in events[:-1]]
    texts = {0: "", 1: ""}
    for chunk in chunks[:-1]:
        (choice,) = chunk["choices"]
        texts[choice["index"]] += choice["text"]
    assert texts[0] == texts[1] and texts[0]  # greedy: both choices alike
    assert chunks[-1]["usage"]["completion_tokens"] == 16


async def test_n_above_the_cap_is_400(client, base_settings):
    r = await client.post(CHAT_URL, json={"messages": MSG, "n": base_settings.max_n + 1})
    assert r.status_code == 400 and r.json()["error"]["param"] == "n"
    assert f"cap of {base_settings.max_n}" in r.json()["error"]["message"]


async def test_chat_logprobs_are_consistent(client, base_engine):
    body = {"messages": MSG, "max_tokens": 8, "temperature": 0, "ignore_eos": True,
            "logprobs": True, "top_logprobs": 4}
    r = (await client.post(CHAT_URL, json=body)).json()
    choice = r["choices"][0]
    content = choice["logprobs"]["content"]
    assert len(content) == r["usage"]["completion_tokens"] == 8
    joined = b"".join(bytes(entry["bytes"]) for entry in content).decode(errors="replace")
    for special in base_engine.special_tokens():  # in logprobs, not in the text
        joined = joined.replace(special, "")
    assert joined == choice["message"]["content"]
    for entry in content:
        tops = [t["logprob"] for t in entry["top_logprobs"]]
        assert len(tops) == 4 and tops == sorted(tops, reverse=True)
        assert math.isfinite(entry["logprob"]) and entry["logprob"] <= 0
        assert entry["logprob"] == pytest.approx(tops[0])  # greedy picks the best token
        assert sum(math.exp(t) for t in tops) <= 1.0 + 1e-6


async def test_completion_logprobs_legacy_shape_and_stream(client):
    body = {"prompt": "The quick brown", "max_tokens": 6, "temperature": 0, "ignore_eos": True,
            "logprobs": 2}
    whole = (await client.post(COMPL_URL, json=body)).json()["choices"][0]
    lp = whole["logprobs"]
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"]) == 6
    assert lp["text_offset"][0] == 0
    for token, logprob, top in zip(lp["tokens"], lp["token_logprobs"], lp["top_logprobs"],
                                   strict=True):
        assert top[token] == logprob and 1 <= len(top) <= 3
    chunks = [json.loads(e) for e in sse_events(
        (await client.post(COMPL_URL, json={**body, "stream": True})).text)[:-1]]
    streamed = [t for c in chunks if c["choices"][0]["logprobs"]
                for t in c["choices"][0]["logprobs"]["tokens"]]
    offsets = [o for c in chunks if c["choices"][0]["logprobs"]
               for o in c["choices"][0]["logprobs"]["text_offset"]]
    assert streamed == lp["tokens"] and offsets == lp["text_offset"]


async def test_penalties_change_the_output(client):
    body = {"prompt": "Hello", "max_tokens": 30, "temperature": 0, "ignore_eos": True}
    plain = (await client.post(COMPL_URL, json=body)).json()["choices"][0]["text"]
    for field in ("presence_penalty", "frequency_penalty"):
        r = await client.post(COMPL_URL, json={**body, field: 2.0})
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["text"] != plain, field


@pytest.mark.parametrize("stream", [False, True])
async def test_json_schema_output_matches(client, stream):
    body = {"messages": MSG, "max_tokens": 200, "temperature": 0, "stream": stream,
            "response_format": {"type": "json_schema", "json_schema": {
                "name": "person", "schema": SCHEMA, "strict": True}}}
    r = await client.post(CHAT_URL, json=body)
    assert r.status_code == 200, r.text
    if stream:
        chunks = [json.loads(e) for e in sse_events(r.text)[:-1]]
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
        finish = chunks[-1]["choices"][0]["finish_reason"]
    else:
        text = r.json()["choices"][0]["message"]["content"]
        finish = r.json()["choices"][0]["finish_reason"]
    jsonschema.validate(json.loads(text), SCHEMA)
    assert finish == "stop"


async def test_json_object_mode_gives_an_object(client):
    # greedy: a random model's strings may not end within the context; this prompt's do
    body = {"messages": MSG, "max_tokens": 120, "temperature": 0,
            "response_format": {"type": "json_object"}}
    choice = (await client.post(CHAT_URL, json=body)).json()["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert isinstance(json.loads(choice["message"]["content"]), dict)


def _nested_schema(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"a": schema}, "required": ["a"]}
    return schema


@pytest.mark.parametrize("schema", [
    _nested_schema(300),  # deeper than the grammar compiler goes
    {"type": "object", "properties": {"x": {"type": "string", "pattern": "("}}},  # bad regex
    {"type": "object", "properties": {"x": {"$ref": "#/$defs/missing"}}},  # dangling reference
], ids=["nested-300", "broken-pattern", "dangling-ref"])
async def test_a_hostile_schema_is_a_400_naming_response_format(client, schema):
    body = {"messages": MSG, "max_tokens": 4, "response_format": {
        "type": "json_schema", "json_schema": {"name": "x", "schema": schema}}}
    r = await client.post(CHAT_URL, json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "response_format"


async def test_tools_need_a_template_that_uses_them(client):
    r = await client.post(CHAT_URL, json={"messages": MSG, "tools": [WEATHER]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "tools"
    assert "no tool support" in r.json()["error"]["message"]
    # tool_choice "none" does not need the template's support
    r = await client.post(CHAT_URL, json={"messages": MSG, "tools": [WEATHER],
                                          "tool_choice": "none", "max_tokens": 2})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("choice", ["required", {"type": "function",
                                                 "function": {"name": "get_time"}}])
async def test_forced_tool_call_parses(tools_client, choice):
    body = {"messages": MSG, "tools": [WEATHER, TIME], "tool_choice": choice,
            "temperature": 0}
    r = await tools_client.post(CHAT_URL, json=body)
    assert r.status_code == 200, r.text
    out = r.json()["choices"][0]
    assert out["finish_reason"] == "tool_calls" and out["message"]["content"] is None
    (call,) = out["message"]["tool_calls"]
    assert call["id"].startswith("call_") and call["type"] == "function"
    tool = {"get_weather": WEATHER, "get_time": TIME}[call["function"]["name"]]
    jsonschema.validate(json.loads(call["function"]["arguments"]),
                        tool["function"]["parameters"])
    if isinstance(choice, dict):
        assert call["function"]["name"] == "get_time"


async def test_forced_tool_call_streams_as_tool_calls_delta(tools_client):
    body = {"messages": MSG, "tools": [WEATHER], "tool_choice": "required", "max_tokens": 120,
            "temperature": 0, "stream": True}
    chunks = [json.loads(e) for e in sse_events(
        (await tools_client.post(CHAT_URL, json=body)).text)[:-1]]
    deltas = [c["choices"][0]["delta"] for c in chunks]
    calls = [d["tool_calls"] for d in deltas if "tool_calls" in d]
    assert len(calls) == 1 and calls[0][0]["function"]["name"] == "get_weather"
    json.loads(calls[0][0]["function"]["arguments"])
    assert not "".join(d.get("content") or "" for d in deltas)
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_tool_results_and_developer_role_reach_the_template(tools_client, tools_engine):
    messages = [
        {"role": "developer", "content": "Be brief."}, *MSG,
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"},
    ]
    body = {"messages": messages, "tools": [WEATHER], "max_tokens": 4, "temperature": 0}
    r = await tools_client.post(CHAT_URL, json=body)
    assert r.status_code == 200, r.text
    rendered = tools_engine.tokenizer.decode(
        tools_engine.encode_chat(
            [{"role": "system", "content": "Be brief."}, *MSG,
             {"role": "assistant", "content": "", "tool_calls": [{
                 "id": "call_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
             {"role": "tool", "tool_call_id": "call_1", "name": "get_weather",
              "content": "sunny, 21 C"}],
            [WEATHER]))
    assert "<tool_response>\nsunny, 21 C" in rendered and '"city": "Paris"' in rendered
    assert r.json()["usage"]["prompt_tokens"] == len(tools_engine.tokenizer(rendered)["input_ids"])


async def test_model_card_by_id(client):
    r = await client.get("/v1/models/tiny")
    assert r.status_code == 200 and r.json()["id"] == "tiny" and r.json()["object"] == "model"
    r = await client.get("/v1/models/org/other-model")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "model_not_found"
    assert "org/other-model" in r.json()["error"]["message"]


async def test_kaito_compatibility(client):
    assert (await client.get("/")).json() == {"message": "Server is running"}
    r = await client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "Healthy"}
    assert (await client.get("/health")).json() == {"status": "ok"}
    cases = [({}, "Text generation parameter prompt required"),
             ({"prompt": ""}, "Text generation parameter prompt required"),
             ({"return_full_text": True}, "Text generation parameter prompt required"),
             ({"messages": []}, "Conversational parameter messages required"),
             ({"pipeline": "conversational"}, "Conversational parameter messages required")]
    for body, detail in cases:
        r = await client.post("/chat", json=body)
        assert r.status_code == 400 and r.json() == {"detail": detail}, body


async def test_auto_tools_stream_equals_non_stream(tools_client):
    body = {"messages": MSG, "tools": [WEATHER], "max_tokens": 24, "temperature": 0,
            "ignore_eos": True}
    whole = (await tools_client.post(CHAT_URL, json=body)).json()["choices"][0]
    chunks = [json.loads(e) for e in sse_events(
        (await tools_client.post(CHAT_URL, json={**body, "stream": True})).text)[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert whole["message"]["tool_calls"] is None  # a random model writes no call
    assert text == whole["message"]["content"] and whole["finish_reason"] == "length"


async def test_n_that_does_not_fit_the_queue_is_429_and_leaves_nothing_behind(
        base_settings, base_engine):
    settings = base_settings.model_copy(update={"max_batch_size": 1, "queue_size": 1})
    app = create_app(settings, base_engine)
    async with serve(app) as c:
        r = await c.post(CHAT_URL, json={"messages": MSG, "n": 3, "max_tokens": 2})
        assert r.status_code == 429, r.text
        r = await c.post(CHAT_URL, json={"messages": MSG, "n": 2, "max_tokens": 2})
        assert r.status_code == 200 and len(r.json()["choices"]) == 2
