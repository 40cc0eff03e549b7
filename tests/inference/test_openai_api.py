"""The OpenAI-compatible routes: shapes, usage, streaming, stop sequences, models."""

from __future__ import annotations

import json

import pytest

CHAT = [{"role": "user", "content": "Tell me about Kubernetes."}]


def sse_events(text: str) -> list[str]:
    """Split an SSE body into ``data:`` payloads, checking the framing on the way."""
    assert text.endswith("\n\n")
    frames = text.split("\n\n")[:-1]
    assert all(f.startswith("data: ") for f in frames), frames
    return [f[len("data: "):] for f in frames]


async def test_chat_completion_shape_and_usage(client, base_engine):
    r = await client.post("/v1/chat/completions",
                          json={"model": "tiny", "messages": CHAT, "max_tokens": 12,
                                "temperature": 0})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion" and body["model"] == "tiny"
    assert body["id"].startswith("chatcmpl-")
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["finish_reason"] in ("stop", "length")
    usage = body["usage"]
    assert usage["prompt_tokens"] == len(base_engine.encode_chat(CHAT))
    assert 1 <= usage["completion_tokens"] <= 12
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_ignore_eos_generates_exactly_max_tokens(client):
    r = await client.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 40,
                                                   "ignore_eos": True, "temperature": 0})
    body = r.json()
    assert body["usage"]["completion_tokens"] == 40
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["object"] == "text_completion"


async def test_completion_echo(client):
    base = {"prompt": "Hello", "max_tokens": 8, "temperature": 0}
    plain = (await client.post("/v1/completions", json=base)).json()["choices"][0]["text"]
    echoed = (await client.post("/v1/completions", json={**base, "echo": True})).json()
    assert echoed["choices"][0]["text"] == "Hello" + plain


@pytest.mark.parametrize("route", ["/v1/chat/completions", "/v1/completions"])
async def test_stream_equals_non_stream(client, route):
    body = {"max_tokens": 30, "temperature": 0, "min_tokens": 30}
    body |= {"messages": CHAT} if "chat" in route else {"prompt": "Once upon a time"}
    whole = (await client.post(route, json=body)).json()
    r = await client.post(route, json={**body, "stream": True,
                                       "stream_options": {"include_usage": True}})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert len({c["id"] for c in chunks}) == 1
    usage = chunks[-1]["usage"]
    assert chunks[-1]["choices"] == [] and usage == whole["usage"]
    if "chat" in route:
        assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1])
        expected = whole["choices"][0]["message"]["content"]
    else:
        text = "".join(c["choices"][0]["text"] for c in chunks[:-1])
        expected = whole["choices"][0]["text"]
    finals = [c["choices"][0]["finish_reason"] for c in chunks[:-1]]
    assert finals[-1] == whole["choices"][0]["finish_reason"]
    assert all(f is None for f in finals[:-1])
    assert text == expected and len(chunks) > 5  # really incremental


async def test_stop_sequence_cuts_output(client):
    base = {"prompt": "The quick brown fox", "max_tokens": 40, "temperature": 0,
            "ignore_eos": True}
    full = (await client.post("/v1/completions", json=base)).json()["choices"][0]["text"]
    stop = full[10:13]
    assert len(stop) == 3 and full.find(stop) >= 1
    cut = full[: full.find(stop)]
    r = (await client.post("/v1/completions", json={**base, "stop": [stop, "@@never@@"]})).json()
    assert r["choices"][0]["text"] == cut
    assert r["choices"][0]["finish_reason"] == "stop"
    s = await client.post("/v1/completions", json={**base, "stop": stop, "stream": True})
    chunks = [json.loads(e) for e in sse_events(s.text)[:-1]]
    assert "".join(c["choices"][0]["text"] for c in chunks) == cut


async def test_unknown_model_is_404_in_openai_shape(client):
    r = await client.post("/v1/completions", json={"model": "gpt-9", "prompt": "x"})
    assert r.status_code == 404
    err = r.json()["error"]
    assert err["code"] == "model_not_found" and "gpt-9" in err["message"]


async def test_models_lists_served_model(client, base_engine):
    r = await client.get("/v1/models")
    data = r.json()["data"]
    assert [m["id"] for m in data] == ["tiny"]
    assert data[0]["max_model_len"] == base_engine.info.context_length == 512
    assert data[0]["adapters"] == []


async def test_max_tokens_above_cap_is_400(client, base_settings):
    cap = base_settings.max_new_tokens_cap
    r = await client.post("/v1/chat/completions", json={"messages": CHAT, "max_tokens": cap + 1})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "max_tokens" and str(cap) in r.json()["error"]["message"]


async def test_unsupported_extra_fields_are_ignored(client):
    r = await client.post("/v1/chat/completions",
                          json={"messages": CHAT, "max_tokens": 3, "tools_choice_x": "auto",
                                "metadata": {"a": 1}})
    assert r.status_code == 200
