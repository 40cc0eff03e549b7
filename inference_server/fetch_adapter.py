"""Init-container entry point: pull one LoRA adapter from a registry into a local directory.

`python -m inference_server.fetch_adapter --image=REF --output=/mnt/adapter/NAME
[--docker-config-dir=/root/.docker-secrets]`.  REF is either an OCI artifact pushed by oras
(titled layers: the files themselves, or a directory tarball) or a container image whose
filesystem holds the adapter under `/data` (KAITO's older convention).  A small hand-written
distribution client is used instead of `oras`: we need bearer + basic auth from mounted pull
secrets, bounded retries, digest checks and traversal-proof layer extraction; oras-py gives only
part of that and would pull `requests` into the inference image.

Failure is one line on stderr and in `/dev/termination-log` (what `kubectl describe pod`
shows), exit code 1; the output directory is replaced atomically, so a restarted init container
never sees a half-written adapter.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import gzip
import hashlib
import json
import os
import re
import shutil
import sys
import tarfile
import tempfile
import time
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO, Any

import httpx

__all__ = ["FetchError", "fetch", "load_auths", "main", "parse_reference", "safe_relpath"]

TITLE = "org.opencontainers.image.title"
UNPACK = "io.deis.oras.content.unpack"
INDEX_TYPES = {"application/vnd.oci.image.index.v1+json",
               "application/vnd.docker.distribution.manifest.list.v2+json"}
ACCEPT = ", ".join(["application/vnd.oci.image.manifest.v1+json",
                    "application/vnd.docker.distribution.manifest.v2+json",
                    "application/vnd.oci.artifact.manifest.v1+json", *sorted(INDEX_TYPES)])
RETRY_STATUSES = {429, 500, 502, 503, 504}
MAX_MANIFEST = 4 << 20
DOCKER_HUB = "registry-1.docker.io"
DEFAULT_TERMINATION_LOG = "/dev/termination-log"


class FetchError(Exception):
    """A failure with a message meant for the user (pod termination message)."""


def parse_reference(ref: str) -> tuple[str, str, str]:
    """`[host[:port]/]repo[:tag][@digest]` → (host, repo, tag-or-digest), docker's defaults."""
    rest, _, digest = ref.partition("@")
    first, sep, remainder = rest.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        host, path = first, remainder
    else:
        host, path = DOCKER_HUB, rest if "/" in rest else f"library/{rest}"
    name, colon, tag = path.rpartition(":")
    if not colon or "/" in tag:
        name, tag = path, "latest"
    if not name or not all(name.split("/")):
        raise FetchError(f"invalid image reference {ref!r}")
    return host, name, digest or tag


def _hostname(host: str) -> str:
    if host.startswith("["):
        return host[1 : host.find("]")]
    return host.rsplit(":", 1)[0]


def is_loopback(host: str) -> bool:
    """Docker talks plain http to loopback registries without being told; so do we."""
    name = _hostname(host)
    return name in ("localhost", "::1") or name.startswith("127.")


