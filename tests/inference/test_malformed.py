"""Malformed input never reaches the model and never produces a 500: a 4xx with a message."""

from __future__ import annotations

import json

import pytest

CHAT_URL, COMPL_URL, KAITO_URL = "/v1/chat/completions", "/v1/completions", "/chat"
MSG = [{"role": "user", "content": "hi"}]
LONG = "zq " * 1200  # far beyond the tiny model's 512-token context


def chat(**kw):
    return {"messages": MSG, **kw}


CASES = [
    # (id, url, body (dict → JSON, str → raw bytes), status, words expected in the message)
    ("bad-json", CHAT_URL, "{not json", 400, "JSON"),
    ("empty-body", CHAT_URL, "", 400, "send a JSON object body"),
    ("json-array", CHAT_URL, "[1, 2]", 400, "got a JSON array"),
    ("json-null", CHAT_URL, "null", 400, "got JSON null"),
    ("messages-string", CHAT_URL, {"messages": "hi"}, 400, "messages"),
    ("messages-empty", CHAT_URL, {"messages": []}, 400, "messages"),
    ("messages-missing", CHAT_URL, {"max_tokens": 3}, 400, "messages"),
    ("unknown-role", CHAT_URL, {"messages": [{"role": "wizard", "content": "x"}]}, 400, "role"),
    ("no-content", CHAT_URL, {"messages": [{"role": "user"}]}, 400, "content"),
    ("content-number", CHAT_URL, {"messages": [{"role": "user", "content": 5}]}, 400, "content"),
    ("image-part", CHAT_URL, {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://x"}}]}]}, 400, "content"),
    ("max-tokens-negative", CHAT_URL, chat(max_tokens=-1), 400, "max_tokens"),
    ("max-tokens-zero", CHAT_URL, chat(max_tokens=0), 400, "max_tokens"),
    ("max-tokens-huge", CHAT_URL, chat(max_tokens=10**12), 400, "max_tokens"),
    ("max-tokens-string", CHAT_URL, chat(max_tokens="ten"), 400, "max_tokens"),
    ("max-tokens-float", CHAT_URL, chat(max_tokens=3.5), 400, "max_tokens"),
    ("max-tokens-beyond-context", CHAT_URL, chat(max_tokens=600), 400, "context length"),
    ("temperature-negative", CHAT_URL, chat(temperature=-0.5), 400, "temperature"),
    ("temperature-huge", CHAT_URL, chat(temperature=50), 400, "temperature"),
    ("top-p-zero", CHAT_URL, chat(top_p=0), 400, "top_p"),
    ("stop-five", CHAT_URL, chat(stop=["a", "b", "c", "d", "e"]), 400, "stop"),
    ("stop-empty-string", CHAT_URL, chat(stop=[""]), 400, "stop"),
    ("stop-number", CHAT_URL, chat(stop=12), 400, "stop"),
    ("stop-nested", CHAT_URL, chat(stop=[["a"]]), 400, "stop"),
    ("n-above-cap", CHAT_URL, chat(n=9), 400, "cap of 8 choices"),
    ("n-zero", CHAT_URL, chat(n=0), 400, "n"),
    ("stream-string", CHAT_URL, chat(stream="yes"), 400, "stream"),
    ("seed-negative", CHAT_URL, chat(seed=-1), 400, "seed"),
    ("presence-penalty-range", CHAT_URL, chat(presence_penalty=2.5), 400, "presence_penalty"),
    ("top-logprobs-alone", CHAT_URL, chat(top_logprobs=2), 400, "logprobs: true"),
    ("top-logprobs-21", CHAT_URL, chat(logprobs=True, top_logprobs=21), 400, "top_logprobs"),
    ("response-format-unknown", CHAT_URL, chat(response_format={"type": "yaml"}), 400,
     "response_format.type"),
    ("response-format-no-schema", CHAT_URL, chat(response_format={"type": "json_schema"}), 400,
     "json_schema"),
    ("json-schema-not-a-schema", CHAT_URL, chat(response_format={
        "type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 12}}}), 400,
     "cannot be enforced"),
    ("tools-not-functions", CHAT_URL, chat(tools=[{"type": "custom", "custom": {}}]), 400,
     "tools"),
    ("tool-without-name", CHAT_URL, chat(tools=[{"type": "function", "function": {}}]), 400,
     "name"),
    ("tool-parameters-not-object", CHAT_URL, chat(tools=[{"type": "function", "function": {
        "name": "f", "parameters": {"type": "string"}}}]), 400, "type 'object'"),
    ("tools-defined-twice", CHAT_URL, chat(tools=[{"type": "function", "function": {
        "name": "f"}}] * 2), 400, "defined twice"),
    ("tool-choice-unknown-function", CHAT_URL, chat(
        tools=[{"type": "function", "function": {"name": "f"}}],
        tool_choice={"type": "function", "function": {"name": "g"}}), 400, "not in tools"),
    ("tool-choice-without-tools", CHAT_URL, chat(tool_choice="required"), 400, "needs tools"),
    ("tool-choice-bad", CHAT_URL, chat(tools=[{"type": "function", "function": {"name": "f"}}],
                                       tool_choice="always"), 400, "tool_choice"),
    ("tools-template-without-tools", CHAT_URL, chat(
        tools=[{"type": "function", "function": {"name": "f"}}]), 400, "no tool support"),
    ("audio", CHAT_URL, chat(audio={"voice": "alloy", "format": "wav"}), 400, "audio"),
    ("modalities-audio", CHAT_URL, chat(modalities=["text", "audio"]), 400, "audio"),
    ("functions", CHAT_URL, chat(functions=[{"name": "f"}]), 400, "send 'tools'"),
    ("web-search", CHAT_URL, chat(web_search_options={}), 400, "web search"),
    ("reasoning-effort", CHAT_URL, chat(reasoning_effort="high"), 400, "reasoning_effort"),
    ("assistant-without-content", CHAT_URL, {"messages": [*MSG, {"role": "assistant"}]}, 400,
     "content is required"),
    ("tool-message-without-id", CHAT_URL, {"messages": [*MSG, {"role": "tool",
                                                               "content": "x"}]}, 400,
     "tool_call_id"),
    ("tool-calls-on-user", CHAT_URL, {"messages": [{"role": "user", "content": "x",
                                                    "tool_calls": []}]}, 400, "assistant"),
    ("completion-suffix", COMPL_URL, {"prompt": "a", "suffix": "b"}, 400, "suffix"),
    ("completion-best-of-below-n", COMPL_URL, {"prompt": "a", "best_of": 2, "n": 3}, 400,
     "at least n=3"),
    ("completion-best-of-stream", COMPL_URL, {"prompt": "a", "best_of": 2, "stream": True}, 400,
     "cannot be streamed"),
    ("completion-echo-logprobs", COMPL_URL, {"prompt": "a", "echo": True, "logprobs": 1}, 400,
     "echo"),
    ("completion-logprobs-6", COMPL_URL, {"prompt": "a", "logprobs": 6}, 400, "logprobs"),
    ("completion-logprobs-bool", COMPL_URL, {"prompt": "a", "logprobs": True}, 400,
     "logprobs"),
    ("min-tokens-over-max", CHAT_URL, chat(max_tokens=3, min_tokens=9), 400, "min_tokens"),
    ("prompt-too-long-chat", CHAT_URL, {"messages": [{"role": "user", "content": LONG}]},
     400, "context length"),
    ("unknown-model", CHAT_URL, chat(model="gpt-9"), 404, "gpt-9"),
    ("stream-options-bad", CHAT_URL, chat(stream=True, stream_options={"x": 1}), 400, ""),
    ("completion-two-prompts", COMPL_URL, {"prompt": ["a", "b"]}, 400, "prompt"),
    ("completion-empty-prompt", COMPL_URL, {"prompt": ""}, 400, "prompt"),
    ("completion-no-prompt", COMPL_URL, {}, 400, "prompt"),
    ("completion-prompt-number", COMPL_URL, {"prompt": 123}, 400, "prompt"),
    ("completion-token-id-outside-vocab", COMPL_URL, {"prompt": [1, 2, 999999]}, 400,
     "outside the vocabulary"),
    ("completion-too-long", COMPL_URL, {"prompt": LONG}, 400, "context length"),
    ("completion-echo-string", COMPL_URL, {"prompt": "a", "echo": "true"}, 400, "echo"),
    ("kaito-bad-json", KAITO_URL, "{'prompt': 'single quotes'}", 422, "JSON"),
    ("kaito-empty-object", KAITO_URL, {}, 400, "Text generation parameter prompt required"),
    ("kaito-both", KAITO_URL, {"prompt": "x", "messages": MSG}, 422, "exactly one"),
    ("kaito-empty-prompt", KAITO_URL, {"prompt": ""}, 400,
     "Text generation parameter prompt required"),
    ("kaito-empty-messages", KAITO_URL, {"messages": []}, 400,
     "Conversational parameter messages required"),
    ("kaito-empty-body", KAITO_URL, "", 400, "got an empty body"),
    ("kaito-json-string", KAITO_URL, '"hi"', 400, "send a JSON object body"),
    ("kaito-unknown-role", KAITO_URL, {"messages": [{"role": "robot", "content": "x"}]},
     422, "role"),
    ("kaito-kwargs-string", KAITO_URL, {"prompt": "x", "generate_kwargs": "fast"},
     422, "generate_kwargs"),
    ("kaito-negative-max-new", KAITO_URL, {"prompt": "x", "generate_kwargs": {
        "max_new_tokens": -5}}, 400, "max_new_tokens"),
    ("kaito-zero-temperature", KAITO_URL, {"prompt": "x", "generate_kwargs": {
        "temperature": 0}}, 400, "temperature"),
    ("kaito-huge-max-new", KAITO_URL, {"prompt": "x", "generate_kwargs": {
        "max_new_tokens": 100000}}, 400, "max_new_tokens"),
    ("kaito-unknown-key", KAITO_URL, {"prompt": "x", "generate_kwargs": {"speed": "max"}},
     400, "speed"),
    ("kaito-max-length-below-prompt", KAITO_URL, {"prompt": "Hello there friend",
                                                  "generate_kwargs": {"max_length": 2}},
     400, "max_length"),
    ("kaito-prompt-too-long", KAITO_URL, {"prompt": LONG}, 400, ""),
    ("kaito-bad-passthrough-value", KAITO_URL, {"prompt": "x", "generate_kwargs": {
        "num_beams": 2, "do_sample": False, "max_new_tokens": 3,
        "no_repeat_ngram_size": "abc"}}, 400, "no_repeat_ngram_size"),
    ("kaito-return-full-text-string", KAITO_URL, {"prompt": "x", "return_full_text": "no"},
     422, "return_full_text"),
]


@pytest.mark.parametrize(("url", "payload", "status", "words"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_malformed_input_is_a_4xx_with_a_message(client, url, payload, status, words):
    if isinstance(payload, str):
        r = await client.post(url, content=payload.encode(),
                              headers={"content-type": "application/json"})
    else:
        r = await client.post(url, content=json.dumps(payload).encode(),
                              headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    body = r.json()
    message = body["error"]["message"] if url.startswith("/v1") else body["detail"]
    assert isinstance(message, str) and message
    assert words.lower() in message.lower()
    if url.startswith("/v1"):
        assert set(body["error"]) == {"message", "type", "param", "code"}


async def test_malformed_requests_never_reach_the_model(client):
    for _, url, payload, _, _ in CASES:
        data = payload if isinstance(payload, str) else json.dumps(payload)
        await client.post(url, content=data.encode(),
                          headers={"content-type": "application/json"})
    text = (await client.get("/metrics")).text
    assert "kaito_inference_prompt_tokens_total 0.0" in text
    assert 'status="500"' not in text


async def test_unknown_route_and_method(client):
    r = await client.get("/v1/nothing")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
    r = await client.get("/chat")
    assert r.status_code == 405 and "detail" in r.json()
