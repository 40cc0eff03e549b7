"""The header of a GGUF file: metadata and tensor table, parsed without touching tensor data.

Why our own: ``gguf.GGUFReader`` builds a numpy view per metadata array element (27 s for a
262144-token vocabulary on 2 cores), and transformers' fast header reader refuses files holding
ggml types it cannot unpack itself (Gemma 3 270M's Q4_K_M file has Q5_0 tensors). This reader
walks the format (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md) with ``struct``,
keeps string arrays only as counts unless asked, and takes byte sizes from the ``gguf``
package's ``GGML_QUANT_SIZES``. Every count is checked against the file size first, so a hostile
or truncated file ends in a ``ValueError`` saying what is wrong, never a long loop.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Container
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["GgufHeaderInfo", "TensorEntry", "read_header"]

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
            10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True)
class TensorEntry:
    name: str
    shape: tuple[int, ...]
    """In torch order (GGUF stores the fastest-moving dimension first)."""
    ggml_type: int
    offset: int
    """From the start of the file."""
    nbytes: int


@dataclass(frozen=True)
class GgufHeaderInfo:
    version: int
    metadata: dict[str, Any]
    """Scalars, strings, numeric arrays as lists; string arrays as their length unless kept."""
    tensors: tuple[TensorEntry, ...]


class _Cursor:
    def __init__(self, data: Any, size: int) -> None:
        self.data, self.size, self.pos = data, size, 0

    def take(self, fmt: str) -> Any:
        width = struct.calcsize(fmt)
        if self.pos + width > self.size:
            raise ValueError(f"the header ends early (byte {self.pos} of {self.size})")
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += width
        return value

    def count(self, what: str, least_bytes: int) -> int:
        """A length field, refused when the rest of the file cannot hold that many items."""
        value = int(self.take("<Q"))
        if value * least_bytes > self.size - self.pos:
            raise ValueError(f"{what} count {value} does not fit in the file")
        return value

    def string(self) -> str:
        length = self.count("string byte", 1)
        raw = bytes(self.data[self.pos:self.pos + length])
        self.pos += length
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"the string at byte {self.pos - length} is not UTF-8") from None

    def value(self, kind: int, keep_strings: bool) -> Any:
        if kind in _SCALARS:
            return self.take(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind != _ARRAY:
            raise ValueError(f"unknown metadata value type {kind}")
        item = int(self.take("<I"))
        if item in _SCALARS:
            n = self.count("array", struct.calcsize(_SCALARS[item]))
            fmt = "<" + str(n) + _SCALARS[item][1]
            values = list(struct.unpack_from(fmt, self.data, self.pos))
            self.pos += struct.calcsize(fmt)
            return values
        if item != _STRING:
            raise ValueError(f"metadata arrays of type {item} are not supported")
        n = self.count("array", 8)
        if keep_strings:
            return [self.string() for _ in range(n)]
        for _ in range(n):
            length = self.count("string byte", 1)
            self.pos += length
        return n


def _nbytes(ggml_type: int, shape: tuple[int, ...], name: str) -> int:
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    try:
        block, size = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
    except (ValueError, KeyError):
        raise ValueError(f"tensor {name} has unknown ggml type {ggml_type}") from None
    elements = 1
    for dim in shape:
        elements *= dim
    if shape and shape[-1] % block:
        raise ValueError(f"tensor {name}: a row of {shape[-1]} is not whole {block}-blocks")
    return elements // block * size


def read_header(path: Path, string_arrays: Container[str] = ()) -> GgufHeaderInfo:
    """Parse ``path``'s header; ``ValueError`` says why a file is not a usable GGUF."""
    with open(path, "rb") as handle:
        size = Path(path).stat().st_size
        if size < 24:
            raise ValueError(f"{size} bytes is too short for a GGUF header")
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return _parse(_Cursor(data, size), string_arrays)


def _parse(cur: _Cursor, string_arrays: Container[str]) -> GgufHeaderInfo:
    if bytes(cur.data[:4]) != b"GGUF":
        raise ValueError("it does not start with the GGUF magic bytes")
    cur.pos = 4
    version = int(cur.take("<I"))
    if version not in (2, 3):
        raise ValueError(f"GGUF version {version} is not supported (2 and 3 are)")
    tensor_count = cur.count("tensor", 24)
    metadata_count = cur.count("metadata", 12)
    metadata: dict[str, Any] = {}
    for _ in range(metadata_count):
        key = cur.string()
        metadata[key] = cur.value(int(cur.take("<I")), key in string_arrays)
    raw = []
    for _ in range(tensor_count):
        name = cur.string()
        dims = int(cur.take("<I"))
        if dims > 8:
            raise ValueError(f"tensor {name} claims {dims} dimensions")
        shape = tuple(int(cur.take("<Q")) for _ in range(dims))[::-1]
        raw.append((name, shape, int(cur.take("<I")), int(cur.take("<Q"))))
    alignment = int(metadata.get("general.alignment", 32)) or 32
    start = (cur.pos + alignment - 1) // alignment * alignment
    tensors = []
    for name, shape, ggml_type, offset in raw:
        nbytes = _nbytes(ggml_type, shape, name)
        end = start + offset + nbytes
        if end > cur.size:
            raise ValueError(
                f"it is truncated: tensor {name} ends at byte {end}, the file has {cur.size}"
            )
        tensors.append(TensorEntry(name, shape, ggml_type, start + offset, nbytes))
    return GgufHeaderInfo(version, metadata, tuple(tensors))
