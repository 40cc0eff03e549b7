"""The one module that touches kmock's private API, and the kmock version it is written for.

kmock parses requests, runs the reactions of its DSL (``emulator['patch', ...] << 500``) and
serves discovery, but its object handling lacks what the operators rely on: no
``resourceVersion``, ``uid`` or ``generation`` on stored objects, 500 for a failed JSON-patch
``test``, watches that ignore ``?resourceVersion=``, ``/status`` patches that change the whole
object, ``GET /api/v1/namespaces`` answering 500, core discovery saying ``groupVersion: /v1``.
The emulator (`kaito_sandbox.sim.emulator`) replaces the object handling and keeps the rest,
which needs more than kmock's public names offer:

- its path parser and action guess (``kmock._internal.parsing``), to fill kmock's ``Request``
  for paths its own parser gets wrong, so that DSL reactions still match;
- ``Response`` and ``StreamingError`` (``kmock._internal.rendering``): answers with an explicit
  status, and ending a response that failed mid-stream;
- its bundled discovery data (``resources.json.gz``; ``ResourcesArray.load_bundled`` uses a
  deprecated importlib call);
- its private hooks: the request entry and history (``_requests``, ``_payloads``), ``_handle``
  (to skip ``KubernetesEmulator``'s object tracking), ``_render_error``, ``_get_resources`` and
  ``_serve_version`` (discovery).

:class:`KmockFrontEnd` holds all of that; its subclass sees only :meth:`served_types`, the
``request_log`` and kmock's public DSL.  Private APIs change without notice, so the version is
pinned exactly (``kmock==0.8`` in the ``sandbox`` extra) and checked when this module is
imported: with any other version the emulator fails at once with a message saying so, instead
of misbehaving somewhere in a test.
"""

from __future__ import annotations

import gzip
import importlib.metadata
import importlib.resources
import json
import threading
from collections.abc import Iterable
from typing import Any

import aiohttp.web
import attrs
import kmock

from kaito_sandbox.sim import errors
from kaito_sandbox.sim.errors import ApiError
from kaito_sandbox.sim.routing import RequestRecord, parse_target, verb_of
from kaito_sandbox.sim.store import ResourceType

#: The kmock release whose private API this module uses (the `sandbox` extra pins it).
KMOCK_VERSION = "0.8"


class KmockVersionError(ImportError):
    """The installed kmock is not the release this module was written against."""


def check_kmock_version(installed: str | None = None) -> None:
    """Raise :class:`KmockVersionError` unless kmock is :data:`KMOCK_VERSION`."""
    if installed is None:
        try:
            installed = importlib.metadata.version("kmock")
        except importlib.metadata.PackageNotFoundError:
            installed = "none"
    if installed != KMOCK_VERSION:
        raise KmockVersionError(
            f"kaito_sandbox's Kubernetes API emulator needs kmock=={KMOCK_VERSION} (it uses "
            f"kmock's private API, see {__name__}); kmock {installed} is installed. "
            f"Install the sandbox extra: pip install -e '.[sandbox]'"
        )


check_kmock_version()

# Only after the version check: these names exist in kmock 0.8 and may not in another release.
from kmock._internal import apps, parsing, rendering  # noqa: E402

#: A reaction's answer with status, headers and payload (kmock 0.8 does not export it).
Response = rendering.Response

__all__ = [
    "KMOCK_VERSION",
    "KmockFrontEnd",
    "KmockVersionError",
    "Response",
    "bundled_resources",
    "check_kmock_version",
]


def bundled_resources() -> kmock.ResourcesArray:
    """The built-in kinds of kmock's bundled discovery data (a recent k3s)."""
    bundled = kmock.ResourcesArray()
    blob = importlib.resources.files("kmock._internal").joinpath("resources.json.gz").read_bytes()
    bundled.load_data(gzip.decompress(blob))
    return bundled


