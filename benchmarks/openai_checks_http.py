"""More checks of ``openai_conformance.py``: completions, models, error objects, raw bodies.

Registered into ``openai_checks.CHECKS`` on import (after the chat checks).
"""

from __future__ import annotations

import math
from typing import Any

import openai
from openai_checks import EXACT, MODEL, MSG, SPECIAL, Ctx, chat, check, complete

__all__: list[str] = []


# -- completions -----------------------------------------------------------------------------

@check("completions: plain, typed response")
def _plain(ctx: Ctx) -> None:
    r = complete(ctx, extra_body=EXACT)
    assert r.object == "text_completion" and r.choices[0].index == 0
    assert r.usage.completion_tokens == 8 and isinstance(r.choices[0].text, str)


@check("completions: prompt as a one-item list")
def _list_prompt(ctx: Ctx) -> None:
    assert complete(ctx, prompt=["The quick"]).choices[0].text == complete(ctx).choices[0].text


@check("completions: prompt as token ids")
def _token_prompt(ctx: Ctx) -> None:
    r = ctx.client.completions.create(model=MODEL, prompt=[5, 6, 7], max_tokens=3,
                                      temperature=0, extra_body=EXACT)
    assert r.usage.prompt_tokens == 3 and r.usage.completion_tokens == 3


@check("completions: two prompts", "prompt")
def _two_prompts(ctx: Ctx) -> None:
    complete(ctx, prompt=["a", "b"])


@check("completions: echo")
def _echo(ctx: Ctx) -> None:
    assert complete(ctx, echo=True).choices[0].text == "The quick" + complete(ctx).choices[0].text


@check("completions: logprobs=2 (legacy shape)")
def _logprobs(ctx: Ctx) -> None:
    r = complete(ctx, logprobs=2, extra_body=EXACT)
    lp = r.choices[0].logprobs
    text = r.choices[0].text
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.text_offset) == 8
    assert lp.text_offset == sorted(lp.text_offset) and lp.text_offset[-1] <= len(text)
    for token, offset in zip(lp.tokens, lp.text_offset, strict=True):  # text_offset indexes text
        if not token.startswith("bytes:") and not SPECIAL.fullmatch(token):
            assert text[offset:offset + len(token)] == token, (token, offset, text)
    assert all(top[t] == v and len(top) <= 3 for t, v, top in
               zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True))


@check("completions: logprobs above 5", "logprobs")
def _logprobs_cap(ctx: Ctx) -> None:
    complete(ctx, logprobs=6)


@check("completions: best_of=3")
def _best_of(ctx: Ctx) -> None:
    r = complete(ctx, best_of=3, temperature=1.0, seed=2, logprobs=0, extra_body=EXACT)
    assert len(r.choices) == 1 and r.usage.completion_tokens == 24
    mean = sum(r.choices[0].logprobs.token_logprobs) / 8
    assert math.isfinite(mean)


@check("completions: n=2, streamed")
def _stream_n(ctx: Ctx) -> None:
    chunks = list(complete(ctx, n=2, stream=True, temperature=1.0, seed=3, extra_body=EXACT,
                           stream_options={"include_usage": True}))
    texts = ["".join(c.text for ch in chunks for c in ch.choices if c.index == i) for i in (0, 1)]
    assert all(texts) and texts[0] != texts[1] and chunks[-1].usage.completion_tokens == 16


