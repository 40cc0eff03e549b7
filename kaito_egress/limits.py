"""Size, ratio and time bounds for downloads (standard library only).

A transfer is bounded by an overall :class:`Deadline`, a minimum rate over a sliding window
(a server trickling a byte every few seconds is cut off), a per-file byte cap, a total
:class:`Budget` shared by the files of one job, and, for gzip/deflate data, a decompression
ratio cap; the caps apply to the decompressed bytes.  Decompression is done in bounded pieces,
so a bomb never expands in memory.  Every violation raises :class:`LimitExceeded` or
:class:`ContentError` with a one-line message.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import IO

from kaito_egress.guard import EgressError

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
PIECE = 1 << 20
#: Below this many decompressed bytes the ratio cap does not apply (small, repetitive files).
RATIO_GRACE = 1 << 20


class LimitExceeded(EgressError):
    """A size, ratio or time bound was exceeded."""


class ContentError(EgressError):
    """The bytes received cannot be what was asked for (bad encoding, wrong length)."""


def human(n: float) -> str:
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= size:
            return f"{n / size:g} {unit}"
    return f"{int(n)} bytes"


class Deadline:
    """A point in time after which `check` raises; `remaining` feeds socket timeouts."""

    def __init__(self, seconds: float, what: str,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds, self.what, self._clock = seconds, what, clock
        self._end = clock() + seconds

    def remaining(self) -> float:
        return max(0.0, self._end - self._clock())

    def check(self) -> None:
        if self._clock() >= self._end:
            raise LimitExceeded(f"{self.what} did not finish within the {self.seconds:g} s "
                                f"deadline")


class RateFloor:
    """Raises when fewer than `min_rate * window` bytes arrived in the last `window` seconds."""

    def __init__(self, min_rate: float, window: float, what: str,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.min_rate, self.window, self.what, self._clock = min_rate, window, what, clock
        self._start, self._count = clock(), 0

    def update(self, n: int) -> None:
        self._count += n
        now = self._clock()
        if now - self._start < self.window:
            return
        if self._count < self.min_rate * (now - self._start):
            raise LimitExceeded(f"{self.what} stalled: {self._count} bytes in "
                                f"{now - self._start:.1f} s, below the minimum of "
                                f"{human(self.min_rate)}/s")
        self._start, self._count = now, 0


class Budget:
    """Bytes left for all the files of one job (shared by its transfers)."""

    def __init__(self, total: int, what: str) -> None:
        self.total, self.used, self.what = total, 0, what

    def take(self, n: int) -> None:
        self.used += n
        if self.used > self.total:
            raise LimitExceeded(f"{self.what} exceed the total cap of {human(self.total)}")


@dataclass(frozen=True)
class TransferLimits:
    """Bounds of one kind of fetch (the CLIs' flags fill them)."""

    deadline_s: float
    max_file_bytes: int
    max_total_bytes: int
    max_ratio: float = 50.0
    min_rate: float = 1024.0
    rate_window_s: float = 30.0
    connect_timeout_s: float = 10.0


class Inflater:
    """Bounded gzip/deflate decoding: yields pieces of at most PIECE bytes."""

    def __init__(self, encoding: str, what: str) -> None:
        self.what = what
        self.encoding = encoding
        if encoding in ("gzip", "x-gzip"):
            self._d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._d = zlib.decompressobj(zlib.MAX_WBITS)
        else:
            raise ContentError(f"{what}: unsupported Content-Encoding {encoding!r}")

    def feed(self, data: bytes) -> Iterable[bytes]:
        if self._d.eof:
            if data.strip(b"\0"):
                raise ContentError(f"{self.what}: data after the end of the {self.encoding} "
                                   f"stream")
            return
        try:
            piece = self._d.decompress(data, PIECE)
            while True:
                if piece:
                    yield piece
                if not self._d.unconsumed_tail or self._d.eof:
                    break
                piece = self._d.decompress(self._d.unconsumed_tail, PIECE)
        except zlib.error as err:
            raise ContentError(f"{self.what}: corrupt {self.encoding} data ({err})") from err

    def finish(self) -> None:
        if not self._d.eof:
            raise ContentError(f"{self.what}: the {self.encoding} stream is truncated")
        if self._d.unused_data.strip(b"\0"):
            raise ContentError(f"{self.what}: data after the end of the {self.encoding} stream")


def copy_bounded(chunks: Iterable[bytes], sink: IO[bytes], *, limits: TransferLimits,
                 what: str, deadline: Deadline, budget: Budget, encoding: str = "identity",
                 declared: int | None = None) -> int:
    """Writes the (decoded) bytes of `chunks` to `sink`; returns how many were written.
    `declared` is the exact raw length promised (Content-Length or a descriptor's size):
    more raw bytes than that, or fewer, is an error."""
    encoding = (encoding or "identity").strip().lower()
    inflater = None if encoding == "identity" else Inflater(encoding, what)
    rate = RateFloor(limits.min_rate, limits.rate_window_s, what)
    raw = written = 0

    def emit(piece: bytes) -> None:
        nonlocal written
        written += len(piece)
        if written > limits.max_file_bytes:
            raise LimitExceeded(f"{what} is larger than the per-file cap of "
                                f"{human(limits.max_file_bytes)}")
        if inflater and written > RATIO_GRACE and written > limits.max_ratio * raw:
            raise LimitExceeded(f"{what} expands more than {limits.max_ratio:g}x when "
                                f"decompressed ({raw} compressed bytes)")
        budget.take(len(piece))
        sink.write(piece)

    for chunk in chunks:
        deadline.check()
        raw += len(chunk)
        if declared is not None and raw > declared:
            raise ContentError(f"{what} sent more than the {declared} bytes it declared")
        rate.update(len(chunk))
        for piece in inflater.feed(chunk) if inflater else (chunk,):
            emit(piece)
    if declared is not None and raw != declared:
        raise ContentError(f"{what} ended after {raw} of its {declared} declared bytes")
    if inflater:
        inflater.finish()
    return written


def inflate_file(src: IO[bytes], dst: IO[bytes], *, limits: TransferLimits, what: str,
                 deadline: Deadline, budget: Budget) -> int:
    """Decompresses the gzip file `src` into `dst` under the same caps as a download."""
    src.seek(0)
    relaxed = TransferLimits(limits.deadline_s, limits.max_file_bytes, limits.max_total_bytes,
                             limits.max_ratio, min_rate=0.0, rate_window_s=limits.rate_window_s)
    return copy_bounded(iter(lambda: src.read(PIECE), b""), dst, limits=relaxed, what=what,
                        deadline=deadline, budget=budget, encoding="gzip")
