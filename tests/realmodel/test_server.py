"""The real server process on the real model: `python -m inference_server` serving Gemma 3 270M
(converted from the packaged GGUF) answers sensibly, greedily, on both APIs."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.slow


def test_chat_prompt_continues_kubernetes_with_containers(gemma_server: str):
    body = {"prompt": "Kubernetes is",
            "generate_kwargs": {"do_sample": False, "max_new_tokens": 24}}
    with httpx.Client(base_url=gemma_server, timeout=120) as client:
        response = client.post("/chat", json=body)
    assert response.status_code == 200, response.text
    result = response.json()["Result"]
    assert result.startswith("Kubernetes is"), result
    continuation = result.removeprefix("Kubernetes is")
    assert "container" in continuation.lower(), result


def test_openai_chat_uses_the_base_model_template_and_stops(gemma_server: str):
    """The folder has no template of its own but the base-model one ("Question:/Answer:"); the
    untuned model would go on with a next "Question:", which the folder's stop string ends."""
    body = {"model": "gemma-3-270m", "temperature": 0, "max_tokens": 96,
            "messages": [{"role": "user", "content": "What is Kubernetes?"}]}
    with httpx.Client(base_url=gemma_server, timeout=180) as client:
        response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    answer = choice["message"]["content"]
    assert "container" in answer.lower(), answer
    assert "Question:" not in answer and "Answer:" not in answer, answer
    assert choice["finish_reason"] == "stop", (choice, answer)
    usage = response.json()["usage"]
    assert usage["completion_tokens"] < body["max_tokens"], usage
    prompt_tokens = usage["prompt_tokens"]
    # "<bos>Question: What is Kubernetes?\nAnswer:" is a handful of tokens, not a raw dump
    assert 5 <= prompt_tokens <= 20, usage
