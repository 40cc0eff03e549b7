"""Hostile HTTP requests: each one is a 4xx with a specific message (or served), never a 500.

The table covers the request framing (body size, lying or malformed ``Content-Length``, chunked
bodies, content types), JSON the decoder refuses (invalid UTF-8, deep nesting, huge numbers,
NaN), ``generate_kwargs`` outside its allowlist, OpenAI fields whose values reach generation,
and text the tokenizer cannot take. The socket-level cases run against a real uvicorn server on
127.0.0.1, as do the checks that ``/health`` keeps answering while clients send huge prompts.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from inference_server.app import create_app

from .conftest import serve
from .live_server import live_server, raw_exchange

CHAT_URL, COMPL_URL, KAITO_URL = "/v1/chat/completions", "/v1/completions", "/chat"
MSG = [{"role": "user", "content": "hi"}]
LIMIT = 1024 * 1024
JSON_CT = {"content-type": "application/json"}


def kaito(**generate_kwargs: Any) -> dict[str, Any]:
    return {"prompt": "x", "generate_kwargs": generate_kwargs}


def chat(**kw: Any) -> dict[str, Any]:
    return {"messages": MSG, **kw}


def big_prompt(size: int) -> dict[str, Any]:
    return {"prompt": "a" * size}


# (id, url, body: dict → JSON, bytes → sent as is, headers, expected status, words in message)
CASES: list[tuple[str, str, Any, dict[str, Any], int, str]] = [
    # body size and framing
    ("body-over-limit", CHAT_URL, big_prompt(2 * LIMIT), JSON_CT, 413, "limit of 1048576 bytes"),
    ("body-over-limit-chat", KAITO_URL, big_prompt(2 * LIMIT), JSON_CT, 413, "larger than"),
    ("body-10mb", COMPL_URL, big_prompt(10 * LIMIT), JSON_CT, 413, "10485"),
    ("content-length-lies-small", CHAT_URL, json.dumps(big_prompt(2 * LIMIT)).encode(),
     {**JSON_CT, "content-length": "10"}, 413, "limit of"),
    ("content-length-not-a-number", CHAT_URL, b"{}", {**JSON_CT, "content-length": "ten"},
     400, "content-length"),
    ("content-length-negative", CHAT_URL, b"{}", {**JSON_CT, "content-length": "-1"},
     400, "content-length"),
    ("content-length-huge", KAITO_URL, b"{}", {**JSON_CT, "content-length": "9" * 30},
     400, "content-length"),
    ("content-type-text", CHAT_URL, json.dumps(chat()).encode(), {"content-type": "text/plain"},
     415, "application/json"),
    ("content-type-form", KAITO_URL, b"prompt=x",
     {"content-type": "application/x-www-form-urlencoded"}, 415, "content-type"),
    ("content-type-multipart", COMPL_URL, b"--x--", {"content-type": "multipart/form-data"},
     415, "unsupported"),
    # JSON the decoder refuses
    ("empty-body-chat", KAITO_URL, b"", JSON_CT, 400, "got an empty body"),
    ("empty-body-no-content-type", CHAT_URL, b"", {}, 400,
     "send a JSON object body with Content-Type: application/json"),
    ("json-array", KAITO_URL, b"[1, 2, 3]", JSON_CT, 400, "got a JSON array"),
    ("json-string", CHAT_URL, b'"hello"', JSON_CT, 400, "got a JSON string"),
    ("not-json-no-content-type", COMPL_URL, b"prompt=x", {}, 400,
     "this request had no Content-Type header"),
    ("deeply-nested", CHAT_URL, b"[" * 100_000 + b"]" * 100_000, JSON_CT, 400, "recursion"),
    ("deeply-nested-object", KAITO_URL, b'{"a":' * 50_000 + b"1" + b"}" * 50_000, JSON_CT,
     400, "recursion"),
    ("invalid-utf8", KAITO_URL, b'{"prompt": "\xff\xfe\xfd"}', JSON_CT, 400, "utf-8"),
    ("huge-integer", CHAT_URL, b'{"messages": [], "max_tokens": ' + b"9" * 5000 + b"}",
     JSON_CT, 400, "digits"),
    ("integer-2-pow-64", CHAT_URL, chat(max_tokens=2**64), JSON_CT, 400, "max_tokens"),
    ("float-overflow", CHAT_URL, b'{"messages": [{"role": "user", "content": "x"}], '
     b'"temperature": 1e999}', JSON_CT, 400, "finite"),
    ("nan-temperature", CHAT_URL, b'{"messages": [{"role": "user", "content": "x"}], '
     b'"temperature": NaN}', JSON_CT, 400, "finite"),
    ("infinity-top-p", COMPL_URL, b'{"prompt": "x", "top_p": Infinity}', JSON_CT, 400, "finite"),
    ("lone-surrogate-prompt", KAITO_URL, b'{"prompt": "a\\ud800b"}', JSON_CT, 400, "unicode"),
    ("lone-surrogate-message", CHAT_URL,
     b'{"messages": [{"role": "user", "content": "\\udfff"}]}', JSON_CT, 400, "unicode"),
    # generate_kwargs: the allowlist with types and ranges
    ("gk-num-return-sequences", KAITO_URL, kaito(num_return_sequences=1000), JSON_CT, 400,
     "num_return_sequences"),
    ("gk-unknown-key-lists-allowed", KAITO_URL, kaito(output_scores=True), JSON_CT, 400,
     "allowed keys: bad_words_ids"),
    ("gk-streamer", KAITO_URL, kaito(streamer="stdout"), JSON_CT, 400, "streamer"),
    ("gk-many-unknown", KAITO_URL, kaito(**{f"k{i}": i for i in range(500)}), JSON_CT, 400,
     "497 more"),
    ("gk-bool-as-int", KAITO_URL, kaito(max_new_tokens=True), JSON_CT, 400,
     "generate_kwargs.max_new_tokens"),
    ("gk-float-as-int", KAITO_URL, kaito(top_k=2.5), JSON_CT, 400, "top_k"),
    ("gk-string-temperature", KAITO_URL, kaito(temperature="hot"), JSON_CT, 400, "temperature"),
    ("gk-nan-temperature", KAITO_URL, b'{"prompt": "x", "generate_kwargs": {"temperature": NaN}}',
     JSON_CT, 400, "finite"),
    ("gk-temperature-above-2", KAITO_URL, kaito(temperature=2.5), JSON_CT, 400, "temperature"),
    ("gk-top-p-zero", KAITO_URL, kaito(top_p=0.0), JSON_CT, 400, "top_p"),
    ("gk-top-k-negative", KAITO_URL, kaito(top_k=-1), JSON_CT, 400, "top_k"),
    ("gk-repetition-penalty-zero", KAITO_URL, kaito(repetition_penalty=0), JSON_CT, 400,
     "repetition_penalty"),
    ("gk-seed-negative", KAITO_URL, kaito(seed=-5), JSON_CT, 400, "seed"),
    ("gk-max-length-huge", KAITO_URL, kaito(max_length=10**15), JSON_CT, 400, "max_length"),
    ("gk-num-beams-100", KAITO_URL, kaito(num_beams=100), JSON_CT, 400, "num_beams"),
    ("gk-negative-token-id", KAITO_URL, kaito(bad_words_ids=[[-3]]), JSON_CT, 400,
     "bad_words_ids"),
    ("gk-token-id-outside-vocab", KAITO_URL, kaito(num_beams=2, suppress_tokens=[10**6]),
     JSON_CT, 400, "outside the vocabulary"),
    ("gk-pad-token-outside-vocab", KAITO_URL, kaito(pad_token_id=99_999_999), JSON_CT, 400,
     "outside the vocabulary"),
    ("gk-bad-words-too-many", KAITO_URL, kaito(bad_words_ids=[[1]] * 1000), JSON_CT, 400,
     "bad_words_ids"),
    ("gk-stop-strings-many", KAITO_URL, kaito(stop_strings=["a"] * 100), JSON_CT, 400,
     "at most 4"),
    ("gk-max-time-huge", KAITO_URL, kaito(max_time=1e9), JSON_CT, 400, "max_time"),
    ("gk-early-stopping-string", KAITO_URL, kaito(early_stopping="sometimes"), JSON_CT, 400,
     "early_stopping"),
    ("gk-not-an-object", KAITO_URL, {"prompt": "x", "generate_kwargs": [1, 2]}, JSON_CT, 422,
     "generate_kwargs"),
    # OpenAI fields that reach generation
    ("n-1000", CHAT_URL, chat(n=1000), JSON_CT, 400, "n=1"),
    ("best-of-1000", COMPL_URL, {"prompt": "x", "best_of": 1000}, JSON_CT, 400,
     "best_of=1000 is above"),
    ("logit-bias", CHAT_URL, chat(logit_bias={"1": 100}), JSON_CT, 400, "logit_bias"),
    ("stop-list-huge", CHAT_URL, chat(stop=["x"] * 10_000), JSON_CT, 400, "at most 4"),
    ("stop-string-huge", COMPL_URL, {"prompt": "x", "stop": "y" * 10_000}, JSON_CT, 400,
     "256 characters"),
    ("max-tokens-bool", CHAT_URL, chat(max_tokens=True), JSON_CT, 400, "max_tokens"),
    ("top-k-huge", CHAT_URL, chat(top_k=10**9), JSON_CT, 400, "top_k"),
    ("min-tokens-huge", COMPL_URL, {"prompt": "x", "min_tokens": 10**12}, JSON_CT, 400,
     "min_tokens"),
    ("seed-huge", CHAT_URL, chat(seed=2**70), JSON_CT, 400, "seed"),
    ("model-name-huge", CHAT_URL, chat(model="m" * 100_000), JSON_CT, 404, "does not exist"),
    # prompts the model cannot take
    ("prompt-under-limit-too-long", COMPL_URL, big_prompt(LIMIT - 1000), JSON_CT, 400,
     "maximum context length"),
    ("many-messages", CHAT_URL, {"messages": MSG * 20_000}, JSON_CT, 400,
     "maximum context length"),
    ("many-text-parts", KAITO_URL, {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "hello "}] * 20_000}]}, JSON_CT, 400, "maximum context length"),
]

#: Hostile but legitimate: served normally (200).
ACCEPTED: list[tuple[str, str, Any, dict[str, Any]]] = [
    ("control-characters", COMPL_URL,
     {"prompt": "a\x00b\x01\x07\x1b[31m\r\n\t\u202e\ufeff", "max_tokens": 2}, JSON_CT),
    ("no-content-type", KAITO_URL, kaito(max_new_tokens=2, do_sample=False), {}),
    ("json-with-charset", CHAT_URL, chat(max_tokens=2),
     {"content-type": "application/json; charset=utf-8"}),
    ("vendor-json", COMPL_URL, {"prompt": "x", "max_tokens": 2},
     {"content-type": "application/vnd.api+json"}),
    ("harmless-openai-fields", CHAT_URL, chat(
        max_tokens=2, store=False, metadata={"a": "b"}, service_tier="auto", user="u",
        safety_identifier="s", prompt_cache_key="k", parallel_tool_calls=True,
        prediction={"type": "content", "content": "hi"}, modalities=["text"],
        stream_options=None), JSON_CT),
    ("nulls-mean-defaults", CHAT_URL, chat(
        max_tokens=2, temperature=None, top_p=None, n=None, presence_penalty=None, stop=None,
        seed=None, logprobs=None, top_logprobs=None, tools=None, tool_choice=None,
        response_format=None), JSON_CT),
    ("gk-allowlisted-passthrough", KAITO_URL, kaito(
        num_beams=2, do_sample=False, max_new_tokens=3, no_repeat_ngram_size=2,
        suppress_tokens=[5], bad_words_ids=[[6, 7]], stop_strings=["zz"]), JSON_CT),
    ("gk-explicit-defaults", KAITO_URL, kaito(num_return_sequences=1, num_beams=1,
                                              max_new_tokens=2, use_cache=True), JSON_CT),
]


def _encode(body: Any) -> bytes:
    return body if isinstance(body, bytes) else json.dumps(body).encode()


def _message(url: str, response: httpx.Response) -> str:
    body = response.json()
    if url.startswith("/v1"):
        assert set(body["error"]) == {"message", "type", "param", "code"}, body
        return str(body["error"]["message"])
    return str(body["detail"])


@pytest.mark.parametrize(("url", "body", "headers", "status", "words"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_hostile_request_is_refused_with_a_clear_message(
    client: httpx.AsyncClient, url: str, body: Any, headers: dict[str, Any], status: int,
    words: str,
) -> None:
    r = await client.post(url, content=_encode(body), headers=headers)
    assert r.status_code == status, r.text[:500]
    message = _message(url, r)
    assert words.lower() in message.lower(), message
    assert "\n" not in message and len(message) < 2000, message[:300]


@pytest.mark.parametrize(("url", "body", "headers"), [c[1:] for c in ACCEPTED],
                         ids=[c[0] for c in ACCEPTED])
async def test_hostile_but_legitimate_request_is_served(
    client: httpx.AsyncClient, url: str, body: Any, headers: dict[str, Any]
) -> None:
    r = await client.post(url, content=_encode(body), headers=headers)
    assert r.status_code == 200, r.text[:500]


async def test_no_hostile_request_produced_a_500(client: httpx.AsyncClient) -> None:
    for _, url, body, headers, _, _ in CASES[:12]:
        await client.post(url, content=_encode(body), headers=headers)
    text = (await client.get("/metrics")).text
    assert 'status="413"' in text and 'status="415"' in text
    assert 'status="500"' not in text


async def test_chunked_body_is_cut_at_the_limit_without_reading_the_rest(
    client: httpx.AsyncClient,
) -> None:
    sent = 0
    chunk = b" " * 65536

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        yield b'{"prompt": "'
        for _ in range(160):  # 10 MiB if it were all read
            sent += 1
            yield chunk

    r = await client.post(KAITO_URL, content=body(), headers=JSON_CT)
    assert r.status_code == 413, r.text
    assert "limit of 1048576 bytes" in r.json()["detail"]
    assert sent <= LIMIT // len(chunk) + 1


async def test_body_limit_is_configurable(base_settings: Any, base_engine: Any) -> None:
    settings = base_settings.model_copy(update={"max_body_bytes": 4096})
    async with serve(create_app(settings, base_engine)) as c:
        r = await c.post(COMPL_URL, json={"prompt": "x" * 5000})
        assert r.status_code == 413 and "limit of 4096 bytes" in r.json()["error"]["message"]
        assert r.json()["error"]["code"] == "request_too_large"
        r = await c.post(COMPL_URL, json={"prompt": "hello", "max_tokens": 1})
        assert r.status_code == 200


async def until(check: Any, timeout: float = 30.0) -> None:
    """Wait until `check()` holds (observed state; the deadline only bounds a failure)."""
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)


async def test_tokenization_queue_is_bounded(base_settings: Any, base_engine: Any) -> None:
    """With every tokenizer slot taken, a new prompt is a 429, not an unbounded queue."""
    settings = base_settings.model_copy(update={"tokenizer_threads": 1,
                                                "tokenizer_queue_size": 1})
    app = create_app(settings, base_engine)
    release = threading.Event()
    async with serve(app) as c:
        pool = app.state.runtime.text
        task = asyncio.ensure_future(pool.run(release.wait, 30))
        await until(lambda: pool.pending == 1)  # wait until the blocker holds the only slot
        assert pool.pending == 1
        r = await c.post(COMPL_URL, json={"prompt": "hello", "max_tokens": 1})
        release.set()
        await task
    assert r.status_code == 429, r.text
    assert "tokenized" in r.json()["error"]["message"]


# ------------------------------------------------------------------ real sockets (uvicorn)


@pytest.fixture
def live(base_settings: Any, base_engine: Any) -> Iterator[str]:
    settings = base_settings.model_copy(update={"body_timeout_s": 1.0})
    with live_server(create_app(settings, base_engine)) as url:
        yield url


def _head(path: str, extra: str) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"{extra}\r\n").encode()


def test_socket_chunked_10mb_body_gets_413(live: str) -> None:
    def parts() -> Iterator[bytes]:
        piece = b" " * 65536
        yield b"%x\r\n%s\r\n" % (len(b'{"prompt": "'), b'{"prompt": "')
        for _ in range(160):
            yield b"%x\r\n%s\r\n" % (len(piece), piece)
        yield b"0\r\n\r\n"

    status, response, sent = raw_exchange(live, _head(KAITO_URL, "Transfer-Encoding: chunked\r\n"),
                                          parts())
    assert status == 413, response[:300]
    assert b"limit of 1048576 bytes" in response
    assert b"connection: close" in response.lower()  # the rest is not drained
    assert sent < 160


def test_socket_declared_10mb_body_is_answered_before_it_is_sent(live: str) -> None:
    status, response, sent = raw_exchange(
        live, _head(COMPL_URL, f"Content-Length: {10 * LIMIT}\r\n"), [b" " * 65536] * 160)
    assert status == 413, response[:300]
    assert b"10485760 bytes is larger" in response
    assert b"connection: close" in response.lower()
    assert sent < 160  # the answer came while the client was still sending


def test_socket_body_shorter_than_its_content_length_times_out(live: str) -> None:
    status, response, _ = raw_exchange(live, _head(KAITO_URL, "Content-Length: 1000\r\n"),
                                       [b'{"prompt": "x"'], timeout_s=30)
    assert status == 408, response[:300]
    assert b"not received within 1 s" in response


_JSON_HEAD = "Host: 127.0.0.1\r\nContent-Type: application/json\r\n"
#: Framing only a socket can send; uvicorn (h11) or the app must answer each with a 4xx.
SOCKET_CASES: list[tuple[str, bytes, int, bytes]] = [
    ("header-1mb", b"POST /chat HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * LIMIT
     + b"\r\nContent-Length: 2\r\n\r\n{}", 400, b"Invalid HTTP request"),
    ("bad-request-line", b"POST /chat HTTP/9.9 extra\r\n\r\n", 400, b"Invalid HTTP request"),
    ("conflicting-content-lengths", b"POST /chat HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
     b"Content-Length: 3\r\n\r\n{}", 400, b"Invalid HTTP request"),
    ("bad-chunk-size", f"POST /chat HTTP/1.1\r\n{_JSON_HEAD}Transfer-Encoding: chunked\r\n\r\n"
     .encode() + b"zz\r\n{}\r\n0\r\n\r\n", 400, b"Invalid HTTP request"),
    ("nul-in-path", b"GET /he\x00alth HTTP/1.1\r\nHost: x\r\n\r\n", 400,
     b"Invalid HTTP request"),
    ("content-length-shorter-than-body", f"POST /chat HTTP/1.1\r\n{_JSON_HEAD}"
     "Content-Length: 2\r\n\r\n".encode() + b'{"prompt": "x"}', 422, b"not valid JSON"),
    ("content-length-and-chunked", f"POST /chat HTTP/1.1\r\n{_JSON_HEAD}Content-Length: 5\r\n"
     "Transfer-Encoding: chunked\r\n\r\n".encode() + b"2\r\n{}\r\n0\r\n\r\n", 400,
     b"Text generation parameter prompt required"),
]


@pytest.mark.parametrize(("raw", "status", "words"), [c[1:] for c in SOCKET_CASES],
                         ids=[c[0] for c in SOCKET_CASES])
def test_socket_framing_attack_is_a_4xx(live: str, raw: bytes, status: int, words: bytes) -> None:
    got, response, _ = raw_exchange(live, raw, [], timeout_s=30)
    assert got == status, response[:300]
    assert words in response


def _poll_health(url: str, stop: threading.Event, latencies: list[float],
                 statuses: list[int]) -> None:
    with httpx.Client(base_url=url, timeout=30) as c:
        for _ in range(3000):  # bounded: at most 3000 polls (about 5 minutes)
            if stop.is_set():
                return
            start = time.perf_counter()
            statuses.append(c.get("/health").status_code)
            latencies.append(time.perf_counter() - start)
            stop.wait(0.1)


@pytest.mark.parametrize(("size", "clients"), [(10 * LIMIT, 10), (LIMIT - 4096, 3)],
                         ids=["10MB-413", "1MB-tokenized"])
def test_health_answers_while_clients_send_huge_prompts(live: str, size: int,
                                                        clients: int) -> None:
    """Slow clients are fine; a ``/health`` that stops answering is not (generous bound)."""
    stop = threading.Event()
    latencies: list[float] = []
    statuses: list[int] = []
    poller = threading.Thread(target=_poll_health, args=(live, stop, latencies, statuses))
    poller.start()
    body = json.dumps({"prompt": "The quick brown fox. " * (size // 21)}).encode()[:size - 2]
    body = body[: body.rfind(b" ")] + b'"}'
    results: list[int] = []

    def send() -> None:
        with httpx.Client(base_url=live, timeout=120) as c:
            results.append(c.post(COMPL_URL, content=body, headers=JSON_CT).status_code)

    try:
        for _ in range(600):  # the poller is running before the load starts
            if len(latencies) >= 2:
                break
            assert poller.is_alive()
            time.sleep(0.05)
        senders = [threading.Thread(target=send) for _ in range(clients)]
        for t in senders:
            t.start()
        for t in senders:
            t.join(timeout=300)
    finally:
        stop.set()
        poller.join(timeout=60)
    expected = 413 if size > LIMIT else 400
    assert results == [expected] * clients
    assert statuses and set(statuses) == {200}
    assert max(latencies) < 5.0, sorted(latencies)[-5:]


async def test_text_pool_counts_a_job_until_its_thread_is_done() -> None:
    from inference_server.textpool import TextPool

    pool = TextPool(threads=1, max_pending=2)
    try:
        assert await pool.run(len, "four") == 4
        with pytest.raises(ZeroDivisionError):
            await pool.run(lambda: 1 // 0)
        assert pool.pending == 0
        gate = threading.Event()
        first = asyncio.ensure_future(pool.run(gate.wait, 30))
        second = asyncio.ensure_future(pool.run(gate.wait, 30))
        await until(lambda: pool.pending == 2)
        second.cancel()  # the client left; the queued job is dropped and its slot freed
        await until(lambda: pool.pending == 1)
        assert pool.pending == 1
        gate.set()
        assert await first is True
        assert pool.pending == 0
    finally:
        pool.close()


def test_limits_are_flags_with_bounds(tiny_model_dir: Any) -> None:
    from inference_server.settings import parse_args

    settings = parse_args(["--model-dir", str(tiny_model_dir), "--max-body-bytes", "2048",
                           "--body-timeout-s", "5", "--tokenizer-threads", "3",
                           "--tokenizer-queue-size", "9"])
    assert (settings.max_body_bytes, settings.body_timeout_s) == (2048, 5.0)
    assert (settings.tokenizer_threads, settings.tokenizer_queue_size) == (3, 9)
    assert parse_args(["--model-dir", str(tiny_model_dir)]).max_body_bytes == 1024 * 1024
    for flags in (["--max-body-bytes", "10"], ["--tokenizer-threads", "0"],
                  ["--body-timeout-s", "0"]):
        with pytest.raises(SystemExit):
            parse_args(["--model-dir", str(tiny_model_dir), *flags])


async def test_ignored_fields_are_logged_briefly(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    body = {"prompt": "x", "max_tokens": 1, **{f"extra{i}" + "z" * 100: 1 for i in range(1000)}}
    with caplog.at_level("INFO", logger="inference_server.routers"):
        r = await client.post(COMPL_URL, json=body)
    assert r.status_code == 200, r.text
    (line,) = [rec.getMessage() for rec in caplog.records if "ignoring" in rec.getMessage()]
    assert "and 990 more" in line and len(line) < 1000


JUNK: list[Any] = [True, "1", -1, 0, 10**30, 1e308, -1e-9, [], {}, [1, "a"], "\x00"]
OPENAI_FIELDS = ["max_tokens", "temperature", "top_p", "top_k", "repetition_penalty",
                 "presence_penalty", "frequency_penalty", "stop", "seed", "n", "best_of",
                 "logit_bias", "stream", "stream_options", "ignore_eos", "min_tokens", "model",
                 "max_completion_tokens", "logprobs", "top_logprobs", "response_format", "tools",
                 "tool_choice", "parallel_tool_calls", "modalities", "reasoning_effort",
                 "verbosity", "suffix", "echo", "chat_template_kwargs", "min_p", "guided_json",
                 "skip_special_tokens", "stop_token_ids"]
_CHAT_ONLY = ("max_completion_tokens", "top_logprobs", "response_format", "tools", "tool_choice",
              "parallel_tool_calls", "modalities", "reasoning_effort", "verbosity",
              "chat_template_kwargs")


async def test_junk_in_every_generation_field_is_never_a_500(client: httpx.AsyncClient) -> None:
    """Each ``generate_kwargs`` key and each OpenAI field, with values of every wrong kind."""
    from inference_server.protocol import GenerateKwargs

    statuses: dict[int, int] = {}
    requests = [(KAITO_URL, {"prompt": "Hi", "generate_kwargs": {"max_new_tokens": 2, key: v}})
                for key in sorted(GenerateKwargs.model_fields) for v in JUNK]
    requests += [(CHAT_URL, {**chat(max_tokens=2), key: v}) for key in OPENAI_FIELDS
                 for v in JUNK]
    requests += [(COMPL_URL, {"prompt": "Hi", "max_tokens": 2, key: v}) for key in OPENAI_FIELDS
                 if key not in _CHAT_ONLY for v in JUNK]
    for url, body in requests:
        r = await client.post(url, json=body)
        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
        assert r.status_code in (200, 400, 404), (url, body, r.text[:300])
        if r.status_code != 200:
            assert _message(url, r)
    assert statuses[400] > statuses.get(200, 0)
