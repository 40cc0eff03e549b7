"""requests (used by oras-py for the adapter push) through the egress guard.

:func:`guard_session` mounts a :class:`GuardedAdapter` on a `requests.Session`: every request is
checked before it is sent (URL, host, resolved addresses, pinned by the guard), its sockets are
opened by :meth:`EgressGuard.connect` (TLS SNI and certificate checks keep the URL's name),
redirects are bounded and may not go from https to plain http, and proxy variables are ignored.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from kaito_egress.guard import EgressGuard, EgressRefused, ResolutionFailed
from kaito_egress.policy import url_refusal

MAX_REDIRECTS = 10


class RequestsEgressRefused(EgressRefused, requests.exceptions.SSLError):
    """A refusal raised inside requests.  It is also an `SSLError` because oras-py re-raises
    those at once instead of retrying them for minutes."""


def _connection_class(base: type[HTTPConnection], guard: EgressGuard) -> type[HTTPConnection]:
    def _new_conn(self: HTTPConnection) -> Any:
        timeout = self.timeout if isinstance(self.timeout, int | float) else None
        try:
            return guard.connect(self.host, self.port or 0, timeout)
        except TimeoutError as err:
            raise ConnectTimeoutError(self, f"connection to {self.host} timed out") from err
        except (EgressRefused, OSError) as err:
            raise NewConnectionError(self, str(err)) from err

    return type(f"Guarded{base.__name__}", (base,), {"_new_conn": _new_conn})


class GuardedAdapter(HTTPAdapter):
    """An HTTPAdapter whose pools connect through the guard and which pre-checks each URL."""

    def __init__(self, guard: EgressGuard, **kwargs: Any) -> None:
        self._guard = guard
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        http_conn = _connection_class(HTTPConnection, self._guard)
        https_conn = _connection_class(HTTPSConnection, self._guard)
        self.poolmanager.pool_classes_by_scheme = {
            "http": type("GuardedHTTPPool", (HTTPConnectionPool,), {"ConnectionCls": http_conn}),
            "https": type("GuardedHTTPSPool", (HTTPSConnectionPool,),
                          {"ConnectionCls": https_conn}),
        }

    def send(self, request: requests.PreparedRequest, *args: Any,
             **kwargs: Any) -> requests.Response:
        url = request.url or ""
        if why := url_refusal(url, self._guard.policy):
            raise RequestsEgressRefused(f"refusing {url}: {why}")
        parts = urlsplit(url)
        try:
            self._guard.addresses(parts.hostname or "",
                                  parts.port or (443 if parts.scheme == "https" else 80))
        except ResolutionFailed as err:
            raise requests.exceptions.ConnectionError(str(err), request=request) from err
        except EgressRefused as err:
            raise RequestsEgressRefused(str(err)) from err
        return super().send(request, *args, **kwargs)


def _no_downgrade(response: requests.Response, *args: Any, **kwargs: Any) -> None:
    if response.is_redirect and urlsplit(response.url).scheme == "https":
        target = urljoin(response.url, response.headers.get("location", ""))
        if urlsplit(target).scheme != "https":
            raise RequestsEgressRefused(f"refusing a redirect from https to plain http "
                                        f"({response.url} → {target})")


def guard_session(session: requests.Session, guard: EgressGuard) -> requests.Session:
    """Routes all of `session`'s traffic through `guard` (in place; returns it)."""
    adapter = GuardedAdapter(guard)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.trust_env = False
    session.max_redirects = MAX_REDIRECTS
    session.hooks.setdefault("response", []).append(_no_downgrade)
    return session
