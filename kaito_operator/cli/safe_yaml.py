"""Loading untrusted YAML text with bounded cost.

`load_documents(text)` first walks the parser's event stream (the parser keeps an explicit
stack, so it does not recurse) and refuses the text before anything is built when:

* nesting is deeper than `max_depth` (including the depth an alias brings in),
* the documents would hold more than `max_nodes` nodes once every alias is expanded (this is
  what stops "billion laughs": ten aliases of ten aliases of ... are counted, not built),
* there are more than `max_aliases` alias references or `max_documents` documents,
* an alias refers to a node that contains it (a recursive structure).

Only then are the documents composed and constructed with the safe loader. Every failure is a
`YAMLInputError` whose message is one short line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

try:  # libyaml is much faster; the pure-Python classes behave the same.
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    # mypy wants one class per name; the two loaders have the same interface.
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

MAX_DEPTH = 100
MAX_NODES = 200_000
MAX_ALIASES = 10_000
MAX_DOCUMENTS = 10_000
MAX_MESSAGE = 200


class YAMLInputError(ValueError):
    """The text is not YAML, or loading it would cost more than the limits allow."""


@dataclass(frozen=True)
class Limits:
    max_depth: int = MAX_DEPTH
    max_nodes: int = MAX_NODES
    max_aliases: int = MAX_ALIASES
    max_documents: int = MAX_DOCUMENTS


@dataclass
class _Open:
    """A sequence or mapping whose end event has not been seen yet."""

    depth: int
    nodes_before: int
    anchor: str | None
    deepest: int = field(default=0)


def shorten(text: str, limit: int = MAX_MESSAGE) -> str:
    """`text` on one line, at most `limit` characters."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _at(what: str, mark: Any) -> str:
    return f"{what} at line {mark.line + 1}, column {mark.column + 1}" if mark else what


def describe(exc: yaml.YAMLError) -> str:
    """One line for a PyYAML error: the problem and where it is, without the source snippet."""
    if isinstance(exc, yaml.reader.ReaderError):
        char = ord(exc.character) if isinstance(exc.character, str) else exc.character
        return shorten(f"{exc.reason} (character #x{char:04x} at position {exc.position})")
    if isinstance(exc, yaml.MarkedYAMLError):
        parts = [_at(exc.problem, exc.problem_mark)] if exc.problem else []
        if exc.context:
            parts.append(f"({_at(exc.context, exc.context_mark)})")
        return shorten(" ".join(parts) or type(exc).__name__)
    return shorten(str(exc) or type(exc).__name__)


def check_shape(text: str, limits: Limits = Limits()) -> int:
    """Walk the events of `text` and raise `YAMLInputError` past a limit; returns the number
    of nodes the documents hold with aliases expanded."""
    stack: list[_Open] = []
    anchors: dict[str, tuple[int, int]] = {}  # anchor -> (expanded nodes, height)
    nodes = 0
    aliases = 0
    documents = 0

    def reached(depth: int) -> None:
        if depth > limits.max_depth:
            raise YAMLInputError(f"nesting is deeper than {limits.max_depth} levels")
        if stack and depth > stack[-1].deepest:
            stack[-1].deepest = depth

    def counted(more: int) -> None:
        nonlocal nodes
        nodes += more
        if nodes > limits.max_nodes:
            raise YAMLInputError(
                f"more than {limits.max_nodes} nodes once aliases are expanded"
            )

    try:
        for event in yaml.parse(text, Loader=_Loader):
            if isinstance(event, yaml.AliasEvent):
                aliases += 1
                if aliases > limits.max_aliases:
                    raise YAMLInputError(f"more than {limits.max_aliases} aliases")
                anchor = event.anchor or ""  # an alias always names its anchor
                if any(frame.anchor == anchor for frame in stack):
                    raise YAMLInputError(f"alias *{shorten(anchor, 40)} refers to a node "
                                         "that contains it (a recursive structure)")
                size, height = anchors.get(anchor, (1, 1))
                reached(len(stack) + height)
                counted(size)
            elif isinstance(event, yaml.ScalarEvent):
                reached(len(stack) + 1)
                counted(1)
                if event.anchor is not None:
                    anchors[event.anchor] = (1, 1)
            elif isinstance(event, yaml.CollectionStartEvent):
                depth = len(stack) + 1
                reached(depth)
                stack.append(_Open(depth, nodes, event.anchor, depth))
                counted(1)
            elif isinstance(event, yaml.DocumentStartEvent):
                documents += 1
                if documents > limits.max_documents:
                    raise YAMLInputError(f"more than {limits.max_documents} documents")
            elif isinstance(event, yaml.CollectionEndEvent) and stack:
                done = stack.pop()
                if done.anchor is not None:
                    anchors[done.anchor] = (nodes - done.nodes_before,
                                            done.deepest - done.depth + 1)
                if stack and done.deepest > stack[-1].deepest:
                    stack[-1].deepest = done.deepest
    except yaml.YAMLError as exc:
        raise YAMLInputError(f"not valid YAML: {describe(exc)}") from None
    return nodes


def load_documents(text: str, limits: Limits = Limits()) -> list[Any]:
    """The non-empty documents of `text`, built by the safe loader once `check_shape` passed."""
    check_shape(text, limits)
    try:
        return [doc for doc in yaml.load_all(text, Loader=_Loader) if doc is not None]
    except yaml.YAMLError as exc:
        raise YAMLInputError(f"not valid YAML: {describe(exc)}") from None
    except AttributeError:
        # `!!timestamp foo`: the safe constructor assumes the text matched the tag's pattern.
        raise YAMLInputError("a tagged value does not have the form its tag requires") from None
    except (ValueError, TypeError, OverflowError) as exc:
        # The safe constructor lets these through for values such as `2024-13-45` (a date
        # with month 13) or an integer of more digits than Python converts.
        raise YAMLInputError(f"a value cannot be loaded: {shorten(str(exc))}") from None
