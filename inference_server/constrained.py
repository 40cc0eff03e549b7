"""Constrained decoding: JSON output (any object, or one matching a JSON Schema) for batch rows.

What it is for: ``response_format`` ``json_object`` / ``json_schema`` and forced tool calls.
A ``ConstraintSpec`` says what the output must be: a JSON value (``json_schema=None`` means "any
JSON object"), optionally between literal ``prefix`` and ``suffix`` text (the tool-call markers
of a chat template). ``ConstraintCompiler.compile`` turns it into a ``Constraint`` once per
distinct spec (bounded LRU cache); every request row gets its own ``RowMatcher`` from it, which
``sampling.select_tokens`` asks for the allowed tokens and advances with the chosen token.

Why llguidance (and not outlines-core): its Earley parser takes recursive JSON (``json_object``
and recursive schemas) that a regular expression cannot express, compiles a schema in
milliseconds instead of building a DFA over the whole vocabulary, computes masks for a batch in
parallel in native code without the GIL, and refuses schemas it cannot enforce with a reason
instead of ignoring keywords; vLLM, SGLang and llama.cpp offer it as a backend. Measurements
(compile and mask times against outlines-core) are in the README's constrained-decoding section.

Output layout: ``{"a": 1, "b": [2, 3]}`` (the separators of ``json.dumps``, no other
whitespace), so that a model that keeps emitting whitespace cannot wander off; strings and
numbers are what the model writes.
"""

from __future__ import annotations

import functools
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .errors import InvalidRequestError

if TYPE_CHECKING:
    from llguidance._lib import JsonCompileOptions

__all__ = ["Constraint", "ConstraintCompiler", "ConstraintSpec", "RowMatcher", "allowed_tokens"]

#: JSON layout of constrained output: ``json.dumps``' default separators, no free whitespace.
_JSON_OPTIONS: JsonCompileOptions = {
    "whitespace_flexible": False,
    "item_separator": ", ",
    "key_separator": ": ",
}
_ANY_OBJECT: dict[str, Any] = {"type": "object"}


@dataclass(frozen=True)
class ConstraintSpec:
    """What the output must be: ``prefix``, then JSON (``None``: any object), then ``suffix``."""

    json_schema: dict[str, Any] | None = field(hash=False)
    prefix: str = ""
    suffix: str = ""

    def key(self) -> str:
        """A canonical text of the spec, for the compile cache."""
        return json.dumps([self.json_schema, self.prefix, self.suffix], sort_keys=True)


class RowMatcher:
    """One row's position in its grammar: which tokens may come next, and whether it is done."""

    def __init__(self, matcher: Any) -> None:
        self._matcher = matcher

    @property
    def complete(self) -> bool:
        """Nothing but end-of-sequence can follow (the JSON and the suffix are written)."""
        return bool(self._matcher.is_stopped())

    @property
    def failed(self) -> str | None:
        """Why the row cannot continue under its grammar (None: it can)."""
        return str(self._matcher.get_error()) if self._matcher.is_error() else None

    def advance(self, token: int) -> bool:
        """Feed the chosen token; False when the grammar rejected it (the row is then failed)."""
        return bool(self._matcher.consume_token(token))


class Constraint:
    """A compiled ``ConstraintSpec`` for one tokenizer; ``matcher()`` starts a row on it."""

    def __init__(self, spec: ConstraintSpec, template: Any) -> None:
        self.spec = spec
        self._template = template

    def matcher(self) -> RowMatcher:
        return RowMatcher(self._template.deep_copy())


class ConstraintCompiler:
    """Compiles specs against one tokenizer; thread-safe, caching up to ``cache_size`` specs.

    Building the tokenizer wrapper walks the whole vocabulary (milliseconds for 32k tokens), so
    it happens on the first compile, not when the model loads.
    """

    def __init__(
        self, tokenizer: Any, vocab_size: int, eos_ids: Iterable[int], *, cache_size: int = 64
    ) -> None:
        self._hf_tokenizer = tokenizer
        self._vocab_size = vocab_size
        self._eos_ids = sorted(eos_ids)
        self._cache_size = cache_size
        self._cache: OrderedDict[str, Constraint] = OrderedDict()
        self._lock = threading.Lock()
        self._tokenizer: Any = None
        self._unusable: str | None = None
        self._markers: dict[str, int] = {}

    def compile(self, spec: ConstraintSpec) -> Constraint:
        """The compiled constraint, or ``InvalidRequestError`` with the library's reason."""
        key = spec.key()
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
            tokenizer = self._llg_tokenizer()
        constraint = Constraint(spec, _build_matcher(tokenizer, spec, self._markers))
        with self._lock:
            self._cache[key] = constraint
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return constraint

    def _llg_tokenizer(self) -> Any:
        """llguidance's view of the tokenizer, built once; a tokenizer it cannot take is a 400
        for every constrained request (remembered, so it is not rebuilt per request)."""
        if self._tokenizer is None and self._unusable is None:
            import llguidance.hf
            from transformers import PreTrainedTokenizerFast

            if not isinstance(self._hf_tokenizer, PreTrainedTokenizerFast):
                self._unusable = "needs a fast tokenizer, and this model has a slow one"
            elif not self._eos_ids:  # a complete document ends the row with end-of-sequence
                self._unusable = "needs an end-of-sequence token, and this model has none"
            else:
                try:
                    self._tokenizer = llguidance.hf.from_tokenizer(
                        self._hf_tokenizer, n_vocab=self._vocab_size, eos_token=self._eos_ids
                    )
                    self._markers = _marker_tokens(self._hf_tokenizer)
                except Exception as exc:  # the library's reason, whatever it raises
                    self._unusable = f"cannot use this model's tokenizer: {exc}"
        if self._unusable is not None:
            raise InvalidRequestError(
                f"constrained decoding (response_format, tool_choice) {self._unusable}",
                param="response_format",
            )
        return self._tokenizer


