"""Regressions found by the conformance sweep (``benchmarks/openai_conformance.py``), in process.

Each test pins an answer that used to be wrong or vague for a client: ``text_offset`` that
counted token strings instead of the text, completions' token-id prompts, other servers'
extension fields answered 200 and ignored, content parts and routes refused with messages that
did not say what was wrong, and ``chat_template_kwargs``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from inference_server.app import create_app
from inference_server.engine import TransformersEngine
from inference_server.routers._openai_output import LegacyLogprobs
from inference_server.sampling import TokenLogprob
from inference_server.settings import ServerSettings
from inference_server.tiny_model import CHAT_TEMPLATE

from .conftest import serve
from .test_openai_api import sse_events

CHAT_URL, COMPL_URL = "/v1/chat/completions", "/v1/completions"
MSG = [{"role": "user", "content": "Hello"}]


class _Pieces:
    """Token texts and bytes of a made-up vocabulary: '€' split over two tokens, a special."""

    RAW = {1: b"a", 2: b"\xe2\x82", 3: b"\xac", 4: b"<|end|>", 5: b"b", 6: b"\xe4"}

    def token_bytes(self, ids: list[int]) -> list[bytes]:
        return [self.RAW[i] for i in ids]

    def token_strings(self, ids: list[int]) -> list[str]:
        return [r.decode() if i not in (2, 3, 6) else f"bytes:{r!r}" for i, r in
                zip(ids, self.token_bytes(ids), strict=True)]

    def special_tokens(self) -> frozenset[str]:
        return frozenset({"<|end|>"})


def test_text_offset_indexes_the_text_not_the_token_strings():
    builder = LegacyLogprobs(_Pieces(), top=0)  # type: ignore[arg-type]
    lps = [TokenLogprob(i, -1.0, ()) for i in (1, 2, 3, 4, 5)]
    first, rest = builder.build(lps[:2]), builder.build(lps[2:])  # offsets go on across events
    # text "a€b": '€' starts at 1 (both of its tokens), the special token adds nothing
    assert first.text_offset + rest.text_offset == [0, 1, 1, 2, 2]
    # text "a€b�b": the lone lead byte is one U+FFFD, known to be one when the next token comes
    tail = builder.build([TokenLogprob(6, -1.0, ()), TokenLogprob(5, -1.0, ())])
    assert tail.text_offset == [3, 4]


async def test_completion_text_offsets_match_the_text(client):
    body = {"prompt": "The quick", "max_tokens": 24, "temperature": 0, "ignore_eos": True,
            "logprobs": 1}
    choice = (await client.post(COMPL_URL, json=body)).json()["choices"][0]
    text, lp = choice["text"], choice["logprobs"]
    assert lp["text_offset"] == sorted(lp["text_offset"]) and lp["text_offset"][-1] <= len(text)
    for token, offset in zip(lp["tokens"], lp["text_offset"], strict=True):
        if not token.startswith("bytes:") and not token.startswith("<"):
            assert text[offset:offset + len(token)] == token


async def test_completion_prompt_as_token_ids(client, base_engine):
    ids = base_engine.encode_prompt("The quick")
    body = {"max_tokens": 4, "temperature": 0, "ignore_eos": True}
    by_text = (await client.post(COMPL_URL, json={**body, "prompt": "The quick"})).json()
    for prompt in (ids, [ids]):
        r = (await client.post(COMPL_URL, json={**body, "prompt": prompt, "echo": True})).json()
        assert r["usage"]["prompt_tokens"] == len(ids)
        assert r["choices"][0]["text"] == base_engine.decode(ids) + by_text["choices"][0]["text"]
    r = await client.post(COMPL_URL, json={**body, "prompt": [ids, ids]})
    assert r.status_code == 400 and "exactly one prompt" in r.json()["error"]["message"]


@pytest.mark.parametrize(("extra", "words"), [
    ({"guided_json": {"type": "object"}}, "response_format"),
    ({"guided_regex": "a+"}, "guided_regex"),
    ({"min_p": 0.1}, "min_p"),
    ({"stop_token_ids": [2]}, "stop_token_ids"),
    ({"skip_special_tokens": False}, "skip_special_tokens"),
    ({"chat_template": "{{ messages }}"}, "chat_template"),
    ({"continue_final_message": True}, "continue_final_message"),
    ({"logit_bias": {"3": 1.0}}, "logit_bias"),
])
async def test_other_servers_extensions_are_400s_that_name_them(client, extra, words):
    r = await client.post(CHAT_URL, json={"messages": MSG, "max_tokens": 2, **extra})
    error = r.json()["error"]
    assert r.status_code == 400 and words in error["message"] and error["param"] == next(
        iter(extra))


async def test_extensions_at_their_neutral_values_are_accepted(client):
    body: dict[str, Any] = {"messages": MSG, "max_tokens": 4, "temperature": 0}
    plain = (await client.post(CHAT_URL, json=body)).json()["choices"][0]["message"]
    neutral = {"min_p": 0.0, "skip_special_tokens": True, "add_generation_prompt": True,
               "logit_bias": {}, "stop_token_ids": [], "echo": False, "use_beam_search": False}
    r = await client.post(CHAT_URL, json={**body, **neutral})
    assert r.status_code == 200 and r.json()["choices"][0]["message"] == plain
    r = await client.post(COMPL_URL, json={"prompt": "x", "max_tokens": 2, "min_p": 0.2})
    assert r.status_code == 400 and "min_p" in r.json()["error"]["message"]


@pytest.mark.parametrize(("message", "words"), [
    ({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]},
     "'image_url' are not supported"),
    ({"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}, "input_audio"),
    ({"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": "{}"}},
     "send the call as tool_calls"),
])
async def test_message_parts_and_fields_refused_by_name(client, message, words):
    r = await client.post(CHAT_URL, json={"messages": [*MSG, message], "max_tokens": 2})
    assert r.status_code == 400 and words in r.json()["error"]["message"]


async def test_unknown_routes_and_methods_say_what_is_served(client):
    r = await client.post("/v1/embeddings", json={"input": "x"})
    error = r.json()["error"]
    assert r.status_code == 404 and error["type"] == "not_found_error"
    assert "POST /v1/embeddings: no such route" in error["message"]
    assert "POST /v1/chat/completions" in error["message"] and "GET /v1/models" in error["message"]
    r = await client.get(CHAT_URL)
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    assert "this route takes POST" in r.json()["error"]["message"]


async def test_unsupported_content_type_says_what_to_send(client):
    r = await client.post(CHAT_URL, content=b"x=1",
                          headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415
    assert "send a JSON object body with Content-Type: application/json" in r.json()["error"][
        "message"]


async def test_schema_the_library_refuses_names_response_format(client):
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": {
        "type": "object", "properties": {"a": {"$ref": "#/nowhere"}}, "required": ["a"]}}}
    r = await client.post(CHAT_URL, json={"messages": MSG, "response_format": fmt})
    error = r.json()["error"]
    assert r.status_code == 400 and error["param"] == "response_format"
    assert error["message"].startswith("response_format: ")


async def test_chat_template_kwargs_reach_a_template_that_uses_them(
        base_settings: ServerSettings, tmp_path: Path):
    template = tmp_path / "thinking.jinja"
    template.write_text(CHAT_TEMPLATE.replace(
        "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}",
        "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}"
        "{% if enable_thinking %}{{ 'Let me think.' }}{% endif %}{% endif %}"))
    settings = base_settings.model_copy(update={"chat_template": str(template)})
    engine = TransformersEngine.load(settings)
    body: dict[str, Any] = {"messages": MSG, "max_tokens": 1}
    async with serve(create_app(settings, engine)) as c:
        plain = (await c.post(CHAT_URL, json=body)).json()["usage"]["prompt_tokens"]
        r = await c.post(CHAT_URL, json={**body, "chat_template_kwargs": {
            "enable_thinking": True}})
        assert r.json()["usage"]["prompt_tokens"] > plain
        for kwargs, words in [({"other": 1}, "chat_template_kwargs.other is not supported"),
                              ({"messages": []}, "not a variable a request may set")]:
            r = await c.post(CHAT_URL, json={**body, "chat_template_kwargs": kwargs})
            assert r.status_code == 400 and words in r.json()["error"]["message"]


def _stop_across_a_token_boundary(tokens: list[str], offsets: list[int],
                                  text: str) -> tuple[str, int]:
    """A stop string made of one token's last character and the next one's first, and how many
    tokens start before it (the stop string's first occurrence must be that boundary)."""
    for k in range(len(tokens) // 2, len(tokens) - 1):
        if any(t.startswith(("bytes:", "<")) or not t for t in tokens[k:k + 2]):
            continue
        at = offsets[k + 1] - 1
        if text.find(text[at:at + 2]) == at:
            return text[at:at + 2], k + 1
    raise AssertionError(f"no usable token boundary in {tokens}")


@pytest.mark.parametrize("stream", [False, True])
async def test_logprobs_end_where_a_stop_string_cuts_the_text(client, stream):
    body = {"prompt": "The quick", "max_tokens": 24, "temperature": 0, "ignore_eos": True,
            "logprobs": 1}
    full = (await client.post(COMPL_URL, json=body)).json()["choices"][0]
    lp = full["logprobs"]
    stop, kept = _stop_across_a_token_boundary(lp["tokens"], lp["text_offset"], full["text"])
    if stream:
        chunks = [json.loads(e) for e in sse_events(
            (await client.post(COMPL_URL, json={**body, "stop": stop, "stream": True})).text)[:-1]]
        tokens = [t for c in chunks if c["choices"][0]["logprobs"]
                  for t in c["choices"][0]["logprobs"]["tokens"]]
        text = "".join(c["choices"][0]["text"] for c in chunks)
    else:
        choice = (await client.post(COMPL_URL, json={**body, "stop": stop})).json()["choices"][0]
        tokens, text = choice["logprobs"]["tokens"], choice["text"]
    assert text == full["text"][: full["text"].index(stop)]
    assert tokens == lp["tokens"][:kept]  # the token after the boundary is not reported
    # chat: the same stop string; streamed and not, the last token reported starts before it
    chat = {"messages": MSG, "max_tokens": 24, "temperature": 0, "ignore_eos": True,
            "logprobs": True, "stop": [stop]}
    cut = (await client.post(CHAT_URL, json=chat)).json()
    entries = cut["choices"][0]["logprobs"]["content"]
    streamed = [e for c in sse_events((await client.post(CHAT_URL, json={
        **chat, "stream": True})).text)[:-1] for choice in json.loads(c)["choices"]
        for e in (choice.get("logprobs") or {}).get("content") or []]
    assert streamed == entries
    if cut["choices"][0]["finish_reason"] == "stop":
        before_last = b"".join(bytes(e["bytes"]) for e in entries[:-1]
                               if not e["token"].startswith("<|"))
        content = cut["choices"][0]["message"]["content"]
        assert len(before_last.decode("utf-8", "replace")) < len(content)
