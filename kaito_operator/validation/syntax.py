"""Syntax checks for names, labels, image references and URLs.

Each function returns None when the value is fine, or a short phrase saying what is required,
which the caller prefixes with the field path and the value.
"""

from __future__ import annotations

import re

from kaito_egress.policy import Policy, url_refusal

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")

_HOST_PART = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_DOMAIN = rf"{_HOST_PART}(?:\.{_HOST_PART})*"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE_REF = re.compile(
    rf"^(?:(?P<domain>{_DOMAIN}(?::[0-9]+)?)/)?"
    rf"(?P<path>{_COMPONENT}(?:/{_COMPONENT})*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?"
    r"(?:@(?P<digest>[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}))?$",
    re.ASCII,
)

#: What validation refuses early: everything the runtime egress guard refuses whatever its
#: configuration (private ranges may be allowed at run time, so they pass here).
_EARLY_POLICY = Policy(allow_private=True, allow_loopback=False)


def dns_label(value: str) -> str | None:
    if len(value) > 63 or not _DNS_LABEL.fullmatch(value):
        return "must be a DNS-1123 label (lower-case letters, digits and '-', at most 63)"
    return None


def dns_1035_label(value: str, max_length: int = 63) -> str | None:
    if len(value) > max_length or not _DNS_1035.fullmatch(value):
        return (
            "must start with a lower-case letter and hold only lower-case letters, digits "
            f"and '-' (at most {max_length} characters)"
        )
    return None


def dns_subdomain(value: str) -> str | None:
    if len(value) > 253 or not _DNS_SUBDOMAIN.fullmatch(value):
        return "must be a DNS-1123 subdomain (lower-case letters, digits, '-' and '.')"
    return None


def label_key(key: str) -> str | None:
    prefix, _, name = key.rpartition("/")
    if prefix and dns_subdomain(prefix):
        return "label key prefix must be a DNS-1123 subdomain"
    if len(name) > 63 or not _LABEL_NAME.fullmatch(name):
        return "label key name must be at most 63 letters, digits, '-', '_' or '.'"
    return None


def label_value(value: str) -> str | None:
    if value and (len(value) > 63 or not _LABEL_NAME.fullmatch(value)):
        return "label value must be at most 63 letters, digits, '-', '_' or '.'"
    return None


_REF_HINT = "must be an image reference like registry.example.com/repository:tag"


def _is_registry(domain: str) -> bool:
    """Docker's rule: the first component names a registry only if it has a '.' or a port,
    or is `localhost`; otherwise it is part of the (lower-case) repository path."""
    return "." in domain or ":" in domain or domain == "localhost"


def image_reference(value: str) -> str | None:
    """A pullable image reference: `[registry/]repository[:tag][@digest]`."""
    match = _IMAGE_REF.fullmatch(value)
    if not match:
        return _REF_HINT
    domain = match.group("domain")
    if domain and not _is_registry(domain) and not re.fullmatch(_COMPONENT, domain):
        return _REF_HINT
    return None


def push_reference(value: str) -> str | None:
    """A reference we can push to: registry host, repository and tag, no digest."""
    if problem := image_reference(value):
        return problem
    match = _IMAGE_REF.fullmatch(value)
    assert match is not None  # image_reference accepted it
    domain = match.group("domain")
    if not domain or not _is_registry(domain):
        return "must name the registry host, like myregistry.azurecr.io/repository:tag"
    if match.group("digest"):
        return "cannot carry a digest: the digest is known only after the push"
    if not match.group("tag"):
        return "must carry a tag, like myregistry.azurecr.io/repository:tag"
    return None


def download_url(value: str) -> str | None:
    """An http(s) URL that does not point at the node, the pod network's link-local range or
    a cloud metadata service, in any spelling of the host (the init container downloading it
    runs inside the cluster; its egress guard also checks what the name resolves to)."""
    why = url_refusal(value, _EARLY_POLICY)
    if why is None:
        return None
    if "node itself" in why or "metadata service" in why:
        return f"must not point at the node itself or a metadata service: {why}"
    if "link-local" in why or "metadata address" in why:
        return f"must not point at a link-local or cloud metadata address: {why}"
    if "loopback" in why or "unspecified" in why:
        return f"must not point at a loopback address: {why}"
    if why.startswith("must "):
        return why
    if why.startswith("host "):
        return f"must name a valid host: {why}"
    return f"must not point at a non-public address: {why}"
