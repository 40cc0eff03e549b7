"""Tool-call formats: detection from the template, parsing, streaming hold-back, forced specs."""

from __future__ import annotations

import json

import pytest

from inference_server.chat_messages import template_messages
from inference_server.protocol import ChatMessage
from inference_server.protocol_openai import ToolDefinition
from inference_server.tools import (
    BARE_JSON,
    HERMES,
    LLAMA_JSON,
    MISTRAL,
    PHI4_MINI,
    ToolCallStream,
    detect_format,
    forced_call_spec,
    parse_calls,
    template_supports_tools,
)

NAMES = frozenset({"get_weather", "get_time"})


@pytest.mark.parametrize(("template", "fmt"), [
    ("{% for tool in tools %}...{% endfor %}<tool_call>", HERMES),
    ("{{ tools }} [AVAILABLE_TOOLS] [TOOL_CALLS]", MISTRAL),
    ("<|tool|>{{ tools }}<|/tool|> <|tool_call|>", PHI4_MINI),
    ('{{ tools }} Respond in the format {"name": function name, "parameters": dictionary of '
     'argument name and its value}', LLAMA_JSON),
    ("{{ tools | tojson }}", BARE_JSON),
])
def test_format_follows_the_template(template, fmt):
    assert template_supports_tools(template)
    assert detect_format(template) is fmt


def test_templates_without_tools_are_recognised():
    assert not template_supports_tools(None)
    assert not template_supports_tools("{% for m in messages %}{{ m.content }}{% endfor %}")
    assert not template_supports_tools("{{ toolshed }}")


@pytest.mark.parametrize(("fmt", "text"), [
    (HERMES, 'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}'
             '\n</tool_call>'),
    (MISTRAL, 'Let me check.[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Oslo"}}]'),
    (MISTRAL, 'Let me check.[TOOL_CALLS]get_weather[ARGS]{"city": "Oslo"}'),
    (PHI4_MINI, 'Let me check.<|tool_call|>[{"name": "get_weather", "arguments": '
                '{"city": "Oslo"}}]<|/tool_call|>'),
])
def test_marked_calls_parse_with_their_content(fmt, text):
    out = parse_calls(text, fmt, NAMES)
    assert out.content == "Let me check."
    (call,) = out.calls
    assert call.function.name == "get_weather" and call.id.startswith("call_")
    assert json.loads(call.function.arguments) == {"city": "Oslo"}


def test_llama_json_and_python_tag():
    text = '<|python_tag|>{"name": "get_time", "parameters": {"zone": "UTC"}}'
    (call,) = parse_calls(text, LLAMA_JSON, NAMES).calls
    assert call.function.name == "get_time" and json.loads(call.function.arguments) == {
        "zone": "UTC"}
    assert parse_calls("{not a call}", LLAMA_JSON, NAMES).calls == []


def test_several_calls_and_parallel_false():
    text = ('<tool_call>{"name": "get_weather", "arguments": {"city": "A"}}</tool_call>\n'
            '<tool_call>{"name": "get_time", "arguments": "{\\"zone\\": \\"B\\"}"}</tool_call>')
    out = parse_calls(text, HERMES, NAMES)
    assert [c.function.name for c in out.calls] == ["get_weather", "get_time"]
    assert out.content is None
    assert len(parse_calls(text, HERMES, NAMES, parallel=False).calls) == 1


@pytest.mark.parametrize("text", [
    '<tool_call>{"name": "rm_rf", "arguments": {}}</tool_call>',  # unknown function
    '<tool_call>{"name": "get_weather", "arguments": {"city": </tool_call>',  # broken JSON
    '<tool_call>{"name": "get_weather", "arguments": [1]}</tool_call>',  # arguments not object
    "just words",
])
def test_what_is_not_a_call_stays_content(text):
    out = parse_calls(text, HERMES, NAMES)
    assert out.calls == [] and out.content == text


def test_stream_sends_text_before_a_call_and_holds_the_call():
    stream = ToolCallStream(HERMES, NAMES)
    pieces = ["Sure", ", one mo", "ment.<tool", '_call>{"name": "get_weather", ',
              '"arguments": {"city": "Oslo"}}</tool_call>']
    sent = [stream.push(p) for p in pieces]
    assert sent == ["Sure", ", one mo", "ment.", "", ""]
    rest, calls = stream.finish()
    assert rest == "" and calls[0].function.name == "get_weather"


def test_stream_releases_a_false_alarm_at_the_end():
    stream = ToolCallStream(HERMES, NAMES)
    assert stream.push("a <tool") == "a "
    assert stream.push("box> b") == "<toolbox> b"
    assert stream.finish() == ("", [])
    bare = ToolCallStream(LLAMA_JSON, NAMES)
    assert bare.push("{maybe") == ""
    assert bare.finish() == ("{maybe", [])


def test_forced_spec_shapes():
    tools = [ToolDefinition.model_validate({"type": "function", "function": {
        "name": "get_weather", "parameters": {"type": "object"}}}),
        ToolDefinition.model_validate({"type": "function", "function": {"name": "get_time"}})]
    spec = forced_call_spec(HERMES, tools, None)
    assert (spec.prefix, spec.suffix) == ("<tool_call>\n", "\n</tool_call>")
    assert [o["properties"]["name"]["const"] for o in spec.json_schema["anyOf"]] == [
        "get_weather", "get_time"]
    named = forced_call_spec(LLAMA_JSON, tools, "get_time").json_schema
    assert named["properties"]["name"] == {"const": "get_time"}
    assert "parameters" in named["required"]
    listed = forced_call_spec(MISTRAL, tools, "get_time")
    assert listed.json_schema["type"] == "array" and listed.prefix == "[TOOL_CALLS]"


def test_messages_for_templates():
    messages = [ChatMessage.model_validate(m) for m in [
        {"role": "developer", "content": "Be brief."},
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "c1", "type": "function",
            "function": {"name": "get_time", "arguments": '{"zone": "UTC"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "12:00"}]},
    ]]
    out = template_messages(messages, "{{ messages }}")
    assert out[0] == {"role": "system", "content": "Be brief."}
    assert out[1]["tool_calls"][0]["function"]["arguments"] == {"zone": "UTC"}
    assert out[2] == {"role": "tool", "content": "12:00", "tool_call_id": "c1",
                      "name": "get_time"}
    assert template_messages(messages[:1], "{% if role == 'developer' %}")[0]["role"] == (
        "developer")
