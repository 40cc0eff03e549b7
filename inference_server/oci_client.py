"""Pulling an adapter from an OCI registry: manifests and digest-checked blobs.

:class:`RegistryClient` answers the registry's 401 challenge once (basic credentials from the
pull secret, or a bearer token from the challenge's token service), resolves an image index to
its linux/amd64 manifest, and streams blobs that must match their descriptor's size and digest.
Requests go through `kaito_workload.oci.RegistrySession`, so through the egress guard, and
every body is read within the pull's deadline and byte caps: a manifest at most 4 MiB, a blob
never more than its descriptor's size.  It is hand-written instead of using `oras`: oras-py
gives only part of that and would pull `requests` into the inference image.  Every failure is a
:class:`~kaito_workload.oci.RegistryError` whose message is meant for the pod's termination
message.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

import httpx

from kaito_egress.guard import EgressError, EgressGuard
from kaito_egress.http import raw_chunks
from kaito_egress.limits import Budget, Deadline, GiB, TransferLimits, copy_bounded, human
from kaito_workload.oci import (
    Credentials,
    RegistryError,
    RegistrySession,
    basic_authorization,
    parse_challenge,
    token_url,
)
from kaito_workload.oci.session import declared_length, require_identity

__all__ = ["DEFAULT_LIMITS", "RegistryClient"]

INDEX_TYPES = {"application/vnd.oci.image.index.v1+json",
               "application/vnd.docker.distribution.manifest.list.v2+json"}
ACCEPT = ", ".join(["application/vnd.oci.image.manifest.v1+json",
                    "application/vnd.docker.distribution.manifest.v2+json",
                    "application/vnd.oci.artifact.manifest.v1+json", *sorted(INDEX_TYPES)])
MAX_MANIFEST = 4 << 20
MAX_TOKEN = 1 << 20
#: An adapter: 2 GiB per blob and in total, 10 minutes for the whole pull.
DEFAULT_LIMITS = TransferLimits(deadline_s=600.0, max_file_bytes=2 * GiB,
                                max_total_bytes=2 * GiB)


def _descriptor(desc: Any, what: str) -> tuple[str, str, str, int]:
    """(digest, algorithm, hex) and size of a descriptor, checked for shape."""
    if not isinstance(desc, dict):
        raise RegistryError(f"{what}: a descriptor is not an object")
    digest, size = desc.get("digest"), desc.get("size")
    algo, _, want = str(digest).partition(":")
    if not isinstance(digest, str) or algo not in ("sha256", "sha512") or not want:
        raise RegistryError(f"unsupported blob digest {digest!r}")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise RegistryError(f"blob {digest}: the descriptor has no valid size ({size!r})")
    return digest, algo, want, size


def _hashed(chunks: Iterable[bytes], update: Callable[[bytes], None]) -> Iterator[bytes]:
    """`chunks`, each passed to `update` (a hasher's) on its way through."""
    for chunk in chunks:
        update(chunk)
        yield chunk


class RegistryClient:
    """Just enough of the distribution spec to pull one repository: auth challenges,
    retries, digests, within the adapter's size and time limits."""

    def __init__(self, host: str, repo: str, creds: Credentials | None, *, insecure: bool,
                 retries: int = 5, backoff: float = 0.5,
                 transport: httpx.BaseTransport | None = None,
                 guard: EgressGuard | None = None,
                 limits: TransferLimits = DEFAULT_LIMITS,
                 deadline: Deadline | None = None) -> None:
        self.session = RegistrySession(
            host, creds, insecure=insecure, limits=limits, secret="pull secret",
            deadline=deadline or Deadline(limits.deadline_s, f"pulling from {host}"),
            retries=retries, backoff=backoff, transport=transport, guard=guard)
        self.host, self.repo, self.creds, self.limits = host, repo, creds, limits
        self.base = f"{self.session.root}{repo}"
        self.auth_header: str | None = None

    def close(self) -> None:
        self.session.close()

    def get(self, path: str, accept: str = "*/*") -> httpx.Response:
        """Streamed GET with the auth dance: 401 → answer the challenge once → retry."""
        url = f"{self.base}/{path}"
        headers = {"Accept": accept, "Accept-Encoding": "identity"}
        if self.auth_header:
            headers["Authorization"] = self.auth_header
        resp = self.session.send(url, headers)
        if resp.status_code == 401 and self.auth_header is None:
            challenge = resp.headers.get("WWW-Authenticate", "")
            resp.close()
            self.auth_header = self._authorize(challenge)
            headers["Authorization"] = self.auth_header
            resp = self.session.send(url, headers)
        if resp.status_code in (401, 403):
            resp.close()
            hint = "were rejected" if self.creds else "are needed (no pull secret matches it)"
            raise RegistryError(f"registry {self.host} denied {self.repo}: credentials {hint}")
        return resp

    def _authorize(self, challenge: str) -> str:
        """The Authorization header that answers `challenge`: basic credentials, or a bearer
        token from the challenge's token service (asked with them when there are any)."""
        scheme, fields = parse_challenge(challenge)
        basic = basic_authorization(self.creds) if self.creds else None
        if scheme == "basic" or not fields.get("realm"):
            if basic is None:
                raise RegistryError(f"registry {self.host} needs credentials and no pull "
                                    f"secret matches it")
            return basic
        params = {k: v for k, v in fields.items() if k in ("service", "scope")}
        params.setdefault("scope", f"repository:{self.repo}:pull")
        realm = token_url(self.host, fields["realm"], params)
        resp = self.session.send(realm, {"Authorization": basic} if basic else {})
        if resp.status_code != 200:
            resp.close()
            hint = "rejected the credentials" if basic else "refused anonymous access"
            raise RegistryError(f"token service of {self.host} {hint} "
                                f"(HTTP {resp.status_code})")
        body = self.session.read_small(resp, MAX_TOKEN, f"token from {self.host}")
        try:
            doc = json.loads(body)
        except ValueError as err:
            raise RegistryError(f"token service of {self.host} returned invalid JSON") from err
        token = doc.get("token") or doc.get("access_token") if isinstance(doc, dict) else None
        if not token or not isinstance(token, str):
            raise RegistryError(f"token service of {self.host} returned no token")
        return f"Bearer {token}"

    def manifest(self, reference: str, depth: int = 0) -> tuple[dict[str, Any], str]:
        """The image manifest for ``reference``; an index resolves to linux/amd64 (or first)."""
        resp = self.get(f"manifests/{reference}", ACCEPT)
        if resp.status_code == 404:
            resp.close()
            raise RegistryError(f"{self.host}/{self.repo}:{reference} not found "
                                f"(no such repository, tag or digest)")
        if resp.status_code != 200:
            resp.close()
            raise RegistryError(f"manifest {reference}: HTTP {resp.status_code}")
        body = self.session.read_small(resp, MAX_MANIFEST, f"manifest {reference}")
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        if ":" in reference and reference != digest:
            raise RegistryError(f"manifest digest mismatch: wanted {reference}, got {digest}")
        try:
            doc = json.loads(body)
        except ValueError as err:
            raise RegistryError(f"manifest {reference} is not valid JSON") from err
        if not isinstance(doc, dict):
            raise RegistryError(f"manifest {reference} is not a JSON object")
        if doc.get("mediaType") in INDEX_TYPES or ("manifests" in doc and "layers" not in doc):
            return self.manifest(self._platform_manifest(doc, reference, depth), depth + 1)
        return doc, digest

    @staticmethod
    def _platform_manifest(index: dict[str, Any], reference: str, depth: int) -> str:
        """The digest of the index entry to pull: linux/amd64, else the first."""
        entries = index.get("manifests")
        if not entries or not isinstance(entries, list):
            raise RegistryError(f"image index {reference} lists no manifests")
        if depth >= 1:
            raise RegistryError(f"image index {reference} points at another index")
        wanted = [m for m in entries if isinstance(m, dict)
                  and isinstance(m.get("platform"), dict)
                  and m["platform"].get("os") == "linux"
                  and m["platform"].get("architecture") == "amd64"]
        child, *_ = _descriptor((wanted or entries)[0], f"image index {reference}")
        return child

    def blob(self, desc: dict[str, Any], into: IO[bytes], budget: Budget | None = None) -> int:
        """Streams a blob to ``into``, never reading more than its descriptor's size, and
        checks size and digest before anyone reads it; returns the size."""
        digest, algo, want, size = _descriptor(desc, "layer")
        if size > self.limits.max_file_bytes:
            raise RegistryError(f"blob {digest} declares {size} bytes, more than the per-blob "
                                f"cap of {human(self.limits.max_file_bytes)}")
        budget = budget or Budget(self.limits.max_total_bytes, "the adapter's blobs")
        what = f"blob {digest}"
        for attempt in range(self.session.retries + 1):  # a broken stream restarts the blob
            into.seek(0)
            into.truncate()
            before, hasher = budget.used, hashlib.new(algo)
            resp = self.get(f"blobs/{digest}")
            try:
                if resp.status_code != 200:
                    raise RegistryError(f"{what}: HTTP {resp.status_code}")
                declared = declared_length(resp, self.limits.max_file_bytes, what)
                if declared is not None and declared != size:
                    raise RegistryError(f"{what}: the registry declares {declared} bytes, the "
                                        f"descriptor {size}")
                require_identity(resp, what)
                copy_bounded(_hashed(raw_chunks(resp), hasher.update), into,
                             limits=self.limits, what=what, deadline=self.session.deadline,
                             budget=budget, declared=size)
                break
            except EgressError as err:
                raise RegistryError(str(err)) from err
            except httpx.HTTPError as err:
                budget.used = before
                if attempt == self.session.retries:
                    raise RegistryError(f"{what}: download failed: {err}") from err
            finally:
                resp.close()
            self.session.pause(attempt)
        if hasher.hexdigest() != want:
            raise RegistryError(f"{what} failed verification (digest/size mismatch)")
        return size
