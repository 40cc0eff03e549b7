"""How long to wait before trying again something that keeps failing.

`Backoff` grows exponentially from `initial` by `factor` up to `cap`; the exponent is bounded,
so a key that failed ten thousand times in a row still gets a finite float. `retry_delay` is
the same curve counted from zero attempts, with a server's `Retry-After` taking precedence.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Largest exponent used: 2**64 times any sensible initial delay is past any cap.
MAX_EXPONENT = 64


def exponential(initial: float, factor: float, cap: float, step: int) -> float:
    """`initial * factor**step` (step 0 for the first try), never more than `cap`."""
    return min(cap, initial * factor ** min(max(step, 0), MAX_EXPONENT))


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
        return exponential(self.initial, self.factor, self.cap, failures - 1)


def retry_delay(attempts: int, base: float, cap: float, retry_after: float | None) -> float:
    """The server's `Retry-After` when it gave one, else doubling from `base` (no attempts
    yet) to `cap`."""
    if retry_after is not None:
        return max(retry_after, 0.0)
    return exponential(base, 2.0, cap, attempts)
