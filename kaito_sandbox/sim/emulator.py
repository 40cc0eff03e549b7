"""kmock's ``KubernetesEmulator`` with the HTTP semantics of a real API server.

kmock 0.8 parses and routes requests and serves discovery; its object handling lacks what the
operators rely on (see STACK-NOTES.md "kmock ... with kopf").  This subclass keeps kmock's
request parsing, DSL reactions and discovery scaffold, and replaces object handling by
:class:`~kaito_sandbox.sim.store.Store`.  User reactions (``emulator['patch', ...] << 500``) still
take precedence over the emulated behaviour; ``faults`` (an
:class:`~kaito_sandbox.sim.api_faults.ApiFaultTable`) answers chosen requests with an error.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import importlib.resources
import json
import threading
from typing import Any

import aiohttp.web
import attrs
import kmock
from kmock._internal import apps, enums, parsing, references, rendering

from kaito_sandbox.sim import errors
from kaito_sandbox.sim.api_faults import ApiFaultTable
from kaito_sandbox.sim.collector import collect_garbage
from kaito_sandbox.sim.errors import ApiError
from kaito_sandbox.sim.patching import (
    PatchError,
    apply_json_patch,
    apply_merge_patch,
    apply_strategic_merge_patch,
)
from kaito_sandbox.sim.routing import RequestRecord, Target, parse_target, verb_of
from kaito_sandbox.sim.selectors import FieldSelector, LabelSelector, SelectorError
from kaito_sandbox.sim.store import ResourceType, Store
from kaito_sandbox.sim.watching import WatchHub

__all__ = ["FaithfulKubernetesEmulator", "RequestRecord"]

_JSON = {"Content-Type": "application/json"}


def _yaml(body: bytes) -> Any:
    """Server-side apply bodies may be YAML (kubectl sends JSON, which is YAML too)."""
    import yaml  # only for apply-patch+yaml requests

    try:
        return yaml.safe_load(body)
    except yaml.YAMLError:
        return None


def _ok(payload: Any, status: int = 200) -> rendering.Response:
    """Always an explicit status: kmock keeps the last status on the shared fallback reaction."""
    return rendering.Response(status=status, headers=_JSON, payload=payload)


@attrs.define(kw_only=True)
class FaithfulKubernetesEmulator(kmock.KubernetesEmulator):
    """A Kubernetes API emulator that behaves like a real API server for the operators' needs."""

    store: Store = attrs.field(factory=Store, init=False)
    request_log: list[RequestRecord] = attrs.field(factory=list, init=False)
    _log_lock: threading.Lock = attrs.field(factory=threading.Lock, init=False)
    _records: dict[int, RequestRecord] = attrs.field(factory=dict, init=False)
    watches: WatchHub = attrs.field(init=False)
    _gc_scheduled: bool = attrs.field(default=False, init=False)
    gc_errors: list[ApiError] = attrs.field(factory=list, init=False)
    faults: ApiFaultTable = attrs.field(factory=ApiFaultTable, init=False)
    # kmock keeps every request (bodies included) for its DSL assertions; a long-lived sandbox
    # would grow without bound, so only the most recent ones are kept.
    history_limit: int = 100_000
    _request_counter: int = attrs.field(default=0, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.watches = WatchHub(self.store)
        # Ahead of kmock's own fallbacks, behind any reaction a test adds.
        (self.fallback**1) << self._serve_resource
        for probe in ("/healthz", "/livez", "/readyz"):
            self.fallback[f"get {probe}"] << b"ok"

    # --- registration ---------------------------------------------------------------------------

    def register(self, rtype: ResourceType) -> None:
        """Serve a resource and show it in discovery (kopf needs discovery, not a CRD object)."""
        self.store.register(rtype)

    def load_builtins(self) -> None:
        """Serve the built-in kinds of kmock's bundled discovery data (a recent k3s)."""
        bundled = kmock.ResourcesArray()
        # Same data as ResourcesArray.load_bundled(), without its deprecated importlib call.
        blob = (
            importlib.resources.files("kmock._internal").joinpath("resources.json.gz").read_bytes()
        )
        bundled.load_data(gzip.decompress(blob))
        for res in bundled:
            info = bundled[res]
            assert res.group is not None and res.version is not None and res.plural is not None
            self.register(
                ResourceType(
                    group=res.group,
                    version=res.version,
                    plural=res.plural,
                    kind=info.kind or res.plural.capitalize(),
                    namespaced=bool(info.namespaced),
                    status_subresource="status" in info.subresources,
                    singular=info.singular or "",
                    short_names=tuple(sorted(info.shortnames)),
                    subresources=tuple(sorted(info.subresources)),
                    verbs=tuple(sorted(info.verbs)),
                )
            )

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

    async def _parse(self, raw_request: aiohttp.web.BaseRequest) -> rendering.Request:
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
        method = enums.method(raw_request.method)
        resource = (
            None
            if parsed.group is None
            else references.resource(
                group=parsed.group, version=parsed.version, plural=parsed.plural
            )
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
        request = rendering.Request(
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

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        # Skip KubernetesEmulator._handle: its object tracking is what this class replaces.
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

    # --- discovery fixes ------------------------------------------------------------------------

    def _get_resources(self) -> list[references.resource]:
        declared = set(super()._get_resources())
        return list(declared | {references.resource(*key) for key in self.store.types})

    async def _serve_version(self, request: rendering.Request) -> rendering.Payload:
        """APIResourceList with ``groupVersion: v1`` for the core group (kmock says ``/v1``)."""
        assert request.resource is not None
        group, version = request.resource.group or "", request.resource.version or ""
        rtypes = [t for t in self.store.types.values() if (t.group, t.version) == (group, version)]
        if not rtypes:
            raise errors.ApiError(
                404, "NotFound", "the server could not find the requested resource"
            )
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
            for sub in sorted(
                set(t.subresources) | ({"status"} if t.status_subresource else set())
            ):
                resources.append(
                    {
                        "name": f"{t.plural}/{sub}",
                        "singularName": "",
                        "namespaced": t.namespaced,
                        "kind": t.kind,
                        "verbs": ["get", "patch", "update"],
                    }
                )
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": resources,
        }

    # --- resource requests ----------------------------------------------------------------------

    def _serve_resource(self, request: rendering.Request) -> rendering.Payload:
        target = parse_target(request.url.path)
        if target is None:
            # kmock's protocol: NotImplementedError from a reaction means "matched but nothing
            # to answer", so its other reactions (discovery, version) get the request.
            raise NotImplementedError
        try:
            return self._dispatch(request, target)
        except ApiError as e:
            return rendering.Response(status=e.code, headers=_JSON, payload=e.body())
        finally:
            self._schedule_gc()

    def _dispatch(self, request: rendering.Request, target: Target) -> rendering.Payload:
        rtype = self.store.find_type(target.group, target.version, target.plural)
        if rtype is None or (target.namespace is not None and not rtype.namespaced):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        verb = verb_of(str(request.method.value), target, dict(request.params))
        if verb not in rtype.verbs:
            raise ApiError(
                405,
                "MethodNotAllowed",
                f"the server does not allow this method on the requested "
                f"resource: {verb} {rtype.plural}",
            )
        if target.subresource not in (None, "status") or (
            target.subresource and not rtype.status_subresource
        ):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if rtype.namespaced and target.name is not None and target.namespace is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        params = dict(request.params)
        dry_run = params.get("dryRun") == "All"
        if params.get("dryRun") not in (None, "", "All"):
            raise errors.bad_request(f"unsupported dryRun value {params['dryRun']!r}")
        ns, name, data = target.namespace, target.name, request.data
        body_meta = data.get("metadata") if isinstance(data, dict) else None
        named = name or (body_meta.get("name") if isinstance(body_meta, dict) else None)
        fault = self.faults.take(verb, target.group, target.plural, ns, named, target.subresource)
        if fault is not None:
            raise fault
        store = self.store
        if verb == "watch":
            return _ok(self.watches.open(rtype, target, params))
        if verb == "list":
            return _ok(self._list(rtype, ns, params))
        if verb == "get":
            assert name is not None
            return _ok(store.get(rtype, ns, name))
        if verb == "create":
            if target.name is not None or target.subresource is not None:
                raise ApiError(405, "MethodNotAllowed", "POST is not allowed on a named object")
            if rtype.namespaced and ns is None:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            created = store.create(rtype, ns, data, dry_run=dry_run)
            return _ok(created, 201)
        assert name is not None or verb == "deletecollection"
        if verb == "update":
            assert name is not None
            return _ok(
                store.update(rtype, ns, name, data, target.subresource, dry_run=dry_run, put=True)
            )
        if verb == "patch":
            assert name is not None
            return self._patch(request, rtype, ns, name, target.subresource, dry_run)
        if verb == "delete":
            assert name is not None
            return _ok(store.delete(rtype, ns, name, data, dry_run=dry_run))
        if verb == "deletecollection":
            labels = LabelSelector.parse(params.get("labelSelector"))
            fields = FieldSelector.parse(params.get("fieldSelector"), rtype.plural)
            items = [
                store.delete(
                    rtype,
                    o["metadata"].get("namespace"),
                    o["metadata"]["name"],
                    data,
                    dry_run=dry_run,
                )
                for o in store.list(rtype, ns, labels, fields)
            ]
            return _ok(
                {
                    "kind": f"{rtype.kind}List",
                    "apiVersion": rtype.api_version,
                    "metadata": {"resourceVersion": str(store.rv)},
                    "items": items,
                }
            )
        raise ApiError(405, "MethodNotAllowed", f"method {request.method} is not allowed")

    def _patch(
        self,
        request: rendering.Request,
        rtype: ResourceType,
        ns: str | None,
        name: str,
        subresource: str | None,
        dry_run: bool,
    ) -> rendering.Payload:
        content_type = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        patch = request.data
        try:
            if content_type == "application/apply-patch+yaml":
                # Server-side apply, approximated: merge patch, creating the object when absent.
                try:
                    old = self.store.get(rtype, ns, name)
                except ApiError:
                    return _ok(self.store.create(rtype, ns, patch, dry_run=dry_run), 201)
                new = apply_merge_patch(old, patch)
            else:
                old = self.store.get(rtype, ns, name)
                if content_type == "application/json-patch+json":
                    new = apply_json_patch(old, patch)
                elif content_type == "application/merge-patch+json":
                    new = apply_merge_patch(old, patch)
                elif content_type == "application/strategic-merge-patch+json":
                    if rtype.custom:
                        raise ApiError(
                            415,
                            "UnsupportedMediaType",
                            "the body of the request was in an unknown "
                            "format - accepted media types include: application/json-patch+json, "
                            "application/merge-patch+json, application/apply-patch+yaml",
                        )
                    new = apply_strategic_merge_patch(old, patch)
                else:
                    raise ApiError(
                        415, "UnsupportedMediaType", f"unsupported patch type {content_type!r}"
                    )
        except PatchError as e:
            raise errors.ApiError(
                422,
                "Invalid",
                f"the server rejected our request due to an error in our request: {e}",
            ) from None
        return _ok(self.store.update(rtype, ns, name, new, subresource, dry_run=dry_run))

    def _list(self, rtype: ResourceType, ns: str | None, params: dict[str, str]) -> dict[str, Any]:
        try:
            labels = LabelSelector.parse(params.get("labelSelector"))
            fields = FieldSelector.parse(params.get("fieldSelector"), rtype.plural)
        except SelectorError as e:
            raise errors.bad_request(str(e)) from None
        items = self.store.list(rtype, ns, labels, fields)
        list_rv, after = str(self.store.rv), None
        if params.get("continue"):
            try:
                token = json.loads(base64.urlsafe_b64decode(params["continue"]))
                list_rv, after = token["rv"], tuple(token["after"])
            except (ValueError, KeyError, TypeError):
                raise errors.bad_request("continue key is not valid") from None
            items = [
                i
                for i in items
                if (i["metadata"].get("namespace") or "", i["metadata"]["name"]) > after
            ]
        meta: dict[str, Any] = {"resourceVersion": list_rv}
        limit = int(params.get("limit") or 0)
        if 0 < limit < len(items):
            last = items[limit - 1]["metadata"]
            cont = {"rv": list_rv, "after": [last.get("namespace") or "", last["name"]]}
            meta["continue"] = base64.urlsafe_b64encode(json.dumps(cont).encode()).decode()
            meta["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        return {
            "kind": f"{rtype.kind}List",
            "apiVersion": rtype.api_version,
            "metadata": meta,
            "items": items,
        }

    def close_watches(self) -> None:
        """End every live watch stream (on shutdown), so that the server stops quickly."""
        self.watches.close_all()

    # --- garbage collection ---------------------------------------------------------------------

    def _schedule_gc(self) -> None:
        """The GC runs asynchronously, after the response, like the controller-manager's."""
        if self.store.gc_pending and not self._gc_scheduled:
            self._gc_scheduled = True
            asyncio.get_running_loop().call_soon(self._run_gc)

    def _run_gc(self) -> None:
        self._gc_scheduled = False
        try:
            collect_garbage(self.store)
        except ApiError as e:  # a GC step lost a race; the next write schedules another pass
            self.store.gc_pending = True
            self.gc_errors.append(e)