@check("completions: stop, seed, top_p, penalties")
def _sampling(ctx: Ctx) -> None:
    full = complete(ctx, max_tokens=16, extra_body=EXACT).choices[0].text
    cut = full[len(full) // 2:][:3]
    assert complete(ctx, max_tokens=16, stop=cut, extra_body=EXACT).choices[0].text == full[
        : full.index(cut)]
    a, b = (complete(ctx, temperature=1.0, seed=4).choices[0].text for _ in range(2))
    assert a == b
    assert complete(ctx, temperature=1.0, top_p=1e-9).choices[0].text == complete(
        ctx).choices[0].text
    assert complete(ctx, max_tokens=30, presence_penalty=2.0, extra_body=EXACT).choices[
        0].text != complete(ctx, max_tokens=30, extra_body=EXACT).choices[0].text


@check("completions: suffix", "suffix")
def _suffix(ctx: Ctx) -> None:
    complete(ctx, suffix="end")


@check("completions: echo + logprobs", "echo")
def _echo_logprobs(ctx: Ctx) -> None:
    complete(ctx, echo=True, logprobs=1)


@check("completions: best_of < n", "best_of")
def _best_of_small(ctx: Ctx) -> None:
    complete(ctx, best_of=1, n=2)


@check("completions: logit_bias", "logit_bias")
def _logit_bias(ctx: Ctx) -> None:
    complete(ctx, logit_bias={"5": 3})


# -- models, raw responses, error objects ----------------------------------------------------

@check("models.list")
def _models(ctx: Ctx) -> None:
    page = ctx.client.models.list()
    assert [m.id for m in page] == [MODEL] and page.data[0].object == "model"
    assert page.data[0].owned_by


@check("models.retrieve (id with '/')")
def _retrieve(ctx: Ctx) -> None:
    card = ctx.client.models.retrieve(MODEL)
    assert card.id == MODEL and card.created > 0


@check("models.retrieve of another id", "org/other")
def _retrieve_other(ctx: Ctx) -> None:
    ctx.client.models.retrieve("org/other")


@check("with_raw_response: headers, status, parse()")
def _raw(ctx: Ctx) -> None:
    raw = ctx.client.chat.completions.with_raw_response.create(model=MODEL, messages=MSG,
                                                               max_tokens=2)
    assert raw.status_code == 200 and raw.headers["content-type"].startswith("application/json")
    assert raw.parse().choices[0].message.role == "assistant"


@check("error object: .status_code .code .param .type")
def _error_object(ctx: Ctx) -> None:
    try:
        chat(ctx, max_tokens=600)  # under the cap (1024), over the context (512)
    except openai.BadRequestError as exc:
        assert exc.status_code == 400 and exc.param == "max_tokens"
        assert exc.code == "context_length_exceeded" and exc.type == "invalid_request_error"
        assert isinstance(exc.body, dict) and exc.body["message"] in exc.message
        return
    raise AssertionError("no error")


@check("error object: 404 model .code model_not_found")
def _error_404(ctx: Ctx) -> None:
    try:
        ctx.client.chat.completions.create(model="nope", messages=MSG, max_tokens=2)
    except openai.NotFoundError as exc:
        assert exc.code == "model_not_found" and exc.param == "model"
        return
    raise AssertionError("no error")


@check("error object: validation error names its param")
def _error_param(ctx: Ctx) -> None:
    try:
        chat(ctx, temperature="hot")
    except openai.BadRequestError as exc:
        assert exc.param == "temperature" and "temperature" in exc.message
        return
    raise AssertionError("no error")


@check("error in a stream: a clear API error")
def _stream_error(ctx: Ctx) -> None:
    try:
        list(chat(ctx, stream=True, max_tokens=10**6))
    except openai.BadRequestError as exc:
        assert "max_tokens" in exc.message
        return
    raise AssertionError("no error")


# -- bodies and content types (plain HTTP) ---------------------------------------------------

def _post(ctx: Ctx, body: bytes, headers: dict[str, str] | None = None) -> Any:
    r = ctx.http.post("/v1/chat/completions", content=body, headers=headers or {})
    if r.status_code >= 400:
        error = r.json()["error"]
        raise openai.APIStatusError(error["message"], response=r, body=error)
    return r


_JSON = b'{"model": "org/tiny", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}'


@check("body: JSON without Content-Type is served")
def _no_type(ctx: Ctx) -> None:
    assert _post(ctx, _JSON).json()["choices"][0]["message"]["role"] == "assistant"


@check("body: empty", "Content-Type: application/json", "empty")
def _empty(ctx: Ctx) -> None:
    _post(ctx, b"", {"content-type": "application/json"})


@check("body: a JSON array", "Content-Type: application/json", "array")
def _array(ctx: Ctx) -> None:
    _post(ctx, b"[1, 2]", {"content-type": "application/json"})


@check("body: not JSON, no Content-Type", "Content-Type: application/json")
def _garbage(ctx: Ctx) -> None:
    _post(ctx, b"model=tiny&messages=hi")


@check("body: form-encoded", "Content-Type: application/json")
def _form(ctx: Ctx) -> None:
    _post(ctx, b"model=tiny", {"content-type": "application/x-www-form-urlencoded"})


@check("body: invalid JSON", "JSON")
def _invalid(ctx: Ctx) -> None:
    _post(ctx, b'{"model": ', {"content-type": "application/json"})


@check("embeddings (not served): 404 that says what is served", "/v1/embeddings",
       "/v1/chat/completions")
def _embeddings(ctx: Ctx) -> None:
    ctx.client.embeddings.create(model=MODEL, input="hi")


@check("GET on a POST route: 405 that names the method", "POST")
def _wrong_method(ctx: Ctx) -> None:
    r = ctx.http.get("/v1/chat/completions")
    error = r.json()["error"]
    raise openai.APIStatusError(error["message"], response=r, body=error)


# -- other servers' extensions (extra_body) --------------------------------------------------

for _name, _extra, _word in [
    ("vLLM guided_json", {"guided_json": {"type": "object"}}, "guided_json"),
    ("vLLM guided_choice", {"guided_choice": ["a", "b"]}, "guided_choice"),
    ("min_p", {"min_p": 0.1}, "min_p"),
    ("stop_token_ids", {"stop_token_ids": [2]}, "stop_token_ids"),
    ("chat_template", {"chat_template": "{{ messages }}"}, "chat_template"),
    ("chat_template_kwargs the template ignores", {"chat_template_kwargs": {"enable_x": True}},
     "enable_x"),
]:
    check(f"extension: {_name}", _word)(lambda ctx, e=_extra: chat(ctx, extra_body=e))


@check("extension: neutral values accepted (min_p 0, skip_special_tokens true)")
def _neutral(ctx: Ctx) -> None:
    r = chat(ctx, extra_body={"min_p": 0.0, "skip_special_tokens": True, "top_k": 0})
    assert r.choices[0].message.content == chat(ctx).choices[0].message.content


@check("extension: top_k, repetition_penalty, min_tokens")
def _extensions(ctx: Ctx) -> None:
    assert chat(ctx, temperature=1.0, extra_body={"top_k": 1}).choices[0].message.content == chat(
        ctx).choices[0].message.content
    assert chat(ctx, max_tokens=30, extra_body={"repetition_penalty": 5.0, **EXACT}).choices[
        0].message.content != chat(ctx, max_tokens=30, extra_body=EXACT).choices[0].message.content
    assert chat(ctx, max_tokens=9, extra_body={"min_tokens": 9}).usage.completion_tokens == 9


@check("completions: logprobs streamed (text_offset continues)")
def _stream_logprobs(ctx: Ctx) -> None:
    chunks = list(complete(ctx, stream=True, logprobs=1, extra_body=EXACT))
    offsets = [o for ch in chunks for c in ch.choices if c.logprobs for o in c.logprobs.text_offset]
    text = "".join(c.text for ch in chunks for c in ch.choices)
    assert len(offsets) == 8 and offsets == sorted(offsets) and offsets[-1] <= len(text)
