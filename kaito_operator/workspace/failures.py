"""What a failed reconcile pass shows, and when it is retried.

`describe_failure` turns the exception that ended a pass into the reason and one-line message
of the `WorkspaceReady=False` condition: an API error keeps the API server's Status reason
(`Invalid` for a 422, `InternalError` for a 500, `Forbidden`, ...) and message, prefixed with
the request that failed; an API server that cannot be reached is `ApiUnreachable`; anything
else is `ReconcileError`. `Backoff` spaces the retries of a Workspace whose passes keep
failing: 1 s, doubling, at most 5 min.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp

from kaito_operator.kube import ApiError, one_line

#: Longest message a failed pass shows (the condition and the Event).
MAX_FAILURE_MESSAGE = 512
REASON_UNEXPECTED = "ReconcileError"
REASON_UNREACHABLE = "ApiUnreachable"


@dataclass(frozen=True)
class Backoff:
    """Delay before retry number `failures` (1 for the first): `initial * factor**(n-1)`,
    never more than `cap` seconds."""

    initial: float = 1.0
    factor: float = 2.0
    cap: float = 300.0

    def __post_init__(self) -> None:
        if not (0 < self.initial <= self.cap) or self.factor < 1:
            raise ValueError("backoff needs 0 < initial <= cap and factor >= 1")

    def delay(self, failures: int) -> float:
        exponent = min(max(failures, 1) - 1, 64)  # bounded: 2**64 s is past any cap
        return min(self.cap, self.initial * self.factor**exponent)


def describe_failure(exc: BaseException) -> tuple[str, str]:
    """(condition reason, one-line message) for the exception that ended a pass."""
    if isinstance(exc, ApiError):
        action = f"{exc.action}: " if exc.action else ""
        detail = exc.message or "(no message)"
        return exc.reason, one_line(f"{action}{exc.status} {exc.reason}: {detail}",
                                    MAX_FAILURE_MESSAGE)
    if isinstance(exc, aiohttp.ClientError | TimeoutError):
        text = str(exc) or type(exc).__name__
        return REASON_UNREACHABLE, one_line(f"the API server did not answer: {text}",
                                            MAX_FAILURE_MESSAGE)
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return REASON_UNEXPECTED, one_line(f"unexpected error in the reconcile pass: {text}",
                                       MAX_FAILURE_MESSAGE)
