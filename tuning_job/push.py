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
import json
import re
import time
from pathlib import Path

import httpx

from tuning_job.errors import PushError

DOCKER_HUB = "registry-1.docker.io"


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
    name = host[1: host.find("]")] if host.startswith("[") else host.rsplit(":", 1)[0]
    return name in ("localhost", "::1") or name.startswith("127.")


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
            user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
        if user:
            return user, password or ""
    return None


def _challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, params = header.strip().partition(" ")
    fields = re.findall(r'(\w+)\s*=\s*(?:"([^"]*)"|([^,\s]*))', params)
    return scheme.lower(), {k.lower(): quoted or bare for k, quoted, bare in fields}


def _get(client: httpx.Client, url: str, host: str, retries: int, **kw: object) -> httpx.Response:
    for attempt in range(retries + 1):
        try:
            resp = client.get(url, **kw)  # type: ignore[arg-type]
        except httpx.TransportError as err:
            if attempt == retries:
                raise PushError(f"cannot reach registry {host}: {err}") from err
        else:
            if resp.status_code < 500 or attempt == retries:
                return resp
        time.sleep(min(0.5 * 2**attempt, 10.0))
    raise AssertionError("unreachable")


def preflight(host: str, repo: str, creds: tuple[str, str] | None, *, insecure: bool,
              retries: int = 3) -> str:
    """Checks that the registry answers and accepts the credentials for pushing `repo`;
    returns the oras auth backend to use (`basic` or `token`)."""
    scheme = "http" if insecure or is_loopback(host) else "https"
    basic = httpx.BasicAuth(*creds) if creds else None
    who = f"user {creds[0]!r}" if creds else "anonymous access"
    with httpx.Client(timeout=httpx.Timeout(20.0, connect=10.0), follow_redirects=True) as http:
        resp = _get(http, f"{scheme}://{host}/v2/", host, retries)
        if resp.status_code == 200:
            return "basic"
        if resp.status_code != 401:
            raise PushError(f"registry {host} answered HTTP {resp.status_code} to /v2/")
        kind, fields = _challenge(resp.headers.get("WWW-Authenticate", ""))
        if creds is None:
            raise PushError(f"registry {host} needs credentials and the push secret has none "
                            f"for it")
        if kind == "bearer" and fields.get("realm"):
            params = {"service": fields.get("service", host),
                      "scope": f"repository:{repo}:pull,push"}
            token = _get(http, fields["realm"], host, retries, params=params, auth=basic)
            if token.status_code != 200:
                raise PushError(f"registry {host} rejected the push secret's credentials "
                                f"({who}): token service answered HTTP {token.status_code}")
            return "token"
        again = _get(http, f"{scheme}://{host}/v2/", host, retries, auth=basic)
        if again.status_code in (401, 403):
            raise PushError(f"registry {host} rejected the push secret's credentials ({who}): "
                            f"HTTP {again.status_code}")
        return "basic"


def push_adapter(files: list[Path], reference: str, docker_config: Path | None, *,
                 insecure: bool = False, retries: int = 3) -> str:
    """Push `files` (titled by their names) to `reference`; returns the manifest digest."""
    import oras.client

    host, repo, _ = parse_reference(reference)
    creds = load_credentials(docker_config, host)
    backend = preflight(host, repo, creds, insecure=insecure, retries=retries)
    client = oras.client.OrasClient(insecure=insecure or is_loopback(host),
                                    auth_backend=backend)
    if creds:
        client.auth.set_basic_auth(*creds)
    try:
        resp = client.push(target=reference, files=[str(f) for f in files],
                           disable_path_validation=True, quiet=True)
    except Exception as err:  # oras-py raises ValueError, requests errors, and more
        raise PushError(f"push to {reference} failed: {' '.join(str(err).split())[:300]}") \
            from err
    return str(resp.headers.get("Docker-Content-Digest", ""))
