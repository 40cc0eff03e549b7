"""Tool calling: how a chat template's model writes calls, reading them back, forcing one.

Models write tool calls in the format their chat template taught them; there is no common
standard. ``detect_format`` picks the format from what the template contains (a small table of
the common families); ``parse_calls`` reads a finished output into OpenAI's ``tool_calls`` and
the text around them; ``ToolCallStream`` does the same while streaming (text before a call goes
out at once, a call is held until the output ends, then sent whole); ``forced_call_spec`` is the
constrained-decoding spec for ``tool_choice`` "required" or a named function, so that the
output is always a call that parses.

Formats (marker → what follows):

* Hermes / Qwen 2.5+ / many fine-tunes: ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``
* Mistral: ``[TOOL_CALLS][{"name": ..., "arguments": {...}}]`` (or ``[TOOL_CALLS]name[ARGS]{...}``)
* Phi-4-mini: ``<|tool_call|>[{"name": ..., "arguments": {...}}]<|/tool_call|>``
* Llama 3.1 / 3.2 JSON tool calling: ``{"name": ..., "parameters": {...}}`` as the whole reply
  (optionally after ``<|python_tag|>``)
* any other template that uses ``tools``: the Llama-style bare JSON object, with "arguments".
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .constrained import ConstraintSpec
from .protocol import ToolCall, ToolCallFunction
from .protocol_openai import ToolDefinition

__all__ = ["ParsedOutput", "ToolCallStream", "ToolFormat", "detect_format", "forced_call_spec",
           "parse_calls", "template_supports_tools"]


@dataclass(frozen=True)
class ToolFormat:
    name: str
    marker: str
    """Text that starts the calls ("": a bare JSON object at the start of the reply)."""
    end: str = ""
    """Text that closes one call (Hermes) or the list of calls."""
    arguments_key: str = "arguments"
    as_list: bool = False
    """The calls after the marker are one JSON list (else one object per marker)."""
    open_sep: str = ""
    close_sep: str = ""
    """Whitespace the template puts inside the markers (used when forcing a call)."""


HERMES = ToolFormat("hermes", "<tool_call>", "</tool_call>", open_sep="\n", close_sep="\n")
MISTRAL = ToolFormat("mistral", "[TOOL_CALLS]", as_list=True)
PHI4_MINI = ToolFormat("phi4_mini", "<|tool_call|>", "<|/tool_call|>", as_list=True)
LLAMA_JSON = ToolFormat("llama3_json", "", arguments_key="parameters")
BARE_JSON = ToolFormat("json", "")

#: (text the template contains, format), first match wins.
_FORMATS: tuple[tuple[str, ToolFormat], ...] = (
    ("<tool_call>", HERMES),
    ("[TOOL_CALLS]", MISTRAL),
    ("<|tool_call|>", PHI4_MINI),
    ('"parameters": dictionary of argument name', LLAMA_JSON),
    ("<|python_tag|>", LLAMA_JSON),
)
_PYTHON_TAG = "<|python_tag|>"
_MENTIONS_TOOLS = re.compile(r"\btools\b")


def template_supports_tools(template: str | None) -> bool:
    """A template that never references ``tools`` would drop the definitions silently."""
    return bool(template) and _MENTIONS_TOOLS.search(template or "") is not None


def detect_format(template: str) -> ToolFormat:
    for needle, fmt in _FORMATS:
        if needle in template:
            return fmt
    return BARE_JSON


@dataclass(frozen=True)
class ParsedOutput:
    content: str | None
    calls: list[ToolCall]


def _new_call(name: str, arguments: Any) -> ToolCall:
    text = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
    return ToolCall(id=f"call_{uuid.uuid4().hex[:24]}",
                    function=ToolCallFunction(name=name, arguments=text))


def _as_call(obj: Any, fmt: ToolFormat, names: frozenset[str]) -> ToolCall | None:
    """One call from a decoded JSON value, or None when it is not a call of a known function."""
    if isinstance(obj, dict) and obj.get("type") == "function" and isinstance(
            obj.get("function"), dict):
        obj = obj["function"]
    if not isinstance(obj, dict) or obj.get("name") not in names:
        return None
    args = obj.get(fmt.arguments_key, obj.get("arguments", obj.get("parameters", {})))
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError:
            return None
    if not isinstance(args, dict):
        return None
    return _new_call(str(obj["name"]), args)


def _calls_in(text: str, fmt: ToolFormat, names: frozenset[str]) -> list[ToolCall] | None:
    """The calls in ``text`` (what follows a marker), or None when it does not parse whole."""
    text = text.strip()
    if fmt is MISTRAL and text and text[0] != "[":
        return _mistral_args_calls(text, names)
    decoder = json.JSONDecoder()
    calls: list[ToolCall] = []
    pos = 0
    while pos < len(text):
        try:
            value, pos = decoder.raw_decode(text, pos)
        except ValueError:
            return None
        for item in value if isinstance(value, list) else [value]:
            call = _as_call(item, fmt, names)
            if call is None:
                return None
            calls.append(call)
        while pos < len(text) and text[pos] in " \t\r\n;,":
            pos += 1
    return calls or None


def _mistral_args_calls(text: str, names: frozenset[str]) -> list[ToolCall] | None:
    """Mistral's newer ``name[ARGS]{...}`` (several joined by ``[TOOL_CALLS]``)."""
    calls: list[ToolCall] = []
    for part in text.split(MISTRAL.marker):
        name, sep, args = part.partition("[ARGS]")
        if not sep:
            return None
        call = _as_call({"name": name.strip(), "arguments": args.strip()}, MISTRAL, names)
        if call is None:
            return None
        calls.append(call)
    return calls


