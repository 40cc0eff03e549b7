"""The exact bytes and the text of single tokens, for logprobs in API responses.

Why not ``tokenizer.decode([id])``: a byte-level BPE token can hold part of a UTF-8 character
(decode gives U+FFFD) and SentencePiece tokens carry their leading space as "▁" or are byte
tokens like ``<0xE2>``. OpenAI reports each token's text and its raw bytes, so that a client can
join the bytes of consecutive tokens back into the text; the text of a token that holds part of
a character is written ``bytes:\\xe2\\x80`` (vLLM's convention), so that distinct tokens keep
distinct texts. The tokenizer kind is probed once.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

__all__ = ["TokenText"]

_BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
_SENTENCEPIECE_SPACE = "\u2581"


@cache
def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's byte-to-printable-character table, inverted (character → byte)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


def _as_text(raw: bytes) -> str:
    """The token's text, or (as vLLM writes it) its bytes when they are not whole characters."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + "".join(f"\\x{b:02x}" for b in raw)


class TokenText:
    """Per-token bytes and text for one tokenizer (thread-safe: it only reads)."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        backend = getattr(tokenizer, "backend_tokenizer", None)
        decoder = getattr(backend, "decoder", None)
        self._byte_level = type(decoder).__name__ == "ByteLevel"
        added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
        self.special = frozenset(
            str(token.content) for token in added.values() if getattr(token, "special", False))
        """The text of the special tokens."""

    def token_bytes(self, ids: list[int]) -> list[bytes]:
        pieces = self._tokenizer.convert_ids_to_tokens(ids)
        return [self._piece_bytes(token_id, piece) for token_id, piece in zip(ids, pieces,
                                                                              strict=True)]

    def token_strings(self, ids: list[int]) -> list[str]:
        """Each token's text; a token that is part of a character is ``bytes:\\xe2\\x80``."""
        return [_as_text(b) for b in self.token_bytes(ids)]

    def _piece_bytes(self, token_id: int, piece: str | None) -> bytes:
        if piece is None:
            return b""
        if self._byte_level:
            alphabet = _byte_level_alphabet()
            if all(ch in alphabet for ch in piece):
                return bytes(alphabet[ch] for ch in piece)
            return piece.encode("utf-8")  # an added token kept as written
        match = _BYTE_TOKEN.match(piece)
        if match:
            return bytes([int(match.group(1), 16)])
        if _SENTENCEPIECE_SPACE in piece:
            return piece.replace(_SENTENCEPIECE_SPACE, " ").encode("utf-8")
        return str(self._tokenizer.decode([token_id], skip_special_tokens=False)).encode("utf-8")
