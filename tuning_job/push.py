"""Publish the adapter as an OCI artifact with oras, using the push secret's docker config.

Layout: one layer per file, titled with the file name (`adapter_config.json`,
`adapter_model.safetensors`), as `oras push ref adapter_config.json adapter_model.safetensors`
would write it; `inference_server.fetch_adapter` pulls exactly that into `/mnt/adapter/<name>`.

Why a pre-flight check before oras: oras-py retries *every* failure (refused connections,
rejected credentials) with sleeps of 2 s + 3^n for five attempts, about two minutes, and its
final error does not say which of the two happened. One authenticated `GET /v2/` (and the token
request for bearer registries such as ACR) answers both in a second, with a message the
Workspace can show, and tells oras which auth backend the registry speaks.
"""

from __future__ import annotations

import base64
import io
import json
import re
import time
from pathlib import Path

import httpx

from kaito_egress.guard import EgressError, EgressGuard
from kaito_egress.http import guarded_client, open_stream, raw_chunks
from kaito_egress.limits import Budget, Deadline, MiB, TransferLimits, copy_bounded
from kaito_egress.policy import is_literal_loopback
from kaito_egress.requests_adapter import guard_session
from tuning_job.errors import PushError

DOCKER_HUB = "registry-1.docker.io"
PREFLIGHT_DEADLINE_S = 120.0
#: Bounds of the pre-flight answers (`/v2/`, the token): small JSON documents.
_SMALL = TransferLimits(deadline_s=PREFLIGHT_DEADLINE_S, max_file_bytes=MiB,
                        max_total_bytes=MiB)


def parse_reference(ref: str) -> tuple[str, str, str]:
    """`host[:port]/repo:tag` → (host, repo, tag); the output image must name its registry."""
    rest, _, digest = ref.partition("@")
    host, sep, path = rest.partition("/")
    if not sep or not ("." in host or ":" in host or host == "localhost"):
        raise PushError(f"output image {ref!r} must be a full registry/repository:tag reference")
    repo, colon, tag = path.rpartition(":")
    if not colon or "/" in tag:
        repo, tag = path, "latest"
    if digest or not repo:
        raise PushError(f"output image {ref!r} must be registry/repository:tag (no digest)")
    return host, repo, tag


def is_loopback(host: str) -> bool:
    """True only for a literal loopback registry address (`127.0.0.1:5000`, `[::1]:5000`)."""
    return is_literal_loopback(host)


def load_credentials(config: Path | None, host: str) -> tuple[str, str] | None:
    """(user, password) for `host` from a docker config (`.dockerconfigjson` or config.json)."""
    if config is None:
        return None
    try:
        auths = json.loads(config.read_text()).get("auths") or {}
    except (OSError, ValueError, AttributeError) as err:
        raise PushError(f"unreadable docker config {config}: {err}") from err
    for key, entry in auths.items():
        name = key.split("://", 1)[-1].split("/", 1)[0]
        name = DOCKER_HUB if name in ("index.docker.io", "docker.io") else name
        if name != host or not isinstance(entry, dict):
            continue
        user, password = entry.get("username"), entry.get("password")
        if entry.get("auth"):
            try:
                user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except (ValueError, TypeError) as err:
                raise PushError(f"docker config {config}: the auth of {key} is not "
                                f"base64 user:password") from err
        if user:
            return user, password or ""
    return None


def _challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, params = header.strip().partition(" ")
    fields = re.findall(r'(\w+)\s*=\s*(?:"([^"]*)"|([^,\s]*))', params)
    return scheme.lower(), {k.lower(): quoted or bare for k, quoted, bare in fields}


def _get(http: httpx.Client, guard: EgressGuard, url: str, host: str, retries: int,
         headers: dict[str, str], deadline: Deadline) -> httpx.Response:
    """A GET through the egress guard (redirects checked), body read (at most 1 MiB),
    with bounded retries on connection errors and 5xx."""
    plain_ok = is_loopback(host) and guard.policy.allow_loopback
    for attempt in range(retries + 1):
        try:
            resp = open_stream(http, guard, url, headers=headers, deadline=deadline,
                               credentials_over_http=plain_ok)
            try:
                body = io.BytesIO()
                copy_bounded(raw_chunks(resp), body, limits=_SMALL, what=f"{url}",
                             deadline=deadline, budget=Budget(_SMALL.max_file_bytes, url),
                             encoding=resp.headers.get("content-encoding", "identity"))
            finally:
                resp.close()
        except httpx.TransportError as err:
            if attempt == retries:
                raise PushError(f"cannot reach registry {host}: {err}") from err
        except EgressError as err:
            raise PushError(f"registry {host}: {err}") from err
        else:
            if resp.status_code < 500 or attempt == retries:
                return resp
        time.sleep(min(0.5 * 2**attempt, 10.0, deadline.remaining()))
    raise AssertionError("unreachable")


