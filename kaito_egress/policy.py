"""Which hosts and addresses an in-cluster fetch may reach (standard library only, no I/O).

`normalize_host` turns any spelling of a host (percent-encoding, fullwidth or circled Unicode,
trailing dots, brackets, the decimal/hex/octal/short IPv4 forms that `inet_aton` accepts) into
either an IP address or a lower-case ASCII name; `address_refusal` says why an address may not be
dialled (loopback, unspecified, link-local, multicast, reserved, cloud metadata, private ranges,
and IPv6 forms that embed a refused IPv4 address); `name_refusal` does the same for names that
point at the node or a metadata service whatever DNS says.  The validation layer uses these for
an early message; the runtime guard (`kaito_egress.guard`) applies them to every resolved address.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Names that mean the node itself or a cloud's instance-metadata service, whatever DNS says.
FORBIDDEN_NAMES = frozenset({
    "localhost",
    "localhost.localdomain",
    "ip6-localhost",
    "ip6-loopback",
    "metadata",
    "metadata.google.internal",
    "metadata.goog",
    "instance-data",
    "instance-data.ec2.internal",
})

#: Metadata and platform endpoints, some outside the link-local range (Alibaba Cloud, AWS over
#: IPv6, Azure's wireserver, which sits in a public range).
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254",
    "169.254.170.2",
    "169.254.169.123",
    "100.100.100.200",
    "168.63.129.16",
    "fd00:ec2::254",
    "fd00:ec2::23",
))

#: Ranges a cluster's own services live in; refused unless the policy allows private targets.
PRIVATE_NETWORKS = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "fc00::/7",
))

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})
_NUMBER = re.compile(r"0[xX][0-9a-fA-F]*|0[0-7]*|[1-9][0-9]*")
_NUMERIC_LOOKING = re.compile(r"[0-9][0-9a-zA-Z]*")
_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")


class HostError(ValueError):
    """The host cannot be understood; the message says why, in one line."""


@dataclass(frozen=True)
class Policy:
    """What may be reached: private ranges (on by default: refused) and literal loopback
    addresses (refused unless a test or the local sandbox allows them)."""

    allow_private: bool = False
    allow_loopback: bool = False


@dataclass(frozen=True)
class Host:
    """A normalized host: `address` for IP literals in any spelling, else `name` (ASCII)."""

    name: str
    address: IPAddress | None
    canonical_literal: bool
    """True when the host was written as a plain IP literal (`127.0.0.1`, `[::1]`)."""


def _ipv4_number(part: str) -> int | None:
    if not _NUMBER.fullmatch(part):
        return None
    if part[:2].lower() == "0x":
        return int(part[2:] or "0", 16)
    if len(part) > 1 and part[0] == "0":
        return int(part[1:], 8)
    return int(part)


def parse_ipv4(text: str) -> ipaddress.IPv4Address | None:
    """The address `inet_aton` (and browsers) read in `text`: 1 to 4 parts, each decimal, hex
    (`0x7f`) or octal (`0177`), the last one filling the remaining bytes (`127.1`,
    `169.254.43518`, `2130706433`).  None when `text` is not such a number; HostError when it
    looks numeric but is not a valid address (`1.2.3.4.5`, `08.1`, `256.1.1.1`)."""
    parts = text.split(".")
    if not _NUMERIC_LOOKING.fullmatch(parts[-1]):
        return None
    if len(parts) > 4:
        raise HostError(f"host {text[:100]!r} ends in a number but is not an IPv4 address")
    numbers = [_ipv4_number(p) for p in parts]
    if any(n is None for n in numbers):
        raise HostError(f"host {text[:100]!r} ends in a number but is not an IPv4 address")
    *head, last = [n for n in numbers if n is not None]
    if any(n > 255 for n in head) or last >= 256 ** (4 - len(head)):
        raise HostError(f"host {text[:100]!r} is out of the IPv4 range")
    value = last
    for index, byte in enumerate(head):
        value += byte << (8 * (3 - index))
    return ipaddress.IPv4Address(value)


def _ascii_name(name: str) -> str:
    labels = name.split(".")
    out = []
    for label in labels:
        if not label:
            raise HostError(f"host {name[:100]!r} has an empty label")
        if not label.isascii():
            try:
                label = label.encode("idna").decode("ascii")
            except UnicodeError as err:
                raise HostError(f"host {name[:100]!r} is not a valid internationalized "
                                f"name") from err
        if not _LABEL.fullmatch(label.lower()):
            raise HostError(f"host {name[:100]!r} holds characters a DNS name cannot")
        out.append(label.lower())
    result = ".".join(out)
    if len(result) > 253:
        raise HostError("host name is longer than 253 characters")
    return result


def normalize_host(raw: str) -> Host:
    """`raw` (a URL's host part, without port or userinfo) as the address or name it means."""
    text = unquote(raw.strip())
    if not text:
        raise HostError("URL names no host")
    if any(ord(c) < 0x21 or c in "\\/@?#" or c == "\x7f" for c in text):
        raise HostError(f"host {raw[:100]!r} holds characters a host name cannot")
    if ":" in text:
        literal = text[1:-1] if text.startswith("[") and text.endswith("]") else text
        if "%" in literal:
            raise HostError(f"host {raw[:100]!r}: IPv6 zone identifiers are not allowed")
        try:
            return Host(literal, ipaddress.IPv6Address(literal), raw.strip() == text)
        except ValueError as err:
            raise HostError(f"host {raw[:100]!r} is not a valid IPv6 address") from err
    folded = unicodedata.normalize("NFKC", text).translate(_DOTS).rstrip(".")
    if not folded:
        raise HostError(f"host {raw[:100]!r} is empty once normalized")
    if not folded.isascii():
        folded = _ascii_name(folded)
    v4 = parse_ipv4(folded)
    if v4 is not None:
        try:
            canonical = str(ipaddress.IPv4Address(raw.strip())) == raw.strip()
        except ValueError:
            canonical = False
        return Host(str(v4), v4, canonical)
    return Host(_ascii_name(folded), None, False)


def name_refusal(name: str) -> str | None:
    """Why the (normalized) name may not be used whatever it resolves to, or None."""
    if name in FORBIDDEN_NAMES or name.endswith(".localhost"):
        if "metadata" in name or "instance-data" in name:
            return f"host {name} is a cloud metadata service"
        return f"host {name} is the node itself (loopback)"
    return None


def embedded_ipv4(address: ipaddress.IPv6Address) -> list[tuple[str, ipaddress.IPv4Address]]:
    """IPv4 addresses an IPv6 address carries: mapped, compatible, NAT64, 6to4, Teredo."""
    found: list[tuple[str, ipaddress.IPv4Address]] = []
    if address.ipv4_mapped is not None:
        found.append(("IPv4-mapped", address.ipv4_mapped))
    value = int(address)
    if value >> 32 == 0 and value > 1:
        found.append(("IPv4-compatible", ipaddress.IPv4Address(value & 0xFFFFFFFF)))
    if address in _NAT64:
        found.append(("NAT64", ipaddress.IPv4Address(value & 0xFFFFFFFF)))
    if address.sixtofour is not None:
        found.append(("6to4", address.sixtofour))
    if address.teredo is not None:
        found.append(("Teredo", address.teredo[1]))
    return found


def _is_private(address: IPAddress) -> bool:
    return any(address in net for net in PRIVATE_NETWORKS if net.version == address.version)


def _v4_refusal(address: IPAddress, policy: Policy, literal: bool) -> str | None:
    if address in METADATA_ADDRESSES:
        return f"{address} is a cloud metadata address"
    if address.is_unspecified:
        return f"{address} is the unspecified address"
    if address.is_loopback:
        if policy.allow_loopback and literal:
            return None
        return f"{address} is a loopback address"
    if address.is_link_local:
        return f"{address} is a link-local address"
    if address.is_multicast:
        return f"{address} is a multicast address"
    if _is_private(address):
        return None if policy.allow_private else (
            f"{address} is in a private range (private targets are not allowed)")
    if not address.is_global:
        return f"{address} is a reserved, non-public address"
    return None


def address_refusal(address: IPAddress, policy: Policy = Policy(), *,
                    literal: bool = False) -> str | None:
    """Why `address` may not be dialled under `policy`, or None.  `literal` says the URL
    wrote this exact address (the only case where an allowed loopback passes)."""
    if isinstance(address, ipaddress.IPv6Address):
        if address in _NAT64_LOCAL:
            return f"{address} is a local-use NAT64 address"
        for kind, inner in embedded_ipv4(address):
            if (why := _v4_refusal(inner, policy, False)):
                return f"{address} ({kind} form of {inner}): {why}"
        if address.is_site_local:
            return f"{address} is a site-local address"
    return _v4_refusal(address, policy, literal)


def host_refusal(host: Host, policy: Policy = Policy()) -> str | None:
    """The refusal that can be decided without DNS: forbidden names and IP literals."""
    if host.address is not None:
        return address_refusal(host.address, policy, literal=host.canonical_literal)
    return name_refusal(host.name)


def split_host_port(hostport: str) -> str:
    """The host of `host[:port]` or `[v6]:port` (registry references are written so)."""
    if hostport.startswith("["):
        end = hostport.find("]")
        return hostport[: end + 1] if end > 0 else hostport
    return hostport.rsplit(":", 1)[0] if hostport.count(":") == 1 else hostport


def is_literal_loopback(hostport: str) -> bool:
    """True only for a plain loopback IP literal (`127.0.0.1:5000`, `[::1]:5000`): never a
    name (`localhost`, `127.evil.example`) nor a numeric trick (`127.1`, `0x7f.1`)."""
    host = split_host_port(hostport)
    text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    return address.is_loopback and str(address) == text.lower()


def url_refusal(url: str, policy: Policy = Policy()) -> str | None:
    """Why `url` may not be fetched, decided without DNS (scheme, credentials in the URL,
    host spelling, forbidden names and addresses), or None.  A name that passes here is still
    resolved and checked when the fetch connects."""
    if any(ord(c) < 0x21 or c in "\\\x7f" for c in url):
        return "must not hold spaces, control characters or backslashes"
    try:
        parts = urlsplit(url)
        netloc_host = parts.hostname
        _ = parts.port
    except ValueError:
        return "must be a valid http(s) URL"
    if parts.scheme not in ("http", "https"):
        return "must be an http or https URL"
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        return "must not carry credentials (user@host) in the URL"
    if not netloc_host:
        return "must name a host"
    bracketed = f"[{netloc_host}]" if ":" in netloc_host else netloc_host
    try:
        host = normalize_host(bracketed)
    except HostError as err:
        return str(err)
    return host_refusal(host, policy)
