"""Reading the files given to `kaito validate` and `kaito render` as bounded, decoded text.

`read_text(name)` reads a regular file (or standard input for "-") of at most
`MAX_INPUT_BYTES`, decodes it and returns the text, or raises `InputError` with a one-line
reason. A FIFO, a device or a socket is refused without reading it: opening is non-blocking and
the type is checked on the open descriptor, so a FIFO with no writer cannot hang the command.

Accepted encodings are the ones YAML defines for files: UTF-8 (with or without a byte-order
mark) and UTF-16 with a byte-order mark.
"""

from __future__ import annotations

import codecs
import os
import stat
import sys
from typing import BinaryIO

# Larger than the API server's 3 MiB request limit, so that any object a cluster could hold
# fits, and small enough that parsing the largest accepted file stays well under a second.
MAX_INPUT_BYTES = 4 * 1024 * 1024
_CHUNK = 1024 * 1024


class InputError(Exception):
    """The input cannot be read as text: the message says why, on one line."""


def _mib(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MiB"


def _too_big(size: int | None = None) -> InputError:
    actual = f"is {_mib(size)}, " if size is not None else "is "
    return InputError(f"{actual}over the {_mib(MAX_INPUT_BYTES)} input limit")


def _read_bounded(stream: BinaryIO | int) -> bytes:
    """At most MAX_INPUT_BYTES + 1 bytes, so that a larger input is detected without reading
    it all."""
    parts: list[bytes] = []
    left = MAX_INPUT_BYTES + 1
    while left > 0:
        chunk = (os.read(stream, min(_CHUNK, left)) if isinstance(stream, int)
                 else stream.read(min(_CHUNK, left)))
        if not chunk:
            break
        parts.append(chunk)
        left -= len(chunk)
    data = b"".join(parts)
    if len(data) > MAX_INPUT_BYTES:
        raise _too_big()
    return data


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def read_bytes(name: str, stdin: BinaryIO | None = None) -> bytes:
    """The bytes of file `name` ("-": standard input), bounded and from regular files only."""
    if name == "-":
        return _read_bounded(stdin if stdin is not None else sys.stdin.buffer)
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(name, flags)
    except OSError as exc:
        raise InputError(f"cannot open: {_reason(exc)}") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise InputError("is a directory, not a file")
        if not stat.S_ISREG(info.st_mode):
            raise InputError("is not a regular file (a FIFO, a device or a socket)")
        if info.st_size > MAX_INPUT_BYTES:
            raise _too_big(info.st_size)
        return _read_bounded(fd)
    except OSError as exc:
        raise InputError(f"cannot read: {_reason(exc)}") from None
    finally:
        os.close(fd)


def decode(data: bytes) -> str:
    """Text of `data`: UTF-8 (a leading byte-order mark is dropped) or UTF-16 with a
    byte-order mark; anything else is refused with the offset of the first bad byte."""
    if data.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        raise InputError("is UTF-32 text, which YAML files may not use: save it as UTF-8")
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise InputError(f"is not valid UTF-16 text: {exc.reason} at byte "
                             f"{exc.start}") from None
    nul = data.find(b"\x00")
    if nul >= 0:
        raise InputError(f"holds a NUL byte at offset {nul}: binary data, or UTF-16/UTF-32 "
                         "text without a byte-order mark (save it as UTF-8)")
    start = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[start:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = start + exc.start
        raise InputError(f"is not UTF-8 text: byte 0x{data[offset]:02x} at offset {offset} "
                         "cannot be decoded") from None


def read_text(name: str, stdin: BinaryIO | None = None) -> str:
    """The decoded text of file `name` ("-": standard input); `InputError` otherwise."""
    return decode(read_bytes(name, stdin))
