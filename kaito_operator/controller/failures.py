"""What a failed reconcile pass says about itself: a condition reason and a one-line message.

An API error keeps the API server's Status reason (`Invalid` for a 422, `InternalError` for a
500, `Forbidden`, ...) and message, prefixed with the request that failed; an API server that
cannot be reached is `ApiUnreachable`; anything else is `ReconcileError`.
"""

from __future__ import annotations

from kaito_operator.kube import ApiError, is_unreachable, one_line

#: Longest message a failed pass shows (a condition, an Event).
MAX_FAILURE_MESSAGE = 512
REASON_UNEXPECTED = "ReconcileError"
REASON_UNREACHABLE = "ApiUnreachable"


def describe_failure(exc: BaseException) -> tuple[str, str]:
    """(condition reason, one-line message) for the exception that ended a pass."""
    if isinstance(exc, ApiError):
        action = f"{exc.action}: " if exc.action else ""
        detail = exc.message or "(no message)"
        return exc.reason, one_line(f"{action}{exc.status} {exc.reason}: {detail}",
                                    MAX_FAILURE_MESSAGE)
    if is_unreachable(exc):
        text = str(exc) or type(exc).__name__
        return REASON_UNREACHABLE, one_line(f"the API server did not answer: {text}",
                                            MAX_FAILURE_MESSAGE)
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return REASON_UNEXPECTED, one_line(f"unexpected error in the reconcile pass: {text}",
                                       MAX_FAILURE_MESSAGE)
