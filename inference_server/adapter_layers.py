"""Applying adapter layers to a directory: traversal-proof, bounded extraction.

A layer is either one file (an oras layer titled with its path) or a tarball: an oras directory
layer, or a container-image layer, of which the `data/` tree is kept and whose whiteouts
(`.wh.NAME`, `.wh..wh..opq`) remove what earlier layers wrote.
Every member name goes through `safe_relpath` before anything is written; nothing is written
through a symlink or over a directory; a gzip layer is inflated once within the pull's size,
ratio and time limits (`Bounds`). Failures are `FetchError`, with a message for the user.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO, Any

from kaito_egress.limits import Budget, ContentError, Deadline, TransferLimits, inflate_file

__all__ = ["Bounds", "FetchError", "Layer", "extract", "is_tarball", "safe_relpath",
           "write_file"]

UNPACK = "io.deis.oras.content.unpack"
MAX_MEMBERS = 10_000


class FetchError(Exception):
    """A failed pull, with a message meant for the user (the pod's termination message)."""


def safe_relpath(name: str) -> PurePosixPath:
    """A member/title path that can only land inside the output: refuse `/x`, `..`, empty."""
    if name.startswith("/") or "\\" in name or "\x00" in name:
        raise FetchError(f"refusing unsafe path in layer: {name!r}")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise FetchError(f"refusing unsafe path in layer: {name!r}")
    return PurePosixPath(*parts)


class Layer:
    """A downloaded layer blob and, on demand, its decompressed tar stream (inflated once,
    within the adapter's size, ratio and time limits)."""

    def __init__(self, raw: IO[bytes], bounds: Bounds, what: str) -> None:
        self.raw, self.bounds, self.what = raw, bounds, what
        self._tar: IO[bytes] | None = None

    def tar_data(self) -> IO[bytes]:
        if self._tar is not None:
            return self._tar
        self.raw.seek(0)
        magic = self.raw.read(6)
        if magic[:4] == b"\x28\xb5\x2f\xfd":
            raise FetchError("zstd-compressed layers are not supported; push gzip layers")
        if magic[:3] == b"BZh" or magic == b"\xfd7zXZ\x00":
            raise FetchError(f"{self.what}: bzip2/xz layers are not supported; push gzip layers")
        if magic[:2] == b"\x1f\x8b":
            inflated = tempfile.TemporaryFile()
            try:
                inflate_file(self.raw, inflated, limits=self.bounds.limits, what=self.what,
                             deadline=self.bounds.deadline, budget=self.bounds.inflated)
            except ContentError as err:
                inflated.close()
                raise FetchError(f"corrupt layer archive: {err}") from err
            except BaseException:
                inflated.close()
                raise
            self._tar = inflated
        else:
            self._tar = self.raw
        return self._tar

    def close(self) -> None:
        if self._tar is not None and self._tar is not self.raw:
            self._tar.close()


@dataclasses.dataclass
class Bounds:
    """The limits of one adapter pull and what it has used of them."""

    limits: TransferLimits
    deadline: Deadline
    blobs: Budget
    inflated: Budget
    unpacked: Budget


@contextlib.contextmanager
def open_tar(layer: Layer) -> Iterator[tuple[tarfile.TarFile, list[tarfile.TarInfo]]]:
    """The archive and its members, every name checked by `safe_relpath` before any write."""
    data = layer.tar_data()
    data.seek(0)
    try:
        with tarfile.open(fileobj=data, mode="r:") as tar:
            members: list[tarfile.TarInfo] = []
            for info in tar:
                if len(members) >= MAX_MEMBERS:
                    raise FetchError(f"{layer.what} holds more than {MAX_MEMBERS} entries")
                safe_relpath(info.name)
                members.append(info)
            yield tar, members
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise FetchError(f"corrupt layer archive: {err}") from err


def is_tarball(layer: dict[str, Any], title: str, blob: Layer) -> bool:
    """Is this titled layer a directory tarball (to extract) rather than one file?"""
    notes = layer.get("annotations") or {}
    if str(notes.get(UNPACK, "")).lower() == "true" or title.endswith((".tar.gz", ".tgz")):
        return True
    # oras-py marks a pushed directory only by the media type; its tarball holds `<title>/...`.
    blob.raw.seek(0)
    if not str(layer.get("mediaType", "")).endswith("tar+gzip") or \
            blob.raw.read(2) != b"\x1f\x8b":
        return False
    try:
        with open_tar(blob) as (_, members):
            return bool(members) and all(
                safe_relpath(m.name).parts[0] == title for m in members)
    except FetchError:
        return False


def write_file(root: Path, rel: PurePosixPath, data: IO[bytes], budget: Budget) -> None:
    """Write `data` to `root/rel`, never through a symlink or over a directory."""
    target = root.joinpath(*rel.parts)
    for parent in list(target.parents)[: len(rel.parts) - 1]:
        if parent.is_symlink() or (parent.exists() and not parent.is_dir()):
            raise FetchError(f"refusing to write {rel} through {parent.relative_to(root)}")
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() or target.is_dir():
        raise FetchError(f"refusing to overwrite {rel} with a file")
    with target.open("wb") as out:
        for piece in iter(lambda: data.read(1 << 20), b""):
            budget.take(len(piece))
            out.write(piece)


def remove_path(target: Path) -> None:
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)
    elif target.exists() or target.is_symlink():
        target.unlink()


def extract(blob: Layer, root: Path, *, image_layer: bool, budget: Budget) -> None:
    """Applies a tar layer: image layers keep `data/**` (minus whiteouts); directory tarballs
    keep everything, minus one shared top-level directory (`oras push ref dir/` adds it).
    Links, devices and fifos are skipped: an adapter is plain files, and links are how
    archives escape their directory."""
    with open_tar(blob) as (tar, members):
        entries = [(safe_relpath(info.name), info) for info in members]
        if image_layer:
            entries = [(PurePosixPath(*p.parts[1:]), i) for p, i in entries
                       if p.parts[0] == "data" and len(p.parts) > 1]
        elif len({p.parts[0] for p, _ in entries}) == 1 and any(len(p.parts) > 1
                                                                for p, _ in entries):
            entries = [(PurePosixPath(*p.parts[1:]), i) for p, i in entries if len(p.parts) > 1]
        for rel, info in entries:
            folder = root.joinpath(*rel.parent.parts)
            if image_layer and rel.name == ".wh..wh..opq":
                for child in list(folder.iterdir()) if folder.is_dir() else []:
                    remove_path(child)
            elif image_layer and rel.name.startswith(".wh."):
                if rel.name[4:] not in ("", ".", ".."):
                    remove_path(folder / rel.name[4:])
            elif info.isdir():
                root.joinpath(*rel.parts).mkdir(parents=True, exist_ok=True)
            elif info.isfile() and (data := tar.extractfile(info)) is not None:
                write_file(root, rel, data, budget)
