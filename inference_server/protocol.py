"""Models shared by both APIs (chat messages, tool calls), KAITO's ``/chat``, and the responses.

The OpenAI request bodies are in ``protocol_openai.py``.

Why strict models: input is parsed once at the edge, so the rest of the server works on typed
values and a wrong type (``"max_tokens": "ten"``, ``"stream": "yes"``, ``true`` for a number,
``NaN`` or infinity anywhere) is a 4xx with a message, never a surprise deeper down.
Unknown top-level fields are allowed (clients send many optional OpenAI fields) and logged by
the routers as ignored; ``/chat``'s ``generate_kwargs`` is an allowlist (``GenerateKwargs``).
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "ChatMessage",
    "GenerateKwargs",
    "KaitoChatRequest",
    "KaitoChatResponse",
    "ToolCall",
    "Usage",
]

Role = Literal["system", "developer", "user", "assistant", "tool"]


class _Request(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)

    def ignored_fields(self) -> list[str]:
        return sorted((self.model_extra or {}).keys())


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["text"]
    text: str


class ToolCallFunction(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str
    arguments: str
    """The arguments as a JSON text, as OpenAI sends and returns them."""


class ToolCall(BaseModel):
    """A call of one function, in an assistant message or a response."""

    model_config = ConfigDict(extra="forbid", strict=True)
    id: str
    type: Literal["function"] = "function"
    function: ToolCallFunction


class ChatMessage(BaseModel):
    """One message; ``tool_calls`` only on assistant messages, ``tool_call_id`` on tool results."""

    model_config = ConfigDict(extra="allow", strict=True)
    role: Role
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = Field(None, max_length=128)
    tool_call_id: str | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _text_parts_only(cls, value: Any) -> Any:
        """An image, audio or file part is refused by name (not pydantic's union listing)."""
        for part in value if isinstance(value, list) else []:
            kind = part.get("type") if isinstance(part, dict) else None
            if isinstance(kind, str) and kind != "text":
                raise ValueError(f"content parts of type {kind[:40]!r} are not supported by "
                                 "this server; send text (a string or 'text' parts)")
        return value

    @model_validator(mode="after")
    def _fields_fit_the_role(self) -> ChatMessage:
        if (self.model_extra or {}).get("function_call") is not None:
            raise ValueError("function_call in a message (deprecated) is not supported; send "
                             "the call as tool_calls")
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError(f"content is required for {self.role} messages "
                             "(only an assistant message with tool_calls may omit it)")
        if self.tool_calls is not None and self.role != "assistant":
            raise ValueError("tool_calls are allowed on assistant messages only")
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs the tool_call_id of the call it answers")
        return self

    def text(self) -> str:
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        return "".join(part.text for part in self.content)


#: Largest count (tokens, lengths) a request may name; beyond it the value is nonsense anyway.
MAX_COUNT = 2**31 - 1
#: Stop strings per request and characters per stop string.
MAX_STOP_STRINGS, MAX_STOP_CHARS = 4, 256

TokenId = Annotated[int, Field(ge=0, le=MAX_COUNT)]
Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]


def check_stop_strings(value: str | list[str] | None) -> str | list[str] | None:
    """At most four non-empty stop strings of at most 256 characters each."""
    items = [value] if isinstance(value, str) else (value or [])
    if len(items) > MAX_STOP_STRINGS:
        raise ValueError(f"at most {MAX_STOP_STRINGS} stop sequences are allowed")
    if any(not s for s in items):
        raise ValueError("stop sequences must not be empty")
    if any(len(s) > MAX_STOP_CHARS for s in items):
        raise ValueError(f"stop sequences must be at most {MAX_STOP_CHARS} characters")
    return value


