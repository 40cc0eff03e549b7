"""httpx through the egress guard: checked connections and self-followed, re-checked redirects.

:class:`GuardedTransport` is httpx's own transport with a network backend that opens every TCP
connection through :meth:`EgressGuard.connect`, i.e. to an address that was checked; the Host
header, TLS SNI and certificate verification still use the URL's host name.  :func:`open_stream`
sends a GET and follows redirects itself: each hop is checked before it is sent (scheme, host,
addresses), `https` never redirects to `http`, the number of hops is bounded, a loop is named as
one, and credentials are dropped when a hop leaves the original origin.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable, Iterator

import httpcore
import httpx

from kaito_egress.guard import EgressGuard, EgressRefused, ResolutionFailed
from kaito_egress.limits import Deadline
from kaito_egress.policy import Policy, url_refusal

MAX_REDIRECTS = 10
REDIRECT_STATUSES = {301, 302, 303, 307, 308}


class _GuardedBackend(httpcore.NetworkBackend):
    """httpcore's sync backend, dialling only the guard's checked addresses."""

    def __init__(self, guard: EgressGuard) -> None:
        self._guard = guard
        self._inner = httpcore.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
                    ) -> httpcore.NetworkStream:
        try:
            targets = self._guard.targets(host, port)
        except ResolutionFailed as err:
            raise httpcore.ConnectError(str(err)) from err
        last: Exception | None = None
        for address, target_port in targets:
            try:
                return self._inner.connect_tcp(address, target_port, timeout,
                                               local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as err:
                last = err
        raise last or httpcore.ConnectError(f"cannot connect to {host}")

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
                            ) -> httpcore.NetworkStream:
        raise EgressRefused("unix sockets are not an egress target")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class GuardedTransport(httpx.HTTPTransport):
    """An `httpx.HTTPTransport` (no proxies, no environment) whose connections go through
    the guard."""

    def __init__(self, guard: EgressGuard, *, verify: ssl.SSLContext | bool = True) -> None:
        super().__init__(verify=verify, trust_env=False)
        context = verify if isinstance(verify, ssl.SSLContext) else httpx.create_ssl_context(
            verify=verify, trust_env=False)
        # The parent built a pool with the default network backend; this one replaces it.
        self._pool = httpcore.ConnectionPool(ssl_context=context, max_connections=20,
                                             max_keepalive_connections=10,
                                             keepalive_expiry=5.0,
                                             network_backend=_GuardedBackend(guard))


def guarded_client(guard: EgressGuard, *, transport: httpx.BaseTransport | None = None,
                   verify: ssl.SSLContext | bool = True) -> httpx.Client:
    """A client that never follows redirects by itself and ignores proxy variables; use
    :func:`open_stream` to send requests through it."""
    return httpx.Client(transport=transport or GuardedTransport(guard, verify=verify),
                        follow_redirects=False, trust_env=False,
                        timeout=httpx.Timeout(30.0, connect=10.0))


def parse_url(url: str | httpx.URL, policy: Policy) -> httpx.URL:
    """`url` as httpx reads it; EgressRefused with the reason when it cannot be used."""
    text = str(url)
    if why := url_refusal(text, policy):
        raise EgressRefused(f"refusing {shown(text)}: {why}")
    try:
        parsed = httpx.URL(text)
    except (httpx.InvalidURL, ValueError, TypeError) as err:
        raise EgressRefused(f"refusing {shown(text)}: the URL cannot be parsed ({err})") from err
    return parsed


def shown(text: str, limit: int = 200) -> str:
    """`text` shortened for a one-line message (a hostile Location can be kilobytes long)."""
    return text if len(text) <= limit else text[:limit] + "…"


def _precheck(guard: EgressGuard, url: httpx.URL, request: httpx.Request) -> None:
    """Resolve and check the hop's host before anything is sent (the connection reuses the
    pinned answer)."""
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        guard.addresses(url.host, port)
    except ResolutionFailed as err:
        raise httpx.ConnectError(str(err), request=request) from err


def _timeout(deadline: Deadline | None, read: float, connect: float) -> httpx.Timeout:
    left = deadline.remaining() if deadline else read
    left = max(left, 0.001)
    return httpx.Timeout(min(read, left), connect=min(connect, left))


def open_stream(client: httpx.Client, guard: EgressGuard, url: str | httpx.URL, *,
                headers: dict[str, str] | None = None, deadline: Deadline | None = None,
                read_timeout: float = 30.0, connect_timeout: float = 10.0,
                max_redirects: int = MAX_REDIRECTS, credentials_over_http: bool = False,
                ) -> httpx.Response:
    """GET `url`, following at most `max_redirects` checked redirects; returns the final
    streamed response (the caller closes it).  `credentials_over_http` must be set for an
    Authorization header to be sent over plain http (only to allowed loopback literals)."""
    current = parse_url(url, guard.policy)
    origin = (current.scheme, current.host, current.port)
    sent = dict(headers or {})
    seen: set[str] = set()
    for hop in range(max_redirects + 1):
        if deadline:
            deadline.check()
        if current.scheme == "http" and "authorization" in {k.lower() for k in sent} \
                and not credentials_over_http:
            raise EgressRefused(f"refusing to send credentials over plain http to "
                                f"{current.host}")
        request = client.build_request("GET", current, headers=sent,
                                       timeout=_timeout(deadline, read_timeout,
                                                        connect_timeout))
        _precheck(guard, current, request)
        seen.add(str(current))
        try:
            response = client.send(request, stream=True)
        except httpx.RemoteProtocolError as err:
            if "location header" not in str(err):
                raise
            raise EgressRefused(f"redirect from {current} to an unparsable location "
                                f"({err})") from err
        location = response.headers.get("location")
        if response.status_code not in REDIRECT_STATUSES or location is None:
            return response
        response.close()
        try:
            target = parse_url(current.join(location), guard.policy)
        except (httpx.InvalidURL, ValueError) as err:
            raise EgressRefused(f"redirect from {current} to an unparsable location "
                                f"{shown(location)!r}") from err
        if current.scheme == "https" and target.scheme != "https":
            raise EgressRefused(f"refusing a redirect from https to plain http ({current} → "
                                f"{shown(str(target))})")
        if str(target) in seen:
            raise EgressRefused(f"redirect loop: {target} was already visited")
        if hop == max_redirects:
            raise EgressRefused(f"more than {max_redirects} redirects starting at {url}")
        if (target.scheme, target.host, target.port) != origin:
            sent = {k: v for k, v in sent.items() if k.lower() != "authorization"}
        current = target
    raise AssertionError("unreachable")


def raw_chunks(response: httpx.Response) -> Iterator[bytes]:
    """The response body as received (no decoding), each piece as soon as the network gives
    it (no re-chunking, so a trickle is seen as one).  A response built in memory (an
    `httpx.MockTransport` answer) has already been read; its bytes are given as one chunk."""
    if response.is_stream_consumed:
        yield response.content
        return
    yield from response.iter_raw()
