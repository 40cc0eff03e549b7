"""Request and response models of the two APIs: KAITO's classic ``/chat`` and the OpenAI subset.

Why strict models: input is parsed once at the edge, so the rest of the server works on typed
values and a wrong type (``"max_tokens": "ten"``, ``"stream": "yes"``) is a 4xx with a message,
never a surprise deeper down. Unknown top-level fields are allowed (clients send many optional
OpenAI fields) and logged by the routers as ignored.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

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
    model_config = ConfigDict(extra="allow", strict=True)

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


class GenerateKwargs(BaseModel):
    """KAITO's classic generation options; defaults are those of KAITO's ``inference_api.py``.

    Other keys are allowed here and checked against ``transformers.GenerationConfig`` by the
    router (an unknown key is a 400 naming it).
    """

    model_config = ConfigDict(extra="allow", strict=True)

    max_length: int | None = Field(200, ge=1)
    max_new_tokens: int | None = Field(None, ge=1)
    min_length: int = Field(0, ge=0)
    min_new_tokens: int | None = Field(None, ge=0)
    do_sample: bool = True
    early_stopping: bool | Literal["never"] = False
    num_beams: int = Field(1, ge=1, le=16)
    temperature: float = Field(1.0, gt=0.0, le=100.0)
    top_k: int = Field(10, ge=0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    typical_p: float = Field(1.0, gt=0.0, le=1.0)
    repetition_penalty: float = Field(1.0, gt=0.0, le=100.0)
    seed: int | None = Field(None, ge=0, le=2**63 - 1)


class KaitoChatRequest(_Request):
    """``POST /chat``: ``prompt`` (text generation) or ``messages`` (conversation)."""

    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    return_full_text: bool = True
    clean_up_tokenization_spaces: bool = False
    generate_kwargs: GenerateKwargs = Field(default_factory=GenerateKwargs)

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
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=-1)
    repetition_penalty: float = Field(1.0, gt=0.0, le=100.0)
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    n: int = Field(1, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    ignore_eos: bool = False
    min_tokens: int = Field(0, ge=0)
    user: str | None = None

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, value: str | list[str] | None) -> str | list[str] | None:
        items = [value] if isinstance(value, str) else (value or [])
        if len(items) > 4:
            raise ValueError("at most 4 stop sequences are allowed")
        if any(not s for s in items):
            raise ValueError("stop sequences must not be empty")
        return value

    @field_validator("n")
    @classmethod
    def _only_one(cls, value: int) -> int:
        if value != 1:
            raise ValueError("only n=1 is supported")
        return value

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class ChatCompletionRequest(_SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, value: bool) -> bool:
        if value:
            raise ValueError("logprobs are not supported")
        return value


class CompletionRequest(_SamplingRequest):
    prompt: str | list[str]
    max_tokens: int | None = Field(16, ge=1)
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
