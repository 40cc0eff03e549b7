"""The OpenAI-compatible subset: chat completions, completions (both streamable), models.

Streams are server-sent events, ``data: <json>\\n\\n`` per chunk, ending with ``data: [DONE]``,
as OpenAI's client libraries expect. An error after the stream has started cannot change the
status code any more, so it is sent as one ``data: {"error": ...}`` event before ``[DONE]``.
Prompts are tokenized (and chat templates rendered) on the runtime's text pool, off the event
loop, before anything is queued for the model.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from ..batching import RequestHandle
from ..engine import Engine
from ..errors import ModelNotFoundError, ServerError
from ..protocol import (
    AssistantMessage,
    ChatChoice,
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    ModelCard,
    ModelList,
    Usage,
    _SamplingRequest,
    new_id,
    now,
)
from ..service import messages_to_dicts, openai_params
from ..state import RuntimeDep
from ._common import collect, log_ignored, stream_events

router = APIRouter(prefix="/v1", tags=["openai"])


def _check_model(req: _SamplingRequest, engine: Engine) -> str:
    name = engine.info.model_name
    if req.model is not None and req.model != name:
        shown = req.model if len(req.model) <= 100 else req.model[:100] + "..."
        raise ModelNotFoundError(f"The model {shown!r} does not exist; this server serves "
                                 f"'{name}'")
    return name


def _usage(handle: RequestHandle) -> Usage:
    p, c = len(handle.prompt_ids), handle.completion_tokens
    return Usage(prompt_tokens=p, completion_tokens=c, total_tokens=p + c)


def _sse(payload: dict[str, Any] | str) -> str:
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {data}\n\n"


async def _sse_stream(
    request: Request,
    handle: RequestHandle,
    include_usage: bool,
    chunk: Callable[[str | None, str | None], dict[str, Any]],
    first: dict[str, Any] | None,
) -> AsyncIterator[str]:
    """SSE frames for one request; ``chunk(text, finish_reason)`` builds a chunk body."""
    try:
        if first is not None:
            yield _sse(first)
        async for event in stream_events(request, handle):
            if event.text:
                yield _sse(chunk(event.text, None))
            if event.finish_reason is not None:
                yield _sse(chunk(None, event.finish_reason))
        if include_usage:
            yield _sse({**chunk(None, None), "choices": [], "usage": _usage(handle).model_dump()})
    except ServerError as exc:
        yield _sse({"error": {"message": exc.message, "type": exc.error_type,
                              "param": exc.param, "code": exc.code}})
    yield _sse("[DONE]")


def _streaming(gen: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(
        gen, media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )


@router.post("/chat/completions", response_model=None)
async def chat_completions(
    body: ChatCompletionRequest, request: Request, runtime: RuntimeDep
) -> ChatCompletionResponse | StreamingResponse:
    engine, scheduler = runtime.require_ready()
    model = _check_model(body, engine)
    log_ignored("/v1/chat/completions", body.ignored_fields())
    prompt_ids = await runtime.text.run(engine.encode_chat, messages_to_dicts(body.messages))
    max_tokens = body.max_completion_tokens or body.max_tokens
    params = openai_params(body, len(prompt_ids), engine, runtime.settings.max_new_tokens_cap,
                           max_tokens)
    handle = scheduler.submit(prompt_ids, params)
    rid, created = new_id("chatcmpl"), now()
    if body.stream:
        def chunk(text: str | None, finish: str | None) -> dict[str, Any]:
            delta = {} if text is None else {"content": text}
            return {"id": rid, "object": "chat.completion.chunk", "created": created,
                    "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

        first = chunk(None, None)
        first["choices"][0]["delta"] = {"role": "assistant", "content": ""}
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return _streaming(_sse_stream(request, handle, include_usage, chunk, first))
    result = await collect(request, handle)
    return ChatCompletionResponse(
        id=rid, created=created, model=model,
        choices=[ChatChoice(message=AssistantMessage(content=result.text),
                            finish_reason=result.finish_reason)],
        usage=_usage(handle),
    )


@router.post("/completions", response_model=None)
async def completions(
    body: CompletionRequest, request: Request, runtime: RuntimeDep
) -> CompletionResponse | StreamingResponse:
    engine, scheduler = runtime.require_ready()
    model = _check_model(body, engine)
    log_ignored("/v1/completions", body.ignored_fields())
    prompt = body.prompt_text()
    prompt_ids = await runtime.text.run(engine.encode_prompt, prompt)
    params = openai_params(body, len(prompt_ids), engine, runtime.settings.max_new_tokens_cap,
                           body.max_tokens)
    handle = scheduler.submit(prompt_ids, params)
    rid, created = new_id("cmpl"), now()
    if body.stream:
        def chunk(text: str | None, finish: str | None) -> dict[str, Any]:
            return {"id": rid, "object": "text_completion", "created": created, "model": model,
                    "choices": [{"index": 0, "text": text or "", "logprobs": None,
                                 "finish_reason": finish}]}

        first = chunk(prompt, None) if body.echo else None
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return _streaming(_sse_stream(request, handle, include_usage, chunk, first))
    result = await collect(request, handle)
    text = prompt + result.text if body.echo else result.text
    return CompletionResponse(
        id=rid, created=created, model=model,
        choices=[CompletionChoice(text=text, finish_reason=result.finish_reason)],
        usage=_usage(handle),
    )


@router.get("/models")
async def models(runtime: RuntimeDep) -> ModelList:
    engine, _ = runtime.require_ready()
    info = engine.info
    card = ModelCard(
        id=info.model_name,
        created=info.created,
        root=info.model_path,
        max_model_len=info.context_length,
        adapters=[{"name": a.name, "strength": a.strength, "rank": a.rank} for a in info.adapters],
        adapter_combination=info.adapter_combination,
    )
    return ModelList(data=[card])
