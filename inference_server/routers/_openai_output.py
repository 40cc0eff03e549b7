"""The pieces of OpenAI answers: logprobs in both shapes, chat messages with tool calls, chunks.

Chat logprobs are ``{"content": [{token, logprob, bytes, top_logprobs: [...]}, ...]}``; the
completions endpoint keeps OpenAI's legacy shape, parallel lists (``tokens``,
``token_logprobs``, ``top_logprobs`` as token → logprob mappings that include the chosen token,
``text_offset``: where each token starts in the choice's text). Token texts and bytes come from
the engine (``token_text``), looked up once per event for every id it needs.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence
from typing import Any

from ..engine import Engine
from ..openai_service import ToolPlan
from ..protocol import (
    AssistantMessage,
    ChatLogprobs,
    CompletionLogprobs,
    TokenLogprobEntry,
    TopLogprob,
)
from ..request_handle import RequestHandle
from ..sampling import TokenLogprob
from ..tools import parse_calls

__all__ = ["LegacyLogprobs", "StopTrim", "TokenStarts", "chat_logprobs", "chat_message",
           "tool_call_deltas"]


def _pieces(engine: Engine, lps: Sequence[TokenLogprob]) -> dict[int, tuple[str, bytes]]:
    ids = sorted({lp.token_id for lp in lps} | {t for lp in lps for t, _ in lp.top})
    return dict(zip(ids, zip(engine.token_strings(ids), engine.token_bytes(ids), strict=True),
                    strict=True))


def chat_logprobs(engine: Engine, lps: Sequence[TokenLogprob]) -> ChatLogprobs:
    pieces = _pieces(engine, lps)

    def top(token_id: int, logprob: float) -> TopLogprob:
        text, raw = pieces[token_id]
        return TopLogprob(token=text, logprob=logprob, bytes=list(raw))

    return ChatLogprobs(content=[
        TokenLogprobEntry(**top(lp.token_id, lp.logprob).model_dump(),
                          top_logprobs=[top(t, v) for t, v in lp.top])
        for lp in lps
    ])


class TokenStarts:
    """Where each token's text starts in the choice's text, across the events of a choice.

    The offsets follow the text as decoded, not the token strings: special tokens (dropped
    from the text) add nothing, the bytes of a character split over tokens count once, at the
    token where the character starts, and bytes that turn out not to be a character count as
    the one U+FFFD the text shows for them.
    """

    def __init__(self, engine: Engine, offset: int = 0) -> None:
        self.offset = offset
        self._skipped = engine.special_tokens()
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, pieces: Sequence[tuple[str, bytes]]) -> list[int]:
        """The start of each of these tokens (text, bytes), which follow the previous ones."""
        starts = []
        for text, raw in pieces:
            if text in self._skipped:
                starts.append(self.offset)
                continue
            starts.append(self.offset + self._ended_by(raw))
            self.offset += len(self._utf8.decode(raw))
        return starts

    def _ended_by(self, raw: bytes) -> int:
        """1 when ``raw`` shows that the bytes held back (a partial character) are invalid."""
        held = self._utf8.getstate()[0]
        if not held or not raw:
            return 0
        probe = codecs.getincrementaldecoder("utf-8")(errors="replace")
        probe.setstate((held, 0))
        return 1 if probe.decode(raw[:1]).startswith("\ufffd") else 0


class StopTrim:
    """Drops the logprobs of tokens that start where a stop string cut the text, or later.

    The scheduler sends a token's logprob with the text it completes; when a stop string ends
    the choice, the tokens that hold the stop string (and any after it in the same step) were
    generated but are not part of the answer, so they are not reported either.
    """

    def __init__(self, engine: Engine, handle: RequestHandle) -> None:
        self.engine, self.handle = engine, handle
        self._starts = TokenStarts(engine)

    def __call__(self, lps: Sequence[TokenLogprob]) -> Sequence[TokenLogprob]:
        pieces = _pieces(self.engine, lps)
        starts = self._starts.push([pieces[lp.token_id] for lp in lps])
        if not self.handle.text.stopped:
            return lps
        cut = len(self.handle.text.text)
        return [lp for lp, start in zip(lps, starts, strict=True) if start < cut]


class LegacyLogprobs:
    """The completions shape for one choice, across the events of a stream (offsets add up);
    ``text_offset`` indexes the choice's text (``TokenStarts``)."""

    def __init__(self, engine: Engine, top: int) -> None:
        self.engine, self.top = engine, top
        self._starts = TokenStarts(engine)

    def build(self, lps: Sequence[TokenLogprob]) -> CompletionLogprobs:
        pieces = _pieces(self.engine, lps)
        out = CompletionLogprobs(tokens=[], token_logprobs=[], top_logprobs=[], text_offset=[])
        for lp in lps:
            text = pieces[lp.token_id][0]
            out.tokens.append(text)
            out.token_logprobs.append(lp.logprob)
            alternatives = {pieces[t][0]: v for t, v in lp.top[: self.top]}
            alternatives.setdefault(text, lp.logprob)
            out.top_logprobs.append(alternatives)
        out.text_offset = self._starts.push([pieces[lp.token_id] for lp in lps])
        return out


def chat_message(text: str, finish: str, tools: ToolPlan | None) -> tuple[AssistantMessage, str]:
    """The assistant message of a finished choice and its finish reason."""
    if tools is None:
        return AssistantMessage(content=text), finish
    parsed = parse_calls(text, tools.fmt, tools.names, tools.parallel)
    if not parsed.calls:
        return AssistantMessage(content=text), finish
    return (AssistantMessage(content=parsed.content, tool_calls=parsed.calls),
            "tool_calls" if finish == "stop" else finish)


def tool_call_deltas(calls: Sequence[Any]) -> list[dict[str, Any]]:
    """``delta.tool_calls`` for calls sent whole at the end of a stream."""
    return [{"index": k, "id": c.id, "type": "function",
             "function": {"name": c.function.name, "arguments": c.function.arguments}}
            for k, c in enumerate(calls)]
