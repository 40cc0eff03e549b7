"""Request and response models of the two APIs: KAITO's classic ``/chat`` and the OpenAI subset.

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
    "ChatCompletionRequest",
    "ChatMessage",
    "CompletionRequest",
    "GenerateKwargs",
    "KaitoChatRequest",
    "KaitoChatResponse",
    "Usage",
]

Role = Literal["system", "user", "assistant"]


class _Request(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)

    def ignored_fields(self) -> list[str]:
        return sorted((self.model_extra or {}).keys())


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    role: Role
    content: str | list[TextPart]

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
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
    """``POST /chat``: ``prompt`` (text generation) or ``messages`` (conversation)."""

    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    return_full_text: bool = True
    clean_up_tokenization_spaces: bool = False
    generate_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Checked against ``GenerateKwargs`` by the service (a bad key or value is a 400)."""

    @model_validator(mode="after")
    def _prompt_xor_messages(self) -> KaitoChatRequest:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("exactly one of 'prompt' or 'messages' is required")
        if self.prompt is not None and not self.prompt:
            raise ValueError("'prompt' must not be empty")
        if self.messages is not None and not self.messages:
            raise ValueError("'messages' must not be empty")
        return self


class KaitoChatResponse(BaseModel):
    Result: str


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    include_usage: bool = False


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
    best_of: int | None = Field(None, ge=1, le=MAX_COUNT)
    logit_bias: dict[str, float] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    ignore_eos: bool = False
    min_tokens: int = Field(0, ge=0, le=MAX_COUNT)
    user: str | None = None

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, value: str | list[str] | None) -> str | list[str] | None:
        return check_stop_strings(value)

    @field_validator("n")
    @classmethod
    def _only_one(cls, value: int) -> int:
        if value != 1:
            raise ValueError("only n=1 is supported")
        return value

    @field_validator("best_of")
    @classmethod
    def _best_of_one(cls, value: int | None) -> int | None:
        if value not in (None, 1):
            raise ValueError("only best_of=1 is supported")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _no_logit_bias(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value:
            raise ValueError("logit_bias is not supported")
        return value

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class ChatCompletionRequest(_SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_COUNT)
    logprobs: bool = False

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, value: bool) -> bool:
        if value:
            raise ValueError("logprobs are not supported")
        return value


class CompletionRequest(_SamplingRequest):
    prompt: str | list[str]
    max_tokens: int | None = Field(16, ge=1, le=MAX_COUNT)
    echo: bool = False

    @field_validator("prompt")
    @classmethod
    def _single_prompt(cls, value: str | list[str]) -> str | list[str]:
        items = [value] if isinstance(value, str) else value
        if len(items) != 1:
            raise ValueError("exactly one prompt is supported per request")
        if not items[0]:
            raise ValueError("prompt must not be empty")
        return value

    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


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
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: str | None


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
    logprobs: None = None
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
