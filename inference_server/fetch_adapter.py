"""Init-container entry point: pull one LoRA adapter from a registry into a local directory.

`python -m inference_server.fetch_adapter --image=REF --output=/mnt/adapter/NAME
[--docker-config-dir=/root/.docker-secrets]`.  REF is either an OCI artifact pushed by oras
(titled layers: the files themselves, or a directory tarball) or a container image whose
filesystem holds the adapter under `/data` (KAITO's older convention).  The registry side (auth,
retries, manifests, digest-checked blobs) lives in `inference_server.oci_client`; this module
applies the layers with traversal-proof extraction and owns the CLI.  The client's names
(`FetchError`, `parse_reference`, `load_auths`, ...) are re-exported here for existing callers.

Failure is one line on stderr and in `/dev/termination-log` (what `kubectl describe pod`
shows), exit code 1; the output directory is replaced atomically, so a restarted init container
never sees a half-written adapter.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import os
import shutil
import sys
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO, Any

import httpx

from inference_server.oci_client import (  # noqa: F401 - re-exported: callers import them here
    ACCEPT,
    DOCKER_HUB,
    INDEX_TYPES,
    MAX_MANIFEST,
    RETRY_STATUSES,
    FetchError,
    RegistryClient,
    is_loopback,
    load_auths,
    parse_reference,
)

__all__ = ["FetchError", "fetch", "load_auths", "main", "parse_reference", "safe_relpath"]

TITLE = "org.opencontainers.image.title"
UNPACK = "io.deis.oras.content.unpack"
DEFAULT_TERMINATION_LOG = "/dev/termination-log"


def safe_relpath(name: str) -> PurePosixPath:
    """A member/title path that can only land inside the output: refuse `/x`, `..`, empty."""
    if name.startswith("/") or "\\" in name or "\x00" in name:
        raise FetchError(f"refusing unsafe path in layer: {name!r}")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise FetchError(f"refusing unsafe path in layer: {name!r}")
    return PurePosixPath(*parts)


@contextlib.contextmanager
def _open_tar(blob: IO[bytes]) -> Iterator[tuple[tarfile.TarFile, list[tarfile.TarInfo]]]:
    """The archive and its members, every name checked by `safe_relpath` before any write."""
    blob.seek(0)
    if blob.read(4) == b"\x28\xb5\x2f\xfd":
        raise FetchError("zstd-compressed layers are not supported; push gzip layers")
    blob.seek(0)
    try:
        with tarfile.open(fileobj=blob, mode="r:*") as tar:
            members = tar.getmembers()
            for info in members:
                safe_relpath(info.name)
            yield tar, members
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise FetchError(f"corrupt layer archive: {err}") from err


def _is_tarball(layer: dict[str, Any], title: str, blob: IO[bytes]) -> bool:
    notes = layer.get("annotations") or {}
    if str(notes.get(UNPACK, "")).lower() == "true" or title.endswith((".tar.gz", ".tgz")):
        return True
    # oras-py marks a pushed directory only by the media type; its tarball holds `<title>/...`.
    blob.seek(0)
    if not str(layer.get("mediaType", "")).endswith("tar+gzip") or blob.read(2) != b"\x1f\x8b":
        return False
    try:
        with _open_tar(blob) as (_, members):
            return bool(members) and all(
                safe_relpath(m.name).parts[0] == title for m in members)
    except FetchError:
        return False


def _write(root: Path, rel: PurePosixPath, data: IO[bytes]) -> None:
    target = root.joinpath(*rel.parts)
    for parent in list(target.parents)[: len(rel.parts) - 1]:
        if parent.is_symlink() or (parent.exists() and not parent.is_dir()):
            raise FetchError(f"refusing to write {rel} through {parent.relative_to(root)}")
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() or target.is_dir():
        raise FetchError(f"refusing to overwrite {rel} with a file")
    with target.open("wb") as out:
        shutil.copyfileobj(data, out)


def _remove(target: Path) -> None:
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)
    elif target.exists() or target.is_symlink():
        target.unlink()


def _extract(blob: IO[bytes], root: Path, *, image_layer: bool) -> None:
    """Applies a tar layer: image layers keep `data/**` (minus whiteouts); directory tarballs
    keep everything, minus one shared top-level directory (`oras push ref dir/` adds it).
    Links, devices and fifos are skipped: an adapter is plain files, and links are how
    archives escape their directory."""
    with _open_tar(blob) as (tar, members):
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
                    _remove(child)
            elif image_layer and rel.name.startswith(".wh."):
                if rel.name[4:] not in ("", ".", ".."):
                    _remove(folder / rel.name[4:])
            elif info.isdir():
                root.joinpath(*rel.parts).mkdir(parents=True, exist_ok=True)
            elif info.isfile():
                _write(root, rel, tar.extractfile(info))  # type: ignore[arg-type]


def fetch(image: str, output: Path, auths: dict[str, tuple[str, str]], *, insecure: bool = False,
          retries: int = 5, backoff: float = 0.5,
          transport: httpx.BaseTransport | None = None) -> tuple[str, list[str]]:
    """Pulls ``image`` into ``output`` (replaced atomically); returns (digest, file names)."""
    host, repo, reference = parse_reference(image)
    client = RegistryClient(host, repo, auths.get(host), insecure=insecure, retries=retries,
                            backoff=backoff, transport=transport)
    output.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        manifest, digest = client.manifest(reference)
        layers = manifest.get("layers") or manifest.get("blobs") or []
        for layer in layers:
            title = str((layer.get("annotations") or {}).get(TITLE, ""))
            with tempfile.TemporaryFile() as blob:
                client.blob(layer, blob)
                if title and not _is_tarball(layer, title, blob):
                    blob.seek(0)
                    _write(stage, safe_relpath(title), blob)
                else:
                    _extract(blob, stage, image_layer=not title)
        if not (stage / "adapter_config.json").is_file():
            found = sorted(str(p.relative_to(stage)) for p in stage.rglob("*") if p.is_file())
            listing = ", ".join(found[:10]) or "no files"
            raise FetchError(f"no adapter_config.json in the adapter (found: {listing}); "
                             f"push the adapter directory's files")
        if output.exists():
            shutil.rmtree(output)
        stage.rename(output)
        return digest, sorted(str(p.relative_to(output)) for p in output.rglob("*"))
    finally:
        client.close()
        shutil.rmtree(stage, ignore_errors=True)


def _report_failure(message: str, termination_log: str) -> None:
    message = " ".join(message.split())  # one line: that is what the pod status shows
    print(message, file=sys.stderr)
    path = Path(termination_log)
    if termination_log != DEFAULT_TERMINATION_LOG or path.exists():
        try:
            path.write_text(message + "\n")
        except OSError:
            pass


def build_parser() -> argparse.ArgumentParser:
    """The flags the workspace controller's init containers pass."""
    parser = argparse.ArgumentParser(prog="fetch_adapter", description=__doc__.split("\n")[0])
    parser.add_argument("--image", required=True, help="adapter reference (artifact or image)")
    parser.add_argument("--output", required=True, help="directory to fill (replaced)")
    parser.add_argument("--docker-config-dir", help="dir of mounted dockerconfigjson secrets")
    parser.add_argument("--insecure", action="store_true", help="plain http to the registry")
    parser.add_argument("--retries", type=int, default=5, help="retries per request")
    parser.add_argument("--termination-log", default=os.environ.get(
        "KAITO_TERMINATION_LOG", DEFAULT_TERMINATION_LOG), help="where the failure line goes")
    return parser


def main(argv: list[str] | None = None) -> int:
    """CLI; returns the exit code (0 ok, 1 any failure)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        if exit_.code in (0, None):
            return 0
        log = os.environ.get("KAITO_TERMINATION_LOG", DEFAULT_TERMINATION_LOG)
        _report_failure("fetch adapter: invalid arguments (see usage above)", log)
        return 1
    try:
        auths = load_auths(args.docker_config_dir)
        digest, files = fetch(args.image, Path(args.output), auths, insecure=args.insecure,
                              retries=args.retries)
    except FetchError as err:
        _report_failure(f"fetch adapter {args.image}: {err}", args.termination_log)
        return 1
    except Exception as err:  # noqa: BLE001 - the pod must say why, whatever broke
        _report_failure(f"fetch adapter {args.image}: unexpected {type(err).__name__}: {err}",
                        args.termination_log)
        return 1
    print(f"fetched {args.image} ({digest}) into {args.output}: {', '.join(files)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