class GenerateKwargs(BaseModel):
    """KAITO's classic generation options: the allowlist, with each key's type and range.

    Defaults are those of KAITO's ``inference_api.py``. Keys not declared here are refused (the
    service names the key and lists these). Token ids are checked against the vocabulary by the
    service, which knows the model; counts against the server's cap and the context window.
    """

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    max_length: int | None = Field(200, ge=1, le=MAX_COUNT)
    max_new_tokens: int | None = Field(None, ge=1, le=MAX_COUNT)
    min_length: int = Field(0, ge=0, le=MAX_COUNT)
    min_new_tokens: int | None = Field(None, ge=0, le=MAX_COUNT)
    do_sample: bool = True
    early_stopping: bool | Literal["never"] = False
    num_beams: int = Field(1, ge=1, le=16)
    num_return_sequences: int = Field(1, ge=1, le=1, description="one Result per request")
    temperature: float = Field(1.0, gt=0.0, le=2.0)
    top_k: int = Field(10, ge=0, le=1_000_000)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    typical_p: float = Field(1.0, gt=0.0, le=1.0)
    min_p: float | None = Field(None, ge=0.0, le=1.0)
    epsilon_cutoff: float = Field(0.0, ge=0.0, lt=1.0)
    eta_cutoff: float = Field(0.0, ge=0.0, lt=1.0)
    repetition_penalty: float = Field(1.0, gt=0.0, le=100.0)
    length_penalty: float = Field(1.0, ge=-100.0, le=100.0)
    no_repeat_ngram_size: int = Field(0, ge=0, le=1024)
    renormalize_logits: bool = False
    remove_invalid_values: bool = False
    use_cache: bool = True
    max_time: float | None = Field(None, gt=0.0, le=3600.0)
    bad_words_ids: list[Annotated[list[TokenId], Field(min_length=1, max_length=32)]] | None = (
        Field(None, max_length=256))
    suppress_tokens: list[TokenId] | None = Field(None, max_length=4096)
    begin_suppress_tokens: list[TokenId] | None = Field(None, max_length=4096)
    forced_bos_token_id: TokenId | None = None
    forced_eos_token_id: TokenId | list[TokenId] | None = None
    pad_token_id: TokenId | None = None
    eos_token_id: TokenId | Annotated[list[TokenId], Field(min_length=1, max_length=64)] | None = (
        None)
    stop_strings: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, le=2**63 - 1)

    @field_validator("stop_strings")
    @classmethod
    def _check_stop(cls, value: str | list[str] | None) -> str | list[str] | None:
        return check_stop_strings(value)

    def stop_list(self) -> list[str]:
        if self.stop_strings is None:
            return []
        if isinstance(self.stop_strings, str):
            return [self.stop_strings]
        return list(self.stop_strings)


class KaitoChatRequest(_Request):
    """``POST /chat``: ``prompt`` (text generation) or ``messages`` (conversation).

    A body with neither (or an empty one) passes here: the router answers it with KAITO's own
    400 messages (``kaito_missing_input``).
    """

    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    return_full_text: bool = True
    clean_up_tokenization_spaces: bool = False
    generate_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Checked against ``GenerateKwargs`` by the service (a bad key or value is a 400)."""

    @model_validator(mode="after")
    def _not_both(self) -> KaitoChatRequest:
        if self.prompt is not None and self.messages is not None:
            raise ValueError("exactly one of 'prompt' or 'messages' is required")
        return self

    def missing_input(self) -> str | None:
        """KAITO's 400 detail when the body has no usable prompt or messages, else None.

        KAITO's classic server asks for ``prompt`` in its text-generation pipeline and for
        ``messages`` in its conversational one; this server serves both, so the message follows
        what the body tried to send (its ported tests send ``"pipeline": "conversational"``).
        """
        if self.prompt or self.messages:
            return None
        conversational = self.messages is not None or (
            (self.model_extra or {}).get("pipeline") == "conversational")
        if conversational:
            return "Conversational parameter messages required"
        return "Text generation parameter prompt required"


class KaitoChatResponse(BaseModel):
    Result: str


# ---------------------------------------------------------------------------- responses


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    tool_calls: list[ToolCall] | None = None


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int]


class TokenLogprobEntry(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChatLogprobs(BaseModel):
    content: list[TokenLogprobEntry]


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    logprobs: ChatLogprobs | None = None
    finish_reason: str | None


class CompletionLogprobs(BaseModel):
    """The legacy completions shape: parallel lists, one entry per generated token."""

    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]]
    text_offset: list[int]


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "kaito"
    root: str | None = None
    max_model_len: int | None = None
    adapters: list[dict[str, Any]] = Field(default_factory=list)
    adapter_combination: str | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
