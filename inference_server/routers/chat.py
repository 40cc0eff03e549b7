"""``POST /chat``: KAITO's classic API (``prompt`` or ``messages`` → ``{"Result": ...}``).

A body without a usable ``prompt`` or ``messages`` gets KAITO's own 400 messages.
``generate_kwargs`` is checked before the prompt is tokenized; tokenization and the chat
template run on the runtime's text pool, off the event loop.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from ..chat_messages import template_messages
from ..errors import InvalidRequestError
from ..protocol import KaitoChatRequest, KaitoChatResponse
from ..service import chat_request_to_job, parse_generate_kwargs
from ..state import RuntimeDep
from ._common import collect, log_ignored

router = APIRouter(tags=["kaito"])


@router.post("/chat", response_model=KaitoChatResponse)
async def chat(
    body: KaitoChatRequest, request: Request, runtime: RuntimeDep
) -> KaitoChatResponse:
    missing = body.missing_input()
    if missing is not None:
        raise InvalidRequestError(missing, param="messages" if "messages" in missing else "prompt")
    engine, scheduler = runtime.require_ready()
    log_ignored("/chat", body.ignored_fields())
    kwargs = parse_generate_kwargs(body.generate_kwargs)
    if body.messages is not None:
        messages = template_messages(body.messages, engine.chat_template_source())
        prompt_ids = await runtime.text.run(engine.encode_chat, messages)
    else:
        prompt_ids = await runtime.text.run(engine.encode_prompt, body.prompt or "")
    params, options = chat_request_to_job(
        body, kwargs, prompt_ids, engine, runtime.settings.max_new_tokens_cap
    )
    handle = scheduler.submit(prompt_ids, params, options)
    result = await collect(request, handle)
    text = result.text
    if body.prompt is not None and body.return_full_text:
        text = body.prompt + text
    return KaitoChatResponse(Result=text)
