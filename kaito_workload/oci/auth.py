"""Registry credentials: docker-config secrets and `WWW-Authenticate` challenges.

A pull or push secret is a docker config (`.dockerconfigjson` or `config.json`) whose `auths`
map registry hosts to `username`/`password` or a base64 `auth` of `user:password`.  A registry
answers an unauthenticated request with a challenge: `Basic realm=".."`, or `Bearer realm=".."
,service="..",scope=".."` naming the token service to ask.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from pathlib import Path
from typing import Any

import httpx

from kaito_workload.oci.errors import RegistryError
from kaito_workload.oci.reference import DOCKER_HUB

#: (user, password)
Credentials = tuple[str, str]

CONFIG_NAMES = (".dockerconfigjson", "config.json")
#: `key=value` or `key="value"`; quoted values may hold commas (`repository:a:pull,push`).
_CHALLENGE_FIELD = re.compile(r'(\w+)\s*=\s*(?:"([^"]*)"|([^,\s]*))')


def registry_host(key: str) -> str:
    """The host an `auths` key stands for: `https://host/v1/` → `host`; Docker Hub's
    aliases → its registry host."""
    host = key.split("://", 1)[-1].split("/", 1)[0]
    return DOCKER_HUB if host in ("index.docker.io", "docker.io") else host


def _credentials(path: Path, key: str, entry: Any) -> Credentials | None:
    if not isinstance(entry, dict):
        raise RegistryError(f"unreadable docker config {path}: the entry of {key} is not an "
                            f"object")
    user, password = entry.get("username"), entry.get("password")
    if entry.get("auth"):
        try:
            user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
        except (binascii.Error, ValueError, TypeError) as err:
            raise RegistryError(f"docker config {path}: the auth of {key} is not base64 "
                                f"user:password") from err
    if not user or not isinstance(user, str):
        return None
    return user, str(password or "")


def read_docker_config(path: Path) -> dict[str, Credentials]:
    """Registry host → credentials from one docker config file (the first entry of a host
    wins)."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise RegistryError(f"unreadable docker config {path}: {err}") from err
    auths = doc.get("auths") if isinstance(doc, dict) else None
    if auths is None and isinstance(doc, dict):
        return {}
    if not isinstance(auths, dict):
        raise RegistryError(f"unreadable docker config {path}: no \"auths\" object")
    found: dict[str, Credentials] = {}
    for key, entry in auths.items():
        creds = _credentials(path, str(key), entry)
        if creds:
            found.setdefault(registry_host(str(key)), creds)
    return found


def load_auths(config_dir: str | Path | None) -> dict[str, Credentials]:
    """Registry host → credentials from every docker config in ``config_dir`` or one level
    below it (one mounted secret per subdirectory); the first file naming a host wins."""
    found: dict[str, Credentials] = {}
    if not config_dir:
        return found
    root = Path(config_dir)
    for name in CONFIG_NAMES:
        for path in sorted([*root.glob(name), *root.glob(f"*/{name}")]):
            for host, creds in read_docker_config(path).items():
                found.setdefault(host, creds)
    return found


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="..",service="..",scope=".."` → ("bearer", {"realm": .., ...}); the
    scheme and the field names in lower case."""
    scheme, _, params = header.strip().partition(" ")
    fields = _CHALLENGE_FIELD.findall(params)
    return scheme.lower(), {k.lower(): quoted or bare for k, quoted, bare in fields}


def basic_authorization(creds: Credentials) -> str:
    """The `Authorization` value of HTTP basic auth."""
    return "Basic " + base64.b64encode(":".join(creds).encode()).decode()


def token_url(host: str, realm: str, params: dict[str, str]) -> str:
    """The token request of a bearer challenge: its realm with `service`/`scope` added."""
    try:
        return str(httpx.URL(realm, params=params))
    except (httpx.InvalidURL, ValueError, TypeError) as err:
        raise RegistryError(f"registry {host} sent an unusable token realm "
                            f"{realm[:100]!r}") from err