def parse_calls(text: str, fmt: ToolFormat, names: frozenset[str],
                parallel: bool = True) -> ParsedOutput:
    """Split a finished output into content and calls; text that is not a call stays content."""
    calls: list[ToolCall] | None
    if not fmt.marker:
        body = text.strip().removeprefix(_PYTHON_TAG)
        calls = _calls_in(body, fmt, names) if body.lstrip()[:1] in ("{", "[") else None
        outside = "" if calls else text
    elif fmt.as_list or not fmt.end:
        head, sep, tail = text.partition(fmt.marker)
        calls = _calls_in(tail.split(fmt.end)[0] if fmt.end else tail, fmt, names) if sep else None
        outside = head + (tail.split(fmt.end, 1)[1] if fmt.end and fmt.end in tail else "")
        outside = outside if calls else text
    else:
        calls, outside = _marked_calls(text, fmt, names)
    if calls and not parallel:
        calls = calls[:1]
    content = outside if outside.strip() else None
    return ParsedOutput(content.strip() if calls and content else content, calls or [])


def _marked_calls(text: str, fmt: ToolFormat,
                  names: frozenset[str]) -> tuple[list[ToolCall] | None, str]:
    """Hermes-style: every ``marker ... end`` pair is one call; the rest is content."""
    calls: list[ToolCall] = []
    outside: list[str] = []
    rest = text
    while fmt.marker in rest:
        head, _, rest = rest.partition(fmt.marker)
        outside.append(head)
        body, closed, rest = rest.partition(fmt.end)
        found = _calls_in(body, fmt, names)
        if found is None or (not closed and rest):
            return None, text
        calls.extend(found)
    outside.append(rest)
    return calls or None, "".join(outside)


class ToolCallStream:
    """Streams the text before a call at once and holds what may be a call until the end."""

    def __init__(self, fmt: ToolFormat, names: frozenset[str], parallel: bool = True) -> None:
        self.fmt, self.names, self.parallel = fmt, names, parallel
        self.text = ""
        self.sent = 0
        self._holding = False

    def push(self, delta: str) -> str:
        """Add generated text; return the part that is certainly content (maybe empty)."""
        self.text += delta
        if self._holding:
            return ""
        if not self.fmt.marker:
            stripped = self.text.lstrip()
            if not stripped or stripped[0] in "{[<" and self.sent == 0:
                self._holding = bool(stripped)
                return ""
            return self._send(len(self.text))
        start = self.text.find(self.fmt.marker, self.sent)
        if start >= 0:
            self._holding = True
            return self._send(start)
        return self._send(len(self.text) - _partial_suffix(self.text, self.fmt.marker))

    def finish(self) -> tuple[str, list[ToolCall]]:
        """(content not sent yet, calls) once the output has ended."""
        parsed = parse_calls(self.text, self.fmt, self.names, self.parallel)
        if not parsed.calls:
            return self._send(len(self.text)), []
        sent = self.text[:self.sent]
        content = parsed.content or ""
        rest = content[len(sent):] if content.startswith(sent) else ""
        return rest, parsed.calls

    def _send(self, end: int) -> str:
        delta = self.text[self.sent:end]
        self.sent = max(self.sent, end)
        return delta


def _partial_suffix(text: str, marker: str) -> int:
    """Length of the longest end of ``text`` that begins ``marker``."""
    for k in range(min(len(marker) - 1, len(text)), 0, -1):
        if marker.startswith(text[-k:]):
            return k
    return 0


def forced_call_spec(fmt: ToolFormat, tools: Sequence[ToolDefinition],
                     name: str | None) -> ConstraintSpec:
    """The constraint for ``tool_choice`` "required" (``name`` None) or one named function."""
    options = []
    for tool in tools:
        if name is not None and tool.function.name != name:
            continue
        parameters = tool.function.parameters or {"type": "object", "properties": {}}
        options.append({
            "type": "object",
            "properties": {"name": {"const": tool.function.name},
                           fmt.arguments_key: parameters},
            "required": ["name", fmt.arguments_key],
            "additionalProperties": False,
        })
    call: dict[str, Any] = options[0] if len(options) == 1 else {"anyOf": options}
    schema = {"type": "array", "items": call, "minItems": 1, "maxItems": 1} if fmt.as_list else call
    prefix = fmt.marker + fmt.open_sep
    suffix = (fmt.close_sep + fmt.end) if fmt.end else ""
    return ConstraintSpec(json_schema=schema, prefix=prefix, suffix=suffix)