def _basic(creds: tuple[str, str]) -> str:
    return "Basic " + base64.b64encode(":".join(creds).encode()).decode()


def preflight(host: str, repo: str, creds: tuple[str, str] | None, *, insecure: bool,
              retries: int = 3, guard: EgressGuard | None = None,
              transport: httpx.BaseTransport | None = None) -> str:
    """Checks that the registry answers and accepts the credentials for pushing `repo`;
    returns the oras auth backend to use (`basic` or `token`)."""
    guard = guard or EgressGuard.from_env()
    plain = insecure or is_loopback(host)
    if plain and creds and not (is_loopback(host) and guard.policy.allow_loopback):
        raise PushError(f"refusing to send the push secret's credentials over plain http to "
                        f"{host}")
    scheme = "http" if plain else "https"
    who = f"user {creds[0]!r}" if creds else "anonymous access"
    deadline = Deadline(PREFLIGHT_DEADLINE_S, f"checking registry {host}")
    with guarded_client(guard, transport=transport) as http:
        resp = _get(http, guard, f"{scheme}://{host}/v2/", host, retries, {}, deadline)
        if resp.status_code == 200:
            return "basic"
        if resp.status_code != 401:
            raise PushError(f"registry {host} answered HTTP {resp.status_code} to /v2/")
        kind, fields = _challenge(resp.headers.get("WWW-Authenticate", ""))
        if creds is None:
            raise PushError(f"registry {host} needs credentials and the push secret has none "
                            f"for it")
        auth = {"Authorization": _basic(creds)}
        if kind == "bearer" and fields.get("realm"):
            params = {"service": fields.get("service", host),
                      "scope": f"repository:{repo}:pull,push"}
            try:
                realm = str(httpx.URL(fields["realm"], params=params))
            except (httpx.InvalidURL, ValueError, TypeError) as err:
                raise PushError(f"registry {host} sent an unusable token realm "
                                f"{fields['realm'][:100]!r}") from err
            token = _get(http, guard, realm, host, retries, auth, deadline)
            if token.status_code != 200:
                raise PushError(f"registry {host} rejected the push secret's credentials "
                                f"({who}): token service answered HTTP {token.status_code}")
            return "token"
        again = _get(http, guard, f"{scheme}://{host}/v2/", host, retries, auth, deadline)
        if again.status_code in (401, 403):
            raise PushError(f"registry {host} rejected the push secret's credentials ({who}): "
                            f"HTTP {again.status_code}")
        return "basic"


def push_adapter(files: list[Path], reference: str, docker_config: Path | None, *,
                 insecure: bool = False, retries: int = 3,
                 guard: EgressGuard | None = None) -> str:
    """Push `files` (titled by their names) to `reference`; returns the manifest digest.
    The pre-flight check and every request oras makes go through the egress guard."""
    import oras.client

    guard = guard or EgressGuard.from_env()
    host, repo, _ = parse_reference(reference)
    creds = load_credentials(docker_config, host)
    backend = preflight(host, repo, creds, insecure=insecure, retries=retries, guard=guard)
    client = oras.client.OrasClient(insecure=insecure or is_loopback(host),
                                    auth_backend=backend)
    guard_session(client.session, guard)
    if creds:
        client.auth.set_basic_auth(*creds)
    try:
        resp = client.push(target=reference, files=[str(f) for f in files],
                           disable_path_validation=True, quiet=True)
    except EgressError as err:
        raise PushError(f"push to {reference} refused: {err}") from err
    except Exception as err:  # oras-py raises ValueError, requests errors, and more
        raise PushError(f"push to {reference} failed: {' '.join(str(err).split())[:300]}") \
            from err
    return str(resp.headers.get("Docker-Content-Digest", ""))
