"""`kaito chat`: a question goes to /chat as a user message (the model's chat template renders
it), `--raw` sends text to continue; the printed curl line is exactly what was sent."""

from __future__ import annotations

import argparse
import json
import shlex
from typing import Any

import httpx
import pytest

from kaito_sandbox import cli


class FakePost:
    def __init__(self, status: int, answer: dict[str, Any]) -> None:
        self.status, self.answer = status, answer
        self.sent: list[dict[str, Any]] = []

    def __call__(self, url: str, *, json: dict[str, Any], timeout: float) -> httpx.Response:
        assert url == "http://127.0.0.1:4321/chat"
        self.sent.append(json)
        return httpx.Response(self.status, json=self.answer)


def _chat(monkeypatch: pytest.MonkeyPatch, post: FakePost, prompt: str, raw: bool) -> int:
    monkeypatch.setattr(cli, "_need", lambda: {"services": {"default/ws": 4321}})
    monkeypatch.setattr(httpx, "post", post)
    args = argparse.Namespace(name="ws", prompt=prompt, namespace="default", raw=raw,
                              max_new_tokens=48, timeout=5.0)
    return cli.chat(args, catalog=None)  # type: ignore[arg-type]  # chat reads no catalog


def _curl_body(err: str) -> Any:
    words = shlex.split(next(line for line in err.splitlines() if line.startswith("$ curl")))
    return json.loads(words[words.index("-d") + 1])


def test_a_question_is_sent_as_a_user_message_and_the_answer_printed(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    post = FakePost(200, {"Result": " Kubernetes is a container orchestrator.\n"})
    question = "What's Kubernetes? (it's \"k8s\")"
    assert _chat(monkeypatch, post, question, raw=False) == 0
    out, err = capsys.readouterr()
    assert out == "Kubernetes is a container orchestrator.\n"
    assert post.sent == [{"messages": [{"role": "user", "content": question}],
                          "generate_kwargs": {"max_new_tokens": 48, "do_sample": False}}]
    assert _curl_body(err) == post.sent[0]  # the curl line sends the same body, quotes and all


def test_raw_sends_text_to_continue(monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    post = FakePost(200, {"Result": "Kubernetes is a container orchestrator."})
    assert _chat(monkeypatch, post, "Kubernetes is", raw=True) == 0
    out, err = capsys.readouterr()
    assert out == "Kubernetes is a container orchestrator.\n"
    assert post.sent[0]["prompt"] == "Kubernetes is" and "messages" not in post.sent[0]
    assert _curl_body(err) == post.sent[0]


def test_a_model_without_chat_template_gets_a_hint(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    post = FakePost(400, {"detail": "the model has no chat template; start the server with "
                                    "--chat-template"})
    assert _chat(monkeypatch, post, "Hi?", raw=False) == 1
    err = capsys.readouterr().err
    assert "HTTP 400" in err and "with --raw" in err

