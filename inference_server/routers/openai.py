"""The OpenAI-compatible API: chat completions, completions (both streamable), models.

Streams are server-sent events, ``data: <json>\\n\\n`` per chunk, ending with ``data: [DONE]``,
as OpenAI's client libraries expect. An error after the stream has started cannot change the
status code any more, so it is sent as one ``data: {"error": ...}`` event before ``[DONE]``.
What a request means is decided by ``openai_service`` (prompt, limits, constraints, one set of
sampling parameters per choice); this module submits one scheduler handle per choice (``n``),
merges their events (chunks carry the choice's ``index``) and shapes the answers. With tools,
text before a call streams at once; a call is sent whole as ``delta.tool_calls`` when its
choice ends.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from ..batching import Scheduler
from ..engine import Engine
from ..errors import ModelNotFoundError, ServerError
from ..openai_service import Job, chat_job, completion_job
from ..protocol import (
    ChatChoice,
    ChatCompletionResponse,
    CompletionChoice,
    CompletionResponse,
    ModelCard,
    ModelList,
    Usage,
    new_id,
    now,
)
from ..protocol_openai import ChatCompletionRequest, CompletionRequest, _SamplingRequest
from ..request_handle import RequestHandle, StreamEvent
from ..state import RuntimeDep
from ..tools import ToolCallStream
from ._common import Collected, collect_all, log_ignored, stream_merged
from ._openai_output import (
    LegacyLogprobs,
    StopTrim,
    chat_logprobs,
    chat_message,
    tool_call_deltas,
)

router = APIRouter(prefix="/v1", tags=["openai"])


def _check_model(req: _SamplingRequest, engine: Engine) -> str:
    if req.model is not None:
        _served(req.model, engine)
    return engine.info.model_name


def _served(model_id: str, engine: Engine) -> None:
    """404 in OpenAI's shape unless ``model_id`` is the served model."""
    name = engine.info.model_name
    if model_id != name:
        shown = model_id if len(model_id) <= 100 else model_id[:100] + "..."
        raise ModelNotFoundError(f"The model {shown!r} does not exist; this server serves "
                                 f"'{name}'")


def _submit(scheduler: Scheduler, job: Job) -> list[RequestHandle]:
    """One handle per choice; if the queue refuses one, the ones already queued are cancelled."""
    handles: list[RequestHandle] = []
    try:
        for params in job.params:
            handles.append(scheduler.submit(job.prompt_ids, params))
    except ServerError:
        for handle in handles:
            handle.cancel()
        raise
    return handles


def _usage(handles: Sequence[RequestHandle]) -> Usage:
    p, c = len(handles[0].prompt_ids), sum(h.completion_tokens for h in handles)
    return Usage(prompt_tokens=p, completion_tokens=c, total_tokens=p + c)


def _sse(payload: dict[str, Any] | str) -> str:
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {data}\n\n"


#: Builds the chunks for one event of choice ``index``.
ChunkMaker = Callable[[int, StreamEvent], list[dict[str, Any]]]


async def _sse_stream(request: Request, handles: list[RequestHandle], include_usage: bool,
                      envelope: dict[str, Any], first: list[dict[str, Any]],
                      chunks: ChunkMaker) -> AsyncIterator[str]:
    """SSE frames for one request: ``first`` chunks, then each event's chunks, usage, [DONE]."""
    try:
        for choice in first:
            yield _sse({**envelope, "choices": [choice]})
        async for index, event in stream_merged(request, handles):
            for choice in chunks(index, event):
                yield _sse({**envelope, "choices": [choice]})
        if include_usage:
            yield _sse({**envelope, "choices": [], "usage": _usage(handles).model_dump()})
    except ServerError as exc:
        yield _sse({"error": {"message": exc.message, "type": exc.error_type,
                              "param": exc.param, "code": exc.code}})
    yield _sse("[DONE]")


