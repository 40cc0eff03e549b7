"""The OCI distribution client behind `inference_server.fetch_adapter`.

Split out of fetch_adapter.py so that module stays about files (layer application, extraction,
the CLI) and this one about the registry: reference parsing, pull secrets from mounted docker
configs, the 401 → bearer/basic challenge flow, bounded retries on 429/5xx, and manifest/blob
fetching with digest and size checks.  Every connection and redirect goes through the egress
guard (`kaito_egress`), and every body is read within the pull's deadline and byte caps: a
manifest at most 4 MiB, a blob never more than its descriptor's size.  It is hand-written
instead of using `oras`: oras-py gives only part of that and would pull `requests` into the
inference image.  Every failure is a :class:`FetchError` whose message is meant for the pod's
termination message.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import time
from dataclasses import replace
from pathlib import Path
from typing import IO, Any

import httpx

from kaito_egress.guard import EgressError, EgressGuard
from kaito_egress.http import guarded_client, open_stream, raw_chunks
from kaito_egress.limits import (
    Budget,
    Deadline,
    GiB,
    TransferLimits,
    copy_bounded,
    human,
)
from kaito_egress.policy import is_literal_loopback

__all__ = ["FetchError", "RegistryClient", "is_loopback", "load_auths", "parse_reference"]

INDEX_TYPES = {"application/vnd.oci.image.index.v1+json",
               "application/vnd.docker.distribution.manifest.list.v2+json"}
ACCEPT = ", ".join(["application/vnd.oci.image.manifest.v1+json",
                    "application/vnd.docker.distribution.manifest.v2+json",
                    "application/vnd.oci.artifact.manifest.v1+json", *sorted(INDEX_TYPES)])
RETRY_STATUSES = {429, 500, 502, 503, 504}
MAX_MANIFEST = 4 << 20
MAX_TOKEN = 1 << 20
#: An adapter: 2 GiB per blob and in total, 10 minutes for the whole pull.
DEFAULT_LIMITS = TransferLimits(deadline_s=600.0, max_file_bytes=2 * GiB,
                                max_total_bytes=2 * GiB)
DOCKER_HUB = "registry-1.docker.io"


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


def is_loopback(host: str) -> bool:
    """True only for a literal loopback registry address (`127.0.0.1:5000`, `[::1]:5000`):
    the one case where plain http is used without `--insecure`, as docker does."""
    return is_literal_loopback(host)


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


def _descriptor(desc: Any, what: str) -> tuple[str, str, str, int]:
    """(digest, algorithm, hex) and size of a descriptor, checked for shape."""
    if not isinstance(desc, dict):
        raise FetchError(f"{what}: a descriptor is not an object")
    digest, size = desc.get("digest"), desc.get("size")
    algo, _, want = str(digest).partition(":")
    if not isinstance(digest, str) or algo not in ("sha256", "sha512") or not want:
        raise FetchError(f"unsupported blob digest {digest!r}")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise FetchError(f"blob {digest}: the descriptor has no valid size ({size!r})")
    return digest, algo, want, size


class _HashingSink:
    """Writes through to a file while hashing what is written."""

    def __init__(self, into: IO[bytes], algo: str) -> None:
        self.into, self.hasher = into, hashlib.new(algo)

    def write(self, data: bytes) -> int:
        self.hasher.update(data)
        return self.into.write(data)


class RegistryClient:
    """Just enough of the distribution spec to pull: auth challenges, retries, digests, all
    through the egress guard and within the adapter's size and time limits."""

    def __init__(self, host: str, repo: str, creds: tuple[str, str] | None, *, insecure: bool,
                 retries: int = 5, backoff: float = 0.5,
                 transport: httpx.BaseTransport | None = None,
                 guard: EgressGuard | None = None,
                 limits: TransferLimits = DEFAULT_LIMITS,
                 deadline: Deadline | None = None) -> None:
        self.guard = guard or EgressGuard.from_env()
        plain = insecure or is_loopback(host)
        self.base = f"{'http' if plain else 'https'}://{host}/v2/{repo}"
        self.host, self.repo, self.creds = host, repo, creds
        self.retries, self.backoff, self.limits = retries, backoff, limits
        self.deadline = deadline or Deadline(limits.deadline_s, f"pulling from {host}")
        self.credentials_over_http = is_loopback(host) and self.guard.policy.allow_loopback
        if plain and creds and not self.credentials_over_http:
            raise FetchError(f"refusing to send the pull secret's credentials over plain http "
                             f"to {host}")
        self.auth_header: str | None = None
        self.http = guarded_client(self.guard, transport=transport)

    def close(self) -> None:
        self.http.close()

    def _send(self, url: str, headers: dict[str, str]) -> httpx.Response:
        """One streamed GET (redirects checked by the guard) with bounded retries on
        429/5xx and connection errors."""
        for attempt in range(self.retries + 1):
            delay = self.backoff * 2**attempt
            try:
                resp = open_stream(self.http, self.guard, url, headers=headers,
                                   deadline=self.deadline,
                                   read_timeout=self.limits.rate_window_s,
                                   connect_timeout=self.limits.connect_timeout_s,
                                   credentials_over_http=self.credentials_over_http)
            except httpx.TransportError as err:
                if attempt == self.retries:
                    raise FetchError(f"cannot reach registry {self.host}: {err}") from err
            except EgressError as err:
                raise FetchError(f"registry {self.host}: {err}") from err
            else:
                if resp.status_code not in RETRY_STATUSES or attempt == self.retries:
                    return resp
                retry_after = resp.headers.get("Retry-After", "")
                delay = min(float(retry_after), 30.0) if retry_after.isdigit() else delay
                resp.close()
            time.sleep(min(delay, 30.0, self.deadline.remaining()))
        raise AssertionError("unreachable")

    def get(self, path: str, accept: str = "*/*") -> httpx.Response:
        """Streamed GET with the auth dance: 401 → answer the challenge once → retry."""
        url = f"{self.base}/{path}"
        headers = {"Accept": accept, "Accept-Encoding": "identity"}
        if self.auth_header:
            headers["Authorization"] = self.auth_header
        resp = self._send(url, headers)
        if resp.status_code == 401 and self.auth_header is None:
            challenge = resp.headers.get("WWW-Authenticate", "")
            resp.close()
            self.auth_header = self._authorize(challenge)
            headers["Authorization"] = self.auth_header
            resp = self._send(url, headers)
        if resp.status_code in (401, 403):
            resp.close()
            hint = "were rejected" if self.creds else "are needed (no pull secret matches it)"
            raise FetchError(f"registry {self.host} denied {self.repo}: credentials {hint}")
        return resp

    def _read_small(self, resp: httpx.Response, cap: int, what: str) -> bytes:
        """The whole body of a small document (manifest, token), at most `cap` bytes,
        checked against Content-Length before and while reading."""
        out = io.BytesIO()
        try:
            declared = _content_length(resp, cap, what)
            _identity_only(resp, what)
            copy_bounded(raw_chunks(resp), out, what=what, deadline=self.deadline,
                         limits=replace(self.limits, max_file_bytes=cap),
                         budget=Budget(cap, what), declared=declared)
        except EgressError as err:
            raise FetchError(str(err)) from err
        except httpx.HTTPError as err:
            raise FetchError(f"{what}: download failed: {err}") from err
        finally:
            resp.close()
        return out.getvalue()

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
        try:
            realm = str(httpx.URL(fields["realm"], params=params))
        except (httpx.InvalidURL, ValueError, TypeError) as err:
            raise FetchError(f"registry {self.host} sent an unusable token realm "
                             f"{fields['realm'][:100]!r}") from err
        resp = self._send(realm, headers)
        if resp.status_code != 200:
            resp.close()
            hint = "rejected the credentials" if basic else "refused anonymous access"
            raise FetchError(f"token service of {self.host} {hint} (HTTP {resp.status_code})")
        body = self._read_small(resp, MAX_TOKEN, f"token from {self.host}")
        try:
            doc = json.loads(body)
        except ValueError as err:
            raise FetchError(f"token service of {self.host} returned invalid JSON") from err
        token = doc.get("token") or doc.get("access_token") if isinstance(doc, dict) else None
        if not token or not isinstance(token, str):
            raise FetchError(f"token service of {self.host} returned no token")
        return f"Bearer {token}"

    def manifest(self, reference: str, depth: int = 0) -> tuple[dict[str, Any], str]:
        """The image manifest for ``reference``; an index resolves to linux/amd64 (or first)."""
        resp = self.get(f"manifests/{reference}", ACCEPT)
        if resp.status_code == 404:
            resp.close()
            raise FetchError(f"{self.host}/{self.repo}:{reference} not found "
                             f"(no such repository, tag or digest)")
        if resp.status_code != 200:
            resp.close()
            raise FetchError(f"manifest {reference}: HTTP {resp.status_code}")
        body = self._read_small(resp, MAX_MANIFEST, f"manifest {reference}")
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        if ":" in reference and reference != digest:
            raise FetchError(f"manifest digest mismatch: wanted {reference}, got {digest}")
        try:
            doc = json.loads(body)
        except ValueError as err:
            raise FetchError(f"manifest {reference} is not valid JSON") from err
        if not isinstance(doc, dict):
            raise FetchError(f"manifest {reference} is not a JSON object")
        if doc.get("mediaType") in INDEX_TYPES or ("manifests" in doc and "layers" not in doc):
            entries = doc.get("manifests")
            if not entries or not isinstance(entries, list):
                raise FetchError(f"image index {reference} lists no manifests")
            if depth >= 1:
                raise FetchError(f"image index {reference} points at another index")
            wanted = [m for m in entries if isinstance(m, dict)
                      and isinstance(m.get("platform"), dict)
                      and m["platform"].get("os") == "linux"
                      and m["platform"].get("architecture") == "amd64"]
            chosen = (wanted or entries)[0]
            child, *_ = _descriptor(chosen, f"image index {reference}")
            return self.manifest(child, depth + 1)
        return doc, digest

    def blob(self, desc: dict[str, Any], into: IO[bytes], budget: Budget | None = None) -> int:
        """Streams a blob to ``into``, never reading more than its descriptor's size, and
        checks size and digest before anyone reads it; returns the size."""
        digest, algo, want, size = _descriptor(desc, "layer")
        if size > self.limits.max_file_bytes:
            raise FetchError(f"blob {digest} declares {size} bytes, more than the per-blob cap "
                             f"of {human(self.limits.max_file_bytes)}")
        budget = budget or Budget(self.limits.max_total_bytes, "the adapter's blobs")
        what = f"blob {digest}"
        for attempt in range(self.retries + 1):  # a broken stream restarts the blob
            into.seek(0)
            into.truncate()
            before, sink = budget.used, _HashingSink(into, algo)
            resp = self.get(f"blobs/{digest}")
            try:
                if resp.status_code != 200:
                    raise FetchError(f"{what}: HTTP {resp.status_code}")
                declared = _content_length(resp, self.limits.max_file_bytes, what)
                if declared is not None and declared != size:
                    raise FetchError(f"{what}: the registry declares {declared} bytes, the "
                                     f"descriptor {size}")
                _identity_only(resp, what)
                copy_bounded(raw_chunks(resp), sink, limits=self.limits,  # type: ignore[arg-type]
                             what=what, deadline=self.deadline, budget=budget, declared=size)
                break
            except EgressError as err:
                raise FetchError(str(err)) from err
            except httpx.HTTPError as err:
                budget.used = before
                if attempt == self.retries:
                    raise FetchError(f"{what}: download failed: {err}") from err
            finally:
                resp.close()
            time.sleep(min(self.backoff * 2**attempt, 30.0, self.deadline.remaining()))
        if sink.hasher.hexdigest() != want:
            raise FetchError(f"{what} failed verification (digest/size mismatch)")
        return size


def _content_length(resp: httpx.Response, cap: int, what: str) -> int | None:
    value = resp.headers.get("content-length")
    if value is None:
        return None
    if not value.strip().isdigit():
        raise FetchError(f"{what}: malformed Content-Length {value[:40]!r}")
    if int(value) > cap:
        raise FetchError(f"{what}: the registry declares {int(value)} bytes, more than the cap "
                         f"of {human(cap)}")
    return int(value)


def _identity_only(resp: httpx.Response, what: str) -> None:
    encoding = resp.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise FetchError(f"{what}: refusing Content-Encoding {encoding!r} (digests cover the "
                         f"raw bytes)")
