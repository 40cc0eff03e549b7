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

from pathlib import Path

import httpx

from kaito_egress.guard import EgressError, EgressGuard
from kaito_egress.limits import Deadline, MiB, TransferLimits
from kaito_egress.requests_adapter import guard_session
from kaito_workload.oci import (
    Credentials,
    ImageReference,
    RegistryError,
    RegistrySession,
    basic_authorization,
    is_loopback,
    parse_challenge,
    parse_reference,
    read_docker_config,
    token_url,
)
from tuning_job.errors import PushError

PREFLIGHT_DEADLINE_S = 120.0
#: Bounds of the pre-flight requests (`/v2/`, the token): two minutes for the whole check,
#: socket timeouts from the defaults; their bodies are not read.
_SMALL = TransferLimits(deadline_s=PREFLIGHT_DEADLINE_S, max_file_bytes=MiB,
                        max_total_bytes=MiB)


def output_reference(ref: str) -> ImageReference:
    """The `--push` reference: it must name its registry, and a tag (`latest` if none) but no
    digest."""
    try:
        parsed = parse_reference(ref)
    except RegistryError:
        parsed = None
    if parsed is None or not parsed.names_registry:
        raise PushError(f"output image {ref!r} must be a full registry/repository:tag reference")
    if parsed.digest:
        raise PushError(f"output image {ref!r} must be registry/repository:tag (no digest)")
    return parsed


def load_credentials(config: Path | None, host: str) -> Credentials | None:
    """The push secret's credentials for `host` (a `.dockerconfigjson` or config.json)."""
    if config is None:
        return None
    try:
        return read_docker_config(config).get(host)
    except RegistryError as err:
        raise PushError(str(err)) from err


def _status(session: RegistrySession, url: str, headers: dict[str, str]) -> httpx.Response:
    """The answer to one GET, body unread (the pre-flight looks at status and headers)."""
    resp = session.send(url, headers)
    resp.close()
    return resp


def preflight(host: str, repo: str, creds: Credentials | None, *, insecure: bool,
              retries: int = 3, guard: EgressGuard | None = None,
              transport: httpx.BaseTransport | None = None) -> str:
    """Checks that the registry answers and accepts the credentials for pushing `repo`;
    returns the oras auth backend to use (`basic` or `token`)."""
    try:
        session = RegistrySession(host, creds, insecure=insecure, limits=_SMALL,
                                  deadline=Deadline(PREFLIGHT_DEADLINE_S,
                                                    f"checking registry {host}"),
                                  secret="push secret", retries=retries, guard=guard,
                                  transport=transport)
        try:
            return _check_push_access(session, repo)
        finally:
            session.close()
    except RegistryError as err:
        raise PushError(str(err)) from err


def _check_push_access(session: RegistrySession, repo: str) -> str:
    host, creds = session.host, session.creds
    resp = _status(session, session.root, {})
    if resp.status_code == 200:
        return "basic"
    if resp.status_code != 401:
        raise PushError(f"registry {host} answered HTTP {resp.status_code} to /v2/")
    kind, fields = parse_challenge(resp.headers.get("WWW-Authenticate", ""))
    if creds is None:
        raise PushError(f"registry {host} needs credentials and the push secret has none "
                        f"for it")
    who = f"user {creds[0]!r}"
    auth = {"Authorization": basic_authorization(creds)}
    if kind == "bearer" and fields.get("realm"):
        params = {"service": fields.get("service", host),
                  "scope": f"repository:{repo}:pull,push"}
        token = _status(session, token_url(host, fields["realm"], params), auth)
        if token.status_code != 200:
            raise PushError(f"registry {host} rejected the push secret's credentials "
                            f"({who}): token service answered HTTP {token.status_code}")
        return "token"
    again = _status(session, session.root, auth)
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
    ref = output_reference(reference)
    creds = load_credentials(docker_config, ref.host)
    backend = preflight(ref.host, ref.repository, creds, insecure=insecure, retries=retries,
                        guard=guard)
    client = oras.client.OrasClient(insecure=insecure or is_loopback(ref.host),
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
