"""Requests to one OCI registry, every one through the egress guard (`kaito_egress`).

The session picks the scheme (plain http only with `insecure` or for a literal loopback
address), refuses to send credentials over plain http (except to a loopback literal the guard
allows), retries 429/5xx answers and connection errors a bounded number of times with
exponential backoff (honouring `Retry-After`), follows only redirects the guard checked, and
reads small documents (tokens, manifests) within a byte cap and the transfer's deadline.
"""

from __future__ import annotations

import io
import time
from dataclasses import replace

import httpx

from kaito_egress.guard import EgressError, EgressGuard
from kaito_egress.http import guarded_client, open_stream, raw_chunks
from kaito_egress.limits import Budget, Deadline, TransferLimits, copy_bounded, human
from kaito_workload.oci.auth import Credentials
from kaito_workload.oci.errors import RegistryError
from kaito_workload.oci.reference import is_loopback

RETRY_STATUSES = {429, 500, 502, 503, 504}
MAX_DELAY_S = 30.0


class RegistrySession:
    """One registry host and the credentials for it.  `secret` names where the credentials
    come from in messages (`pull secret`, `push secret`)."""

    def __init__(self, host: str, creds: Credentials | None, *, insecure: bool,
                 limits: TransferLimits, deadline: Deadline, secret: str,
                 retries: int = 5, backoff: float = 0.5,
                 transport: httpx.BaseTransport | None = None,
                 guard: EgressGuard | None = None) -> None:
        self.guard = guard or EgressGuard.from_env()
        self.plain_http = insecure or is_loopback(host)
        self.root = f"{'http' if self.plain_http else 'https'}://{host}/v2/"
        self.host, self.creds, self.secret = host, creds, secret
        self.limits, self.deadline = limits, deadline
        self.retries, self.backoff = retries, backoff
        self.credentials_over_http = is_loopback(host) and self.guard.policy.allow_loopback
        if self.plain_http and creds and not self.credentials_over_http:
            raise RegistryError(f"refusing to send the {secret}'s credentials over plain http "
                                f"to {host}")
        self.http = guarded_client(self.guard, transport=transport)

    def close(self) -> None:
        self.http.close()

    def pause(self, attempt: int, seconds: float | None = None) -> None:
        """Waits before retry number `attempt + 1`, never past the deadline."""
        delay = self.backoff * 2**attempt if seconds is None else seconds
        time.sleep(min(delay, MAX_DELAY_S, self.deadline.remaining()))

    def send(self, url: str, headers: dict[str, str]) -> httpx.Response:
        """One streamed GET (the caller closes it) with bounded retries on 429/5xx and
        connection errors; the last answer is returned whatever its status."""
        for attempt in range(self.retries + 1):
            wait = None
            try:
                resp = open_stream(self.http, self.guard, url, headers=headers,
                                   deadline=self.deadline,
                                   read_timeout=self.limits.rate_window_s,
                                   connect_timeout=self.limits.connect_timeout_s,
                                   credentials_over_http=self.credentials_over_http)
            except httpx.TransportError as err:
                if attempt == self.retries:
                    raise RegistryError(f"cannot reach registry {self.host}: {err}") from err
            except EgressError as err:
                raise RegistryError(f"registry {self.host}: {err}") from err
            else:
                if resp.status_code not in RETRY_STATUSES or attempt == self.retries:
                    return resp
                retry_after = resp.headers.get("Retry-After", "")
                wait = float(retry_after) if retry_after.isdigit() else None
                resp.close()
            self.pause(attempt, wait)
        raise AssertionError("unreachable")

    def read_small(self, resp: httpx.Response, cap: int, what: str) -> bytes:
        """The whole body of a small document (manifest, token), at most `cap` bytes,
        checked against Content-Length before and while reading; closes `resp`."""
        out = io.BytesIO()
        try:
            declared = declared_length(resp, cap, what)
            require_identity(resp, what)
            copy_bounded(raw_chunks(resp), out, what=what, deadline=self.deadline,
                         limits=replace(self.limits, max_file_bytes=cap),
                         budget=Budget(cap, what), declared=declared)
        except EgressError as err:
            raise RegistryError(str(err)) from err
        except httpx.HTTPError as err:
            raise RegistryError(f"{what}: download failed: {err}") from err
        finally:
            resp.close()
        return out.getvalue()


def declared_length(resp: httpx.Response, cap: int, what: str) -> int | None:
    """The response's Content-Length, refused when malformed or over `cap`."""
    value = resp.headers.get("content-length")
    if value is None:
        return None
    if not value.strip().isdigit():
        raise RegistryError(f"{what}: malformed Content-Length {value[:40]!r}")
    if int(value) > cap:
        raise RegistryError(f"{what}: the registry declares {int(value)} bytes, more than the "
                            f"cap of {human(cap)}")
    return int(value)


def require_identity(resp: httpx.Response, what: str) -> None:
    """Refuses a content-encoded body: digests and sizes cover the raw bytes."""
    encoding = resp.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise RegistryError(f"{what}: refusing Content-Encoding {encoding!r} (digests cover "
                            f"the raw bytes)")