def _marker_tokens(tokenizer: Any) -> dict[str, int]:
    """Added tokens whose text ``decode`` keeps (not special): tool-call markers such as Qwen's
    ``<tool_call>``. The grammar asks for the token itself, as the model was trained to write
    it, instead of spelling its text out of ordinary tokens."""
    added = getattr(tokenizer, "added_tokens_decoder", {})
    return {str(t.content): int(i) for i, t in added.items() if not t.special and t.content}


def _lark_literal(text: str, markers: dict[str, int]) -> str:
    """``text`` as a Lark sequence: marker tokens as ``<[id]>``, the rest as string literals
    (JSON string syntax is Lark's)."""
    if not text:
        return ""
    found = [m for m in markers if m in text]
    if not found:
        return json.dumps(text)
    pattern = "|".join(re.escape(m) for m in sorted(found, key=len, reverse=True))
    pieces = re.split(f"({pattern})", text)
    return " ".join(
        f"<[{markers[piece]}]>" if piece in markers else json.dumps(piece)
        for piece in pieces if piece
    )


def _grammar(spec: ConstraintSpec, markers: dict[str, int]) -> str:
    import llguidance

    schema = _ANY_OBJECT if spec.json_schema is None else spec.json_schema
    if not spec.prefix and not spec.suffix:
        return str(llguidance.LLMatcher.grammar_from_json_schema(schema, overrides=_JSON_OPTIONS))
    # Lark: the literal text around llguidance's %json rule
    body = json.dumps({**schema, "x-guidance": dict(_JSON_OPTIONS)})
    prefix, suffix = (_lark_literal(text, markers) for text in (spec.prefix, spec.suffix))
    lark = f"start: {prefix} body {suffix}\nbody: %json {body}\n"
    return str(llguidance.LLMatcher.grammar_from_lark(lark))


def _build_matcher(tokenizer: Any, spec: ConstraintSpec, markers: dict[str, int]) -> Any:
    import llguidance

    if spec.json_schema is not None and not isinstance(spec.json_schema, dict):
        raise InvalidRequestError("the JSON schema must be an object", param="response_format")
    try:
        grammar = _grammar(spec, markers)
    except (ValueError, TypeError) as exc:
        raise InvalidRequestError(f"unusable JSON schema: {exc}", param="response_format") from exc
    matcher = llguidance.LLMatcher(tokenizer, grammar, log_level=0)
    if matcher.is_error():
        raise InvalidRequestError(
            f"the JSON schema cannot be enforced: {matcher.get_error()}", param="response_format"
        )
    # The first mask builds the lexer's states, which the rows' copies share: do it here, on
    # the compiling thread, instead of inside the first batch step that uses the grammar.
    matcher.compute_bitmask()
    return matcher


@functools.cache
def _executor() -> Any:
    """One native thread pool for computing all rows' masks at once (created on first use)."""
    import llguidance

    return llguidance.LLExecutor()


def allowed_tokens(
    matchers: Sequence[RowMatcher], vocab: int, device: torch.device
) -> torch.Tensor:
    """A ``[len(matchers), vocab]`` bool tensor: which tokens each row's grammar allows next.

    llguidance writes one bit per token (little-endian 32-bit words); numpy's ``unpackbits``
    turns that into one byte per token far faster than shifting in torch (50 ms for 16 rows of
    32k tokens on a CPU, against well under 1 ms).
    """
    words = (vocab + 31) // 32
    bitmask = np.zeros((len(matchers), words), dtype=np.int32)
    _executor().unsafe_compute_mask_ptr(
        [(m._matcher, i) for i, m in enumerate(matchers)], bitmask.ctypes.data, words * 4,
        len(matchers),
    )
    bits = np.unpackbits(bitmask.view(np.uint8), axis=-1, bitorder="little")[:, :vocab]
    return torch.from_numpy(bits.view(np.bool_)).to(device)
