"""The runtime decision: resolve a host once, check every address, dial only checked addresses.

An :class:`EgressGuard` resolves each host name one time (all A and AAAA records), refuses the
host when any record is refused by the :class:`~kaito_egress.policy.Policy`, and remembers
(pins) the checked addresses for its lifetime, so the address that is dialled is always one
that was checked: a second, rebinding DNS answer is never asked for.  The HTTP clients in
`kaito_egress.http` and `kaito_egress.requests_adapter` open their sockets through
:meth:`EgressGuard.connect`.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Callable

from kaito_egress.policy import (
    HostError,
    IPAddress,
    Policy,
    address_refusal,
    host_refusal,
    normalize_host,
)

ALLOW_LOOPBACK_ENV = "KAITO_EGRESS_ALLOW_LOOPBACK"
ALLOW_PRIVATE_ENV = "KAITO_EGRESS_ALLOW_PRIVATE"
MAX_ADDRESSES = 32

#: name, port → the addresses DNS gives for it.
Resolver = Callable[[str, int], list[IPAddress]]
#: checked address, port → the socket address to connect to (the identity outside tests).
Dialer = Callable[[IPAddress, int], tuple[str, int]]


class EgressError(Exception):
    """A fetch that must not or cannot go on; the message is one line meant for the user."""


class EgressRefused(EgressError):
    """The target (or a redirect hop) is not allowed by the egress policy."""


class ResolutionFailed(OSError):
    """DNS gave no usable answer (transient: callers may retry)."""


def system_resolver(name: str, port: int) -> list[IPAddress]:
    """Every address `getaddrinfo` returns for `name` (A and AAAA), in its order."""
    try:
        infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as err:
        raise ResolutionFailed(f"cannot resolve {name}: {err}") from err
    found: list[IPAddress] = []
    for *_, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in found:
            found.append(address)
    return found


def direct_dialer(address: IPAddress, port: int) -> tuple[str, int]:
    return str(address), port


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


class EgressGuard:
    """Checks and pins the addresses of every host a fetch connects to."""

    def __init__(self, policy: Policy | None = None, *, resolver: Resolver = system_resolver,
                 dialer: Dialer = direct_dialer) -> None:
        self.policy = policy or Policy()
        self._resolver = resolver
        self._dialer = dialer
        self._pins: dict[str, list[IPAddress]] = {}

    @classmethod
    def from_env(cls, *, allow_private: bool | None = None) -> EgressGuard:
        """The policy of this process: loopback only when `KAITO_EGRESS_ALLOW_LOOPBACK=1`
        (tests, the local sandbox), private ranges when `allow_private` (a flag) or
        `KAITO_EGRESS_ALLOW_PRIVATE=1` says so."""
        private = _flag(ALLOW_PRIVATE_ENV) if allow_private is None else allow_private
        return cls(Policy(allow_private=private, allow_loopback=_flag(ALLOW_LOOPBACK_ENV)))

    def addresses(self, host: str, port: int) -> list[IPAddress]:
        """The checked addresses of `host` (resolved at most once per guard); raises
        EgressRefused for a refused host or record, ResolutionFailed when DNS fails."""
        try:
            parsed = normalize_host(host)
        except HostError as err:
            raise EgressRefused(f"refusing to connect: {err}") from err
        if why := host_refusal(parsed, self.policy):
            raise EgressRefused(f"refusing to connect to {host}: {why}")
        if parsed.address is not None:
            return [parsed.address]
        pinned = self._pins.get(parsed.name)
        if pinned is not None:
            return pinned
        try:
            found = self._resolver(parsed.name, port)[:MAX_ADDRESSES]
        except ResolutionFailed:
            raise
        except OSError as err:
            raise ResolutionFailed(f"cannot resolve {parsed.name}: {err}") from err
        if not found:
            raise ResolutionFailed(f"cannot resolve {parsed.name}: no addresses")
        for address in found:
            if why := address_refusal(address, self.policy):
                raise EgressRefused(f"refusing to connect to {parsed.name}, which resolves to "
                                    f"{address}: {why}")
        self._pins[parsed.name] = found
        return found

    def targets(self, host: str, port: int) -> list[tuple[str, int]]:
        """Socket addresses to try for `host:port`, each one a checked address."""
        return [self._dialer(address, port) for address in self.addresses(host, port)]

    def connect(self, host: str, port: int, timeout: float | None) -> socket.socket:
        """A TCP connection to the first checked address of `host` that answers."""
        last: OSError | None = None
        for target in self.targets(host, port):
            try:
                return socket.create_connection(target, timeout)
            except OSError as err:
                last = err
        raise last or ResolutionFailed(f"cannot connect to {host}")