def _streaming(gen: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(
        gen, media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )


def _chat_chunks(engine: Engine, job: Job, handles: list[RequestHandle],
                 logprobs: bool) -> ChunkMaker:
    tools = job.tools
    splitters = [ToolCallStream(tools.fmt, tools.names, tools.parallel) if tools else None
                 for _ in job.params]
    trims = [StopTrim(engine, handle) for handle in handles]

    def chunks(index: int, event: StreamEvent) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        splitter = splitters[index]
        text = splitter.push(event.text) if splitter else event.text
        lps = trims[index](event.logprobs) if logprobs else ()
        if text or lps:
            choice: dict[str, Any] = {"index": index, "delta": {"content": text},
                                      "finish_reason": None}
            if logprobs:
                choice["logprobs"] = chat_logprobs(engine, lps).model_dump()
            out.append(choice)
        if event.finish_reason is not None:
            finish = event.finish_reason
            if splitter is not None:
                rest, calls = splitter.finish()
                if rest:
                    out.append({"index": index, "delta": {"content": rest},
                                "finish_reason": None})
                if calls:
                    out.append({"index": index, "delta": {"tool_calls": tool_call_deltas(calls)},
                                "finish_reason": None})
                    finish = "tool_calls" if finish == "stop" else finish
            out.append({"index": index, "delta": {}, "finish_reason": finish})
        return out

    return chunks


@router.post("/chat/completions", response_model=None)
async def chat_completions(
    body: ChatCompletionRequest, request: Request, runtime: RuntimeDep
) -> ChatCompletionResponse | StreamingResponse:
    engine, scheduler = runtime.require_ready()
    model = _check_model(body, engine)
    log_ignored("/v1/chat/completions", body.ignored_fields())
    job = await chat_job(body, runtime, engine)
    handles = _submit(scheduler, job)
    rid, created = new_id("chatcmpl"), now()
    if body.stream:
        envelope = {"id": rid, "object": "chat.completion.chunk", "created": created,
                    "model": model}
        first = [{"index": i, "delta": {"role": "assistant", "content": ""},
                  "finish_reason": None} for i in range(len(handles))]
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return _streaming(_sse_stream(request, handles, include_usage, envelope, first,
                                      _chat_chunks(engine, job, handles, body.logprobs)))
    results = _trimmed(engine, handles, await collect_all(request, handles))
    choices = []
    for index, result in enumerate(results):
        message, finish = chat_message(result.text, result.finish_reason, job.tools)
        logprobs = chat_logprobs(engine, result.logprobs) if body.logprobs else None
        choices.append(ChatChoice(index=index, message=message, logprobs=logprobs,
                                  finish_reason=finish))
    return ChatCompletionResponse(id=rid, created=created, model=model, choices=choices,
                                  usage=_usage(handles))


def _completion_chunks(engine: Engine, job: Job, handles: list[RequestHandle],
                       top: int | None) -> ChunkMaker:
    legacy = [LegacyLogprobs(engine, top) if top is not None else None for _ in job.params]
    trims = [StopTrim(engine, handle) for handle in handles]

    def chunks(index: int, event: StreamEvent) -> list[dict[str, Any]]:
        builder = legacy[index]
        if not event.text and not event.logprobs and event.finish_reason is None:
            return []
        logprobs = builder.build(trims[index](event.logprobs)).model_dump() if builder else None
        return [{"index": index, "text": event.text, "logprobs": logprobs,
                 "finish_reason": event.finish_reason}]

    return chunks


@router.post("/completions", response_model=None)
async def completions(
    body: CompletionRequest, request: Request, runtime: RuntimeDep
) -> CompletionResponse | StreamingResponse:
    engine, scheduler = runtime.require_ready()
    model = _check_model(body, engine)
    log_ignored("/v1/completions", body.ignored_fields())
    job = await completion_job(body, runtime, engine)
    handles = _submit(scheduler, job)
    rid, created = new_id("cmpl"), now()
    if body.stream:
        envelope = {"id": rid, "object": "text_completion", "created": created, "model": model}
        first = ([{"index": i, "text": job.echo, "logprobs": None, "finish_reason": None}
                  for i in range(len(handles))] if body.echo else [])
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return _streaming(_sse_stream(request, handles, include_usage, envelope, first,
                                      _completion_chunks(engine, job, handles,
                                                         body.logprobs)))
    results = _trimmed(engine, handles, await collect_all(request, handles))
    if job.keep is not None:
        results = sorted(results, key=_mean_logprob, reverse=True)[: job.keep]
    choices = [
        CompletionChoice(
            index=index, text=job.echo + r.text,
            logprobs=(LegacyLogprobs(engine, body.logprobs).build(r.logprobs)
                      if body.logprobs is not None else None),
            finish_reason=r.finish_reason)
        for index, r in enumerate(results)
    ]
    return CompletionResponse(id=rid, created=created, model=model, choices=choices,
                              usage=_usage(handles))


def _trimmed(engine: Engine, handles: list[RequestHandle],
             results: list[Collected]) -> list[Collected]:
    """The results without the logprobs of tokens a stop string cut off (``StopTrim``)."""
    for handle, result in zip(handles, results, strict=True):
        if result.logprobs and handle.text.stopped:
            result.logprobs = list(StopTrim(engine, handle)(result.logprobs))
    return results


def _mean_logprob(result: Collected) -> float:
    """``best_of``'s ranking: the mean logprob per token (OpenAI's "per token")."""
    if not result.logprobs:
        return float("-inf")
    return sum(lp.logprob for lp in result.logprobs) / len(result.logprobs)


def _card(engine: Engine) -> ModelCard:
    info = engine.info
    return ModelCard(
        id=info.model_name,
        created=info.created,
        root=info.model_path,
        max_model_len=info.context_length,
        adapters=[{"name": a.name, "strength": a.strength, "rank": a.rank} for a in info.adapters],
        adapter_combination=info.adapter_combination,
    )


@router.get("/models")
async def models(runtime: RuntimeDep) -> ModelList:
    engine, _ = runtime.require_ready()
    return ModelList(data=[_card(engine)])


@router.get("/models/{model_id:path}")
async def model(model_id: str, runtime: RuntimeDep) -> ModelCard:
    """One model's card (``client.models.retrieve``); ids may contain ``/``."""
    engine, _ = runtime.require_ready()
    _served(model_id, engine)
    return _card(engine)
