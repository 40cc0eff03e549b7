"""What validation reports: one finding per problem, with the field path and the reason."""

from __future__ import annotations

import reprlib
from dataclasses import dataclass
from typing import Any, Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Finding:
    """A problem with one field. `message` names the offending value and what is required."""

    path: str
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def _short_repr() -> reprlib.Repr:
    short = reprlib.Repr()
    short.maxlevel = 3
    short.maxdict = short.maxlist = short.maxtuple = short.maxset = 4
    short.maxstring = short.maxother = 70
    short.maxlong = 40
    return short


def show(value: Any, width: int = 80) -> str:
    """A short repr of a value from a Workspace: bounded in time and length, whatever its
    size or nesting."""
    try:
        text = _short_repr().repr(value)
    except ValueError:  # an integer too long to print
        text = f"<{type(value).__name__} too long to show>"
    return text if len(text) <= width else text[: width - 3] + "..."


def errors(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity == "error"]


def warnings(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity == "warning"]


def summary(findings: list[Finding]) -> str:
    """All errors on one line each, as the webhook's denial message and Events carry them."""
    return "; ".join(str(f) for f in errors(findings))
