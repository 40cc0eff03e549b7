"""Incremental detokenization with stop strings, for streaming one request's text.

Why not decode token by token: byte-level BPE splits multi-byte characters over several tokens,
SentencePiece drops the space of the first token of a decode and some tokenizers merge spaces
across tokens, so the text of one token depends on its neighbours. Why not re-decode the whole
output for every token (what this module did first): that costs O(n) per token, quadratic per
request (11 us per token at 64 tokens, 100 us at 1,024).

So a short window is decoded instead (the prefix-offset / read-offset technique of TGI and vLLM):
``decode(ids[start:])`` where the tokens ``ids[start:read]`` are context whose text is final and
known (``_context``); whatever the window decodes beyond that context is the text of the new tokens
(``_tail``). The tail becomes final ("committed") once it no longer ends in U+FFFD (a character
still missing bytes) or, with ``clean_up``, in something transformers' space clean-up may still
rewrite (" ." becomes "."): both would change when the next token arrives. Every ``_WINDOW``
tokens the window start moves up to the last ``_CONTEXT`` tokens, so a decode covers a bounded
number of tokens and a token costs one short decode (plus one more every few tokens).

Stop strings add a second hold-back: text that could be the beginning of a stop string is not sent
until it is known not to be one, so a client never receives part of a stop sequence.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["IncrementalText"]

_REPLACEMENT = "\ufffd"
#: What ``clean_up_tokenization`` (transformers) rewrites: it deletes the space in front of these,
#: one after the other, so " n ' t" becomes " n't" and then "n't".
_CLEANUP_PATTERNS = (" .", " ?", " !", " ,", " ' ", " n't", " 'm", " 's", " 've", " 're", " n ' t")
_CLEANUP_PREFIXES = frozenset(p[:k] for p in _CLEANUP_PATTERNS for k in range(1, len(p)))
_CLEANUP_PREFIX_MAX = max(len(p) for p in _CLEANUP_PREFIXES)
#: The window start moves once it lies this many tokens behind the last committed token ...
_WINDOW = 8
#: ... to this many tokens behind it (the context the next tokens are decoded in).
_CONTEXT = 2
#: Window starts tried (one token further back each) before waiting for the next commit.
_TRIES = 3
#: Tokens after which text that keeps ending in U+FFFD (invalid bytes, a run of spaces under
#: clean-up) is committed up to ``_SETTLED`` tokens before the end, once the window confirms it.
_MAX_PENDING = 16
_SETTLED = 4


class IncrementalText:
    """Feed tokens with ``push``; it returns the text that is safe to send so far.

    ``ids`` are the tokens pushed, ``stopped`` tells that a stop string ended the text, ``text``
    is the whole text so far (cut before the stop string). ``clean_up`` says that ``decode``
    applies transformers' clean-up of tokenization spaces, so text ending in a space is held back.
    """

    def __init__(
        self,
        decode: Callable[[list[int]], str],
        stop: tuple[str, ...] = (),
        *,
        clean_up: bool = False,
    ) -> None:
        self._decode = decode
        self._stop = tuple(s for s in stop if s)
        self._max_stop = max((len(s) for s in self._stop), default=0)
        self._stop_prefixes = frozenset(s[:k] for s in self._stop for k in range(1, len(s)))
        self._stop_prefix_ends = frozenset(p[-1] for p in self._stop_prefixes)
        self._clean_up = clean_up
        self.ids: list[int] = []
        self.stopped = False
        self._start = 0  # first token of the decode window
        self._read = 0  # tokens before this one have final text
        self._context = ""  # decode(ids[start:read])
        self._tail = ""  # the window's text beyond the context: ids[read:], may still change
        self._tail_sent = 0  # characters of the tail already sent
        self._held = ""  # final text not sent yet (it could begin a stop string)
        self._sent: list[str] = []

    @property
    def text(self) -> str:
        """The text so far: what was sent and what is held back."""
        return "".join(self._sent) + self._unsent()

    def push(self, token: int) -> str:
        """Add a token; return the new sendable text (possibly empty). Sets ``stopped``."""
        self.ids.append(token)
        if self.stopped:
            return ""
        window = self._decode(self.ids[self._start :])
        if not window.startswith(self._context):
            if window.endswith(_REPLACEMENT):  # byte fallback: a byte run decodes as a whole,
                return ""  # so an unfinished character spoils its run until it is complete
            window = self._resync()
        self._tail = window[len(self._context) :]
        unsent = self._unsent()
        if self._stop:
            cut = min((i for i in map(unsent.find, self._stop) if i >= 0), default=-1)
            if cut >= 0:
                self.stopped = True
                self._held, self._tail, self._tail_sent = unsent[:cut], "", 0
                return self._take(cut, self._held)
        end = len(unsent)
        while end > 0 and unsent[end - 1] == _REPLACEMENT:
            end -= 1
        if self._clean_up:
            end -= _cleanup_prefix_len(unsent[:end])
        if self._stop:
            end -= self._stop_prefix_len(unsent[:end])
        delta = self._take(end, unsent)
        if self._tail_is_final():
            self._commit(len(self.ids), window)
        elif len(self.ids) - self._read > _MAX_PENDING:
            self._commit_settled(window)
        return delta

    def finish(self) -> str:
        """The rest of the text once generation has ended (nothing is held back any more)."""
        if not self.stopped and self.ids:  # the last push may have waited on an unfinished run
            window = self._decode(self.ids[self._start :])
            if not window.startswith(self._context):
                window = self._resync()
            self._tail = window[len(self._context) :]
        unsent = self._unsent()
        return self._take(len(unsent), unsent)

    def _unsent(self) -> str:
        return self._held + self._tail[self._tail_sent :]

    def _take(self, end: int, unsent: str) -> str:
        """Send the first ``end`` characters of the unsent text (``unsent``)."""
        if end <= 0:
            return ""
        delta = unsent[:end]
        if end <= len(self._held):
            self._held = self._held[end:]
        else:
            self._tail_sent += end - len(self._held)
            self._held = ""
        self._sent.append(delta)
        return delta

    def _tail_is_final(self) -> bool:
        if self._tail.endswith(_REPLACEMENT):
            return False
        return not (self._clean_up and _cleanup_prefix_len(self._tail) > 0)

    def _commit(self, read: int, context: str) -> None:
        """Make the text of ``ids[self._read:read]`` final; ``context`` is the window's text of
        ``ids[start:read]``; then move the window start up if the window has grown long."""
        done = context[len(self._context) :]
        self._held += done[self._tail_sent :]
        self._tail_sent = max(0, self._tail_sent - len(done))
        self._tail = self._tail[len(done) :]
        self._read, self._context = read, context
        if read - self._start <= _WINDOW:
            return
        for start in range(read - _CONTEXT, read - _CONTEXT - _TRIES, -1):
            shorter = self._decode(self.ids[start:read])
            # Its text must end the context's: not begin inside a character's bytes (or a
            # word's pieces), nor be empty (the next token would decode as if it came first).
            if shorter and self._context.endswith(shorter):
                self._start, self._context = start, shorter
                return

    def _commit_settled(self, window: str) -> None:
        """Text that keeps ending unfinished: commit all but the last few tokens, whose bytes
        decide how the earlier ones decode, if the window shows their text unchanged."""
        read = len(self.ids) - _SETTLED
        context = self._decode(self.ids[self._start : read])
        if window.startswith(context) and len(context) >= len(self._context):
            self._commit(read, context)

    def _resync(self) -> str:
        """The window no longer begins with the context's text (a tokenizer whose text depends on
        more than the last few tokens): decode from the first token again, once."""
        self._start = 0
        self._context = self._decode(self.ids[: self._read])
        return self._decode(self.ids)

    def _stop_prefix_len(self, text: str) -> int:
        """Length of the longest suffix of ``text`` that begins some stop string."""
        if not text or text[-1] not in self._stop_prefix_ends:
            return 0
        for k in range(min(self._max_stop - 1, len(text)), 0, -1):
            if text[-k:] in self._stop_prefixes:
                return k
        return 0


def _cleanup_prefix_len(text: str) -> int:
    """Length of the longest suffix of ``text`` that the space clean-up may still rewrite."""
    for k in range(min(_CLEANUP_PREFIX_MAX, len(text)), 0, -1):
        if text[-k:] in _CLEANUP_PREFIXES:
            return k
    return 0