def load_auths(config_dir: str | None) -> dict[str, tuple[str, str]]:
    """Registry host → (user, password) from every `.dockerconfigjson`/`config.json` found in
    ``config_dir`` or one level below it (one mounted secret per subdirectory)."""
    found: dict[str, tuple[str, str]] = {}
    if not config_dir:
        return found
    root = Path(config_dir)
    for name in (".dockerconfigjson", "config.json"):
        for path in sorted([*root.glob(name), *root.glob(f"*/{name}")]):
            try:
                auths = json.loads(path.read_text()).get("auths", {})
                for key, entry in auths.items():
                    host = key.split("://", 1)[-1].split("/", 1)[0]
                    host = DOCKER_HUB if host in ("index.docker.io", "docker.io") else host
                    user, password = entry.get("username"), entry.get("password")
                    if entry.get("auth"):
                        decoded = base64.b64decode(entry["auth"]).decode(errors="replace")
                        user, _, password = decoded.partition(":")
                    if user:
                        found.setdefault(host, (user, password or ""))
            except (OSError, ValueError, AttributeError) as err:
                raise FetchError(f"unreadable docker config {path}: {err}") from err
    return found


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="..",service="..",scope=".."` → ("bearer", {...}); quoted values may
    hold commas (`repository:a:pull,push`), hence a regex and not a split."""
    scheme, _, params = header.strip().partition(" ")
    fields = re.findall(r'(\w+)\s*=\s*(?:"([^"]*)"|([^,\s]*))', params)
    return scheme.lower(), {k.lower(): quoted or bare for k, quoted, bare in fields}


class RegistryClient:
    """Just enough of the distribution spec to pull: auth challenges, retries, digests."""

    def __init__(self, host: str, repo: str, creds: tuple[str, str] | None, *, insecure: bool,
                 retries: int = 5, backoff: float = 0.5,
                 transport: httpx.BaseTransport | None = None) -> None:
        scheme = "http" if insecure or is_loopback(host) else "https"
        self.base = f"{scheme}://{host}/v2/{repo}"
        self.host, self.repo, self.creds = host, repo, creds
        self.retries, self.backoff = retries, backoff
        self.auth_header: str | None = None
        self.http = httpx.Client(timeout=httpx.Timeout(30.0, connect=10.0),
                                 follow_redirects=True, transport=transport)

    def close(self) -> None:
        self.http.close()

    def _send(self, url: str, headers: dict[str, str], stream: bool) -> httpx.Response:
        """One request with bounded retries on 429/5xx and connection errors."""
        for attempt in range(self.retries + 1):
            delay = self.backoff * 2**attempt
            try:
                req = self.http.build_request("GET", url, headers=headers)
                resp = self.http.send(req, stream=stream)
            except httpx.TransportError as err:
                if attempt == self.retries:
                    raise FetchError(f"cannot reach registry {self.host}: {err}") from err
            else:
                if resp.status_code not in RETRY_STATUSES or attempt == self.retries:
                    return resp
                retry_after = resp.headers.get("Retry-After", "")
                delay = min(float(retry_after), 30.0) if retry_after.isdigit() else delay
                resp.close()
            time.sleep(min(delay, 30.0))
        raise AssertionError("unreachable")

    def get(self, path: str, accept: str = "*/*", stream: bool = False) -> httpx.Response:
        """GET with the auth dance: 401 → answer the challenge once → retry."""
        url, headers = f"{self.base}/{path}", {"Accept": accept}
        if self.auth_header:
            headers["Authorization"] = self.auth_header
        resp = self._send(url, headers, stream)
        if resp.status_code == 401 and self.auth_header is None:
            resp.close()
            self.auth_header = self._authorize(resp.headers.get("WWW-Authenticate", ""))
            headers["Authorization"] = self.auth_header
            resp = self._send(url, headers, stream)
        if resp.status_code in (401, 403):
            resp.close()
            hint = "were rejected" if self.creds else "are needed (no pull secret matches it)"
            raise FetchError(f"registry {self.host} denied {self.repo}: credentials {hint}")
        return resp

    def _authorize(self, challenge: str) -> str:
        scheme, fields = _parse_challenge(challenge)
        basic = None
        if self.creds:
            basic = "Basic " + base64.b64encode(":".join(self.creds).encode()).decode()
        if scheme == "basic" or not fields.get("realm"):
            if basic is None:
                raise FetchError(f"registry {self.host} needs credentials and no pull secret "
                                 f"matches it")
            return basic
        params = {k: v for k, v in fields.items() if k in ("service", "scope")}
        params.setdefault("scope", f"repository:{self.repo}:pull")
        headers = {"Authorization": basic} if basic else {}
        resp = self._send(str(httpx.URL(fields["realm"], params=params)), headers, False)
        if resp.status_code != 200:
            hint = "rejected the credentials" if basic else "refused anonymous access"
            raise FetchError(f"token service of {self.host} {hint} (HTTP {resp.status_code})")
        body = resp.json()
        token = body.get("token") or body.get("access_token")
        if not token:
            raise FetchError(f"token service of {self.host} returned no token")
        return f"Bearer {token}"

    def manifest(self, reference: str) -> tuple[dict[str, Any], str]:
        """The image manifest for ``reference``; an index resolves to linux/amd64 (or first)."""
        resp = self.get(f"manifests/{reference}", ACCEPT)
        if resp.status_code == 404:
            raise FetchError(f"{self.host}/{self.repo}:{reference} not found "
                             f"(no such repository, tag or digest)")
        if resp.status_code != 200:
            raise FetchError(f"manifest {reference}: HTTP {resp.status_code} {resp.text[:200]}")
        body = resp.content
        if len(body) > MAX_MANIFEST:
            raise FetchError(f"manifest {reference} is too large")
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        if ":" in reference and reference != digest:
            raise FetchError(f"manifest digest mismatch: wanted {reference}, got {digest}")
        doc = json.loads(body)
        if doc.get("mediaType") in INDEX_TYPES or ("manifests" in doc and "layers" not in doc):
            entries = doc.get("manifests") or []
            if not entries:
                raise FetchError(f"image index {reference} lists no manifests")
            wanted = [m for m in entries if (m.get("platform") or {}).get("os") == "linux"
                      and m["platform"].get("architecture") == "amd64"]
            return self.manifest((wanted or entries)[0]["digest"])
        return doc, digest

    def blob(self, desc: dict[str, Any], into: IO[bytes]) -> None:
        """Streams a blob to ``into`` and checks its size and digest before anyone reads it."""
        algo, _, want = str(desc.get("digest", "")).partition(":")
        if algo not in ("sha256", "sha512") or not want:
            raise FetchError(f"unsupported blob digest {desc.get('digest')!r}")
        for attempt in range(self.retries + 1):  # a broken stream restarts the blob
            into.seek(0)
            into.truncate()
            hasher, size = hashlib.new(algo), 0
            resp = self.get(f"blobs/{desc['digest']}", stream=True)
            try:
                if resp.status_code != 200:
                    raise FetchError(f"blob {desc['digest']}: HTTP {resp.status_code}")
                for chunk in resp.iter_bytes(1 << 20):
                    hasher.update(chunk)
                    size += len(chunk)
                    into.write(chunk)
                break
            except httpx.HTTPError as err:
                if attempt == self.retries:
                    raise FetchError(f"blob {desc['digest']}: download failed: {err}") from err
            finally:
                resp.close()
            time.sleep(min(self.backoff * 2**attempt, 30.0))
        if hasher.hexdigest() != want or ("size" in desc and size != desc["size"]):
            raise FetchError(f"blob {desc['digest']} failed verification (digest/size mismatch)")


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
