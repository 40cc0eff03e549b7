"""Request bodies of the OpenAI API: ``/v1/chat/completions`` and ``/v1/completions``.

Why strict models: input is parsed once at the edge, so the rest of the server works on typed
values and a wrong type (``"max_tokens": "ten"``, ``"stream": "yes"``, ``true`` for a number,
``NaN`` or infinity anywhere) is a 400 with a message, never a surprise deeper down. ``null`` for
an optional field means "the default", as OpenAI's API reads it.

No field that changes what a request means is dropped silently: the fields this server cannot
honour are refused with a 400 that names them (``refused_fields``; the table of such fields,
other servers' extensions included, is ``openai_extensions``); fields that change nothing in
the output (``store``, ``metadata``, ``service_tier``, cache keys, ``prediction``...) are
accepted, and unknown fields are logged by the routers as ignored.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .openai_extensions import CHAT_ONLY, COMMON, refused
from .protocol import MAX_COUNT, ChatMessage, TokenId, _Request, check_stop_strings

__all__ = [
    "ChatCompletionRequest",
    "CompletionRequest",
    "JsonSchemaFormat",
    "NamedToolChoice",
    "ResponseFormat",
    "ToolDefinition",
]

#: OpenAI's limits on the alternatives per token (chat, completions).
MAX_TOP_LOGPROBS, MAX_COMPLETION_LOGPROBS = 20, 5
_NAME = r"^[A-Za-z0-9_.-]{1,64}$"

class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    include_usage: bool = False
    include_obfuscation: bool = True
    """Accepted; this server's chunks carry no obfuscation padding."""


class FunctionDefinition(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Field(pattern=_NAME)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    """A JSON Schema of the arguments (an object schema); None: no arguments."""
    strict: bool | None = None

    @field_validator("parameters")
    @classmethod
    def _object_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and value.get("type", "object") != "object":
            raise ValueError("a function's parameters must be a JSON Schema of type 'object'")
        return value


class ToolDefinition(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["function"]
    function: FunctionDefinition


class _FunctionName(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str


class NamedToolChoice(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["function"]
    function: _FunctionName


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)
    name: str = Field(pattern=_NAME)
    description: str | None = None
    json_schema: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_with_its_type(self) -> ResponseFormat:
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ValueError("'json_schema' is required with type 'json_schema' and only there")
        return self


class _SamplingRequest(_Request):
    """Fields shared by both OpenAI endpoints (plus two vLLM extensions: ignore_eos, min_tokens)."""

    model: str | None = None
    max_tokens: int | None = Field(None, ge=1, le=MAX_COUNT)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=-1, le=1_000_000)
    repetition_penalty: float = Field(1.0, gt=0.0, le=100.0)
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    n: int = Field(1, ge=1, le=MAX_COUNT)
    """Checked against the server's ``max_n`` by ``openai_service``."""
    stream: bool = False
    stream_options: StreamOptions | None = None
    ignore_eos: bool = False
    min_tokens: int = Field(0, ge=0, le=MAX_COUNT)
    user: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _null_is_default(cls, data: Any) -> Any:
        """``"temperature": null`` and friends mean the default, as in OpenAI's API."""
        if isinstance(data, dict):
            defaults = cls.model_fields
            return {k: v for k, v in data.items()
                    if v is not None or k not in defaults or defaults[k].default is None}
        return data

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, value: str | list[str] | None) -> str | list[str] | None:
        return check_stop_strings(value)

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def refused_fields(self) -> list[tuple[str, str]]:
        """(field, reason) for fields sent that this server refuses (``openai_extensions``)."""
        return refused(self.model_extra or {}, COMMON)


class ChatCompletionRequest(_SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_COUNT)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    response_format: ResponseFormat | None = None
    tools: list[ToolDefinition] | None = Field(None, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool = True
    modalities: list[Literal["text", "audio"]] | None = None
    reasoning_effort: str | None = Field(None, max_length=32)
    verbosity: Literal["low", "medium", "high"] | None = None
    chat_template_kwargs: dict[str, Any] | None = Field(None, max_length=32)
    """Extra variables for the chat template (vLLM's extension, e.g. Qwen3's
    ``enable_thinking``); each must be one the template uses."""

    @model_validator(mode="after")
    def _consistent(self) -> ChatCompletionRequest:
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        if self.tool_choice is not None and self.tool_choice != "none" and not self.tools:
            raise ValueError("tool_choice needs tools")
        if self.tools:
            names = [t.function.name for t in self.tools]
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise ValueError(f"tools: function name(s) defined twice: {', '.join(twice)}")
        if isinstance(self.tool_choice, NamedToolChoice):
            name = self.tool_choice.function.name
            if name not in {t.function.name for t in self.tools or []}:
                raise ValueError(f"tool_choice names function {name[:64]!r}, which is not in "
                                 "tools")
        return self

    def refused_fields(self) -> list[tuple[str, str]]:
        out = [*super().refused_fields(), *refused(self.model_extra or {}, CHAT_ONLY)]
        if self.modalities and "audio" in self.modalities:
            out.append(("modalities", "audio output is not supported by this server"))
        return out

    def effective_tool_choice(self) -> str | NamedToolChoice:
        """OpenAI's default: "auto" when tools are given, else "none"."""
        if self.tool_choice is not None:
            return self.tool_choice
        return "auto" if self.tools else "none"


#: One prompt as OpenAI's completions take it: a text, or token ids.
Prompt = str | list[TokenId]


class CompletionRequest(_SamplingRequest):
    prompt: str | list[str] | list[TokenId] | list[list[TokenId]]
    """One prompt (a text or token ids, alone or as a one-item list); see ``single_prompt``."""
    max_tokens: int | None = Field(16, ge=1, le=MAX_COUNT)
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=MAX_COMPLETION_LOGPROBS)
    best_of: int | None = Field(None, ge=1, le=MAX_COUNT)
    """Candidates generated; the ``n`` with the best mean token logprob are returned."""
    suffix: str | None = None

    @model_validator(mode="after")
    def _best_of_fits(self) -> CompletionRequest:
        if self.best_of is not None and self.best_of < self.n:
            raise ValueError(f"best_of={self.best_of} must be at least n={self.n}")
        if self.best_of is not None and self.best_of > 1 and self.stream:
            raise ValueError("best_of > 1 cannot be streamed (the best are known at the end)")
        return self

    def candidates(self) -> int:
        return max(self.n, self.best_of or 1)

    @field_validator("prompt")
    @classmethod
    def _single_prompt(cls, value: Any) -> Any:
        items = _prompts(value)
        if len(items) != 1:
            raise ValueError("exactly one prompt (a string or a list of token ids) is supported "
                             f"per request; got {len(items)}")
        if not items[0]:
            raise ValueError("prompt must not be empty")
        return value

    def single_prompt(self) -> Prompt:
        """The prompt: its text, or its token ids."""
        return _prompts(self.prompt)[0]

    def refused_fields(self) -> list[tuple[str, str]]:
        out = super().refused_fields()
        if self.suffix:
            out.append(("suffix", "suffix (insertion) is not supported by this server"))
        if self.echo and self.logprobs is not None:
            out.append(("logprobs", "logprobs with echo (prompt logprobs) are not supported "
                                    "by this server"))
        return out


def _prompts(value: Any) -> list[Prompt]:
    """The prompts in a ``prompt`` field: a text or a list of ids is one, a list holds several."""
    if isinstance(value, str) or (value and all(isinstance(v, int) for v in value)):
        return [value]
    return list(value)
