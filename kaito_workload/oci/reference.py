"""Image references as docker reads them, and which registries get plain http."""

from __future__ import annotations

from dataclasses import dataclass

from kaito_egress.policy import is_literal_loopback
from kaito_workload.oci.errors import RegistryError

DOCKER_HUB = "registry-1.docker.io"


@dataclass(frozen=True)
class ImageReference:
    """One parsed reference.  `names_registry` says whether the text named its registry (a
    first component with a dot, a port or `localhost`) or got docker's default, Docker Hub."""

    host: str
    repository: str
    tag: str
    digest: str
    names_registry: bool

    @property
    def version(self) -> str:
        """What the manifest request names: the digest when there is one, else the tag."""
        return self.digest or self.tag


def parse_reference(ref: str) -> ImageReference:
    """`[host[:port]/]repository[:tag][@digest]` with docker's defaults (Docker Hub,
    `library/` for a one-word name, tag `latest`)."""
    rest, _, digest = ref.partition("@")
    first, sep, remainder = rest.partition("/")
    names_registry = bool(sep) and ("." in first or ":" in first or first == "localhost")
    if names_registry:
        host, path = first, remainder
    else:
        host, path = DOCKER_HUB, rest if "/" in rest else f"library/{rest}"
    repository, colon, tag = path.rpartition(":")
    if not colon or "/" in tag:
        repository, tag = path, "latest"
    if not repository or not all(repository.split("/")):
        raise RegistryError(f"invalid image reference {ref!r}")
    return ImageReference(host, repository, tag, digest, names_registry)


def is_loopback(host: str) -> bool:
    """True only for a literal loopback registry address (`127.0.0.1:5000`, `[::1]:5000`):
    the one case where plain http is used without `--insecure`, as docker does."""
    return is_literal_loopback(host)
