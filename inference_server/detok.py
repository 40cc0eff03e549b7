"""Incremental detokenization with stop strings, for streaming one request's text.

Why not decode token by token: byte-level BPE splits multi-byte characters over several tokens and
some tokenizers merge spaces across tokens, so the text of ``ids[:n]`` is only a stable prefix of
the text of ``ids[:n+1]`` once trailing replacement characters are held back. Stop strings add a
second hold-back: text that could be the beginning of a stop string is not sent until it is known
not to be one, so a client never receives part of a stop sequence.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["IncrementalText"]

_REPLACEMENT = "\ufffd"


class IncrementalText:
    """Feed tokens with ``push``; it returns the text that is safe to send so far."""

    def __init__(self, decode: Callable[[list[int]], str], stop: tuple[str, ...] = ()) -> None:
        self._decode = decode
        self._stop = tuple(s for s in stop if s)
        self._max_stop = max((len(s) for s in self._stop), default=0)
        self.ids: list[int] = []
        self.text = ""
        self.sent = 0
        self.stopped = False

    def push(self, token: int) -> str:
        """Add a token; return the new sendable text (possibly empty). Sets ``stopped``."""
        self.ids.append(token)
        text = self._decode(self.ids)
        if self._stop:
            start = max(0, self.sent - self._max_stop)
            hits = [i for i in (text.find(s, start) for s in self._stop) if i >= 0]
            if hits:
                self.text = text[: min(hits)]
                self.stopped = True
                return self._emit(len(self.text))
        self.text = text
        end = len(text)
        while end > self.sent and text[end - 1] == _REPLACEMENT:
            end -= 1
        end -= self._stop_prefix_len(text[:end])
        return self._emit(end)

    def finish(self) -> str:
        """The rest of the text once generation has ended (nothing is held back any more)."""
        return self._emit(len(self.text))

    def _stop_prefix_len(self, text: str) -> int:
        """Length of the longest suffix of ``text`` that begins some stop string."""
        for k in range(min(self._max_stop - 1, len(text) - self.sent), 0, -1):
            tail = text[-k:]
            if any(s.startswith(tail) for s in self._stop):
                return k
        return 0

    def _emit(self, end: int) -> str:
        if end <= self.sent:
            return ""
        delta = self.text[self.sent:end]
        self.sent = end
        return delta