@attrs.define(kw_only=True)
class KmockFrontEnd(kmock.KubernetesEmulator):
    """kmock's request entry, request history and discovery, on the resource types of
    :meth:`served_types`; every request also goes to ``request_log`` as a
    :class:`~kaito_sandbox.sim.routing.RequestRecord` with its verb and status."""

    request_log: list[RequestRecord] = attrs.field(factory=list, init=False)
    _log_lock: threading.Lock = attrs.field(factory=threading.Lock, init=False)
    _records: dict[int, RequestRecord] = attrs.field(factory=dict, init=False)
    # kmock keeps every request (bodies included) for its DSL assertions; a long-lived sandbox
    # would grow without bound, so only the most recent ones are kept.
    history_limit: int = 100_000
    _request_counter: int = attrs.field(default=0, init=False)

    def served_types(self) -> Iterable[ResourceType]:
        """The resource types to show in discovery. The override point of this front end:
        `FaithfulKubernetesEmulator` (emulator.py) serves the objects and says which types;
        the front end has none of its own, so calling it here is a programming error."""
        raise NotImplementedError(f"{type(self).__name__} must override served_types()")

    # --- request entry, parsing and the request log ---------------------------------------------

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        """kmock's entry point, with a parser that does not choke on ``/api/v1/namespaces``."""
        raw_response: aiohttp.web.StreamResponse | None = None
        try:
            request = await self._parse(raw_request)
            self._requests.append(request)
            self._trim_history()
            try:
                return await self._handle(request)
            except rendering.StreamingError as e:
                raw_response = e.args[0]
                raise (e.__cause__ or e) from None
        except Exception as e:
            if raw_response is None or not raw_response.prepared:
                return await self._render_error(e)
            await self._stream_error(e, raw_response)
            await raw_response.write_eof()
            return raw_response

    def _next_id(self) -> int:
        self._request_counter += 1
        return self._request_counter

    def _trim_history(self) -> None:
        limit = self.history_limit
        if len(self._requests) <= limit + limit // 4:
            return
        del self._requests[:-limit]
        for payload in self._payloads:
            kept = getattr(payload, "_requests", None)  # kmock Reaction's own request list
            if isinstance(kept, list) and len(kept) > limit:
                del kept[:-limit]
        with self._log_lock:
            del self.request_log[:-limit]

    async def _parse(self, raw_request: aiohttp.web.BaseRequest) -> kmock.Request:
        body = await raw_request.read()
        try:
            data = json.loads(body) if body else None
        except ValueError:
            data = _yaml(body) if "yaml" in raw_request.headers.get("Content-Type", "") else None
        params = dict(raw_request.query)
        target = parse_target(raw_request.path)
        if target is not None:
            parsed = parsing.ParsedPath(
                target.group,
                target.version,
                target.plural,
                target.namespace,
                target.name,
                target.subresource,
            )
        else:
            parsed = parsing.parse_path(raw_request.path)
        method = kmock.method(raw_request.method)
        resource = (
            None
            if parsed.group is None
            else kmock.resource(group=parsed.group, version=parsed.version, plural=parsed.plural)
        )
        record = RequestRecord(
            method=raw_request.method,
            path=raw_request.path,
            query=params,
            user_agent=raw_request.headers.get("User-Agent", ""),
        )
        if target is not None:
            record.verb = verb_of(raw_request.method, target, params)
            record.group, record.version, record.resource = (
                target.group,
                target.version,
                target.plural,
            )
            record.subresource, record.namespace, record.name = (
                target.subresource,
                target.namespace,
                target.name,
            )
        request = kmock.Request(
            id=self._next_id(),
            raw_request=raw_request,
            url=raw_request.url,
            method=method,
            params=params,
            headers=dict(raw_request.headers),
            cookies=dict(raw_request.cookies),
            data=data,
            body=body,
            text=body.decode("utf-8", "replace"),
            action=parsing.guess_k8s(parsed, method, params),
            resource=resource,
            namespace=parsed.namespace,
            name=parsed.name,
            subresource=parsed.subresource,
        )
        with self._log_lock:
            self.request_log.append(record)
        self._records[request.id] = record
        return request

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        # Skip KubernetesEmulator._handle: its object tracking is what the subclass replaces.
        record = self._records.pop(request.id, None)
        try:
            response = await apps.RawHandler._handle(self, request)
        except ApiError as e:
            if record is not None:
                record.status = e.code
            raise
        except Exception as e:
            if record is not None and record.status is None:
                record.status = getattr(e, "status", 500)
            raise
        if record is not None and record.status is None:
            record.status = response.status
        return response

    async def _render_error(self, exc: Exception) -> aiohttp.web.StreamResponse:
        if isinstance(exc, ApiError):
            return aiohttp.web.json_response(exc.body(), status=exc.code)
        return await super()._render_error(exc)

    # --- discovery ------------------------------------------------------------------------------

    def _get_resources(self) -> list[kmock.resource]:
        declared = set(super()._get_resources())
        served = {kmock.resource(*t.key) for t in self.served_types()}
        return list(declared | served)

    async def _serve_version(self, request: kmock.Request) -> kmock.Payload:
        """APIResourceList with ``groupVersion: v1`` for the core group (kmock says ``/v1``)."""
        assert request.resource is not None
        group, version = request.resource.group or "", request.resource.version or ""
        rtypes = [t for t in self.served_types() if (t.group, t.version) == (group, version)]
        if not rtypes:
            raise errors.ApiError(
                404, "NotFound", "the server could not find the requested resource"
            )
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": _resource_list(rtypes),
        }


def _resource_list(rtypes: list[ResourceType]) -> list[dict[str, Any]]:
    """Discovery entries of ``rtypes`` and their subresources, sorted by plural."""
    resources: list[dict[str, Any]] = []
    for t in sorted(rtypes, key=lambda t: t.plural):
        resources.append(
            {
                "name": t.plural,
                "singularName": t.singular or t.kind.lower(),
                "namespaced": t.namespaced,
                "kind": t.kind,
                "verbs": list(t.verbs),
                "shortNames": list(t.short_names),
            }
        )
        for sub in sorted(set(t.subresources) | ({"status"} if t.status_subresource else set())):
            resources.append(
                {
                    "name": f"{t.plural}/{sub}",
                    "singularName": "",
                    "namespaced": t.namespaced,
                    "kind": t.kind,
                    "verbs": ["get", "patch", "update"],
                }
            )
    return resources


def _yaml(body: bytes) -> Any:
    """Server-side apply bodies may be YAML (kubectl sends JSON, which is YAML too)."""
    import yaml  # only for apply-patch+yaml requests

    try:
        return yaml.safe_load(body)
    except yaml.YAMLError:
        return None
