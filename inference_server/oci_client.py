"""The OCI distribution client behind `inference_server.fetch_adapter`.

Split out of fetch_adapter.py so that module stays about files (layer application, extraction,
the CLI) and this one about the registry: reference parsing, pull secrets from mounted docker
configs, the 401 → bearer/basic challenge flow, bounded retries on 429/5xx, and manifest/blob
fetching with digest and size checks.  It is hand-written instead of using `oras`: oras-py gives
only part of that and would pull `requests` into the inference image.  Every failure is a
:class:`FetchError` whose message is meant for the pod's termination message.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from pathlib import Path
from typing import IO, Any

import httpx

__all__ = ["FetchError", "RegistryClient", "is_loopback", "load_auths", "parse_reference"]

INDEX_TYPES = {"application/vnd.oci.image.index.v1+json",
               "application/vnd.docker.distribution.manifest.list.v2+json"}
ACCEPT = ", ".join(["application/vnd.oci.image.manifest.v1+json",
                    "application/vnd.docker.distribution.manifest.v2+json",
                    "application/vnd.oci.artifact.manifest.v1+json", *sorted(INDEX_TYPES)])
RETRY_STATUSES = {429, 500, 502, 503, 504}
MAX_MANIFEST = 4 << 20
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
