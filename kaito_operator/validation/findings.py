"""What validation reports: one finding per problem, with the field path and the reason."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Finding:
    """A problem with one field. `message` names the offending value and what is required."""

    path: str
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def errors(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity == "error"]


def warnings(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity == "warning"]


def summary(findings: list[Finding]) -> str:
    """All errors on one line each, as the webhook's denial message and Events carry them."""
    return "; ".join(str(f) for f in errors(findings))
