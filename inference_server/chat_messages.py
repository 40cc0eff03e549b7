"""Chat messages in the shape Hugging Face chat templates expect.

OpenAI's messages and the templates' differ in three ways this module bridges:

* ``developer`` (OpenAI's newer name for the system prompt) becomes ``system`` for templates
  that do not know the role;
* an assistant message's ``tool_calls`` carry their ``arguments`` as a JSON text in OpenAI's
  API, while templates render them as a mapping (``tool_call.arguments | tojson``): they are
  decoded (kept as text when they are not a JSON object);
* a ``tool`` result names its call by ``tool_call_id``; templates that print the function's
  name (Llama, Mistral) find it under ``name``, taken from the call it answers.
"""

from __future__ import annotations

import json
from typing import Any

from .protocol import ChatMessage, ToolCall

__all__ = ["template_messages"]


def _arguments(call: ToolCall) -> Any:
    try:
        value = json.loads(call.function.arguments)
    except ValueError:
        return call.function.arguments
    return value if isinstance(value, dict) else call.function.arguments


def template_messages(messages: list[ChatMessage], template: str | None) -> list[dict[str, Any]]:
    """``messages`` as dicts for ``apply_chat_template`` with the template ``template``."""
    developer_known = bool(template) and "developer" in (template or "")
    call_names: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    for message in messages:
        role = message.role
        if role == "developer" and not developer_known:
            role = "system"
        item: dict[str, Any] = {"role": role, "content": message.text()}
        if message.name is not None:
            item["name"] = message.name
        if message.tool_calls:
            item["tool_calls"] = [
                {"id": c.id, "type": "function",
                 "function": {"name": c.function.name, "arguments": _arguments(c)}}
                for c in message.tool_calls
            ]
            call_names.update((c.id, c.function.name) for c in message.tool_calls)
        if message.tool_call_id is not None:
            item["tool_call_id"] = message.tool_call_id
            if "name" not in item and message.tool_call_id in call_names:
                item["name"] = call_names[message.tool_call_id]
        out.append(item)
    return out
