"""A Kubernetes API emulator with the HTTP semantics of a real API server.

:class:`FaithfulKubernetesEmulator` is kmock's ``KubernetesEmulator`` (its request parsing, DSL
reactions and discovery scaffold, through :class:`~kaito_sandbox.sim.kmock_private.KmockFrontEnd`)
with object handling by :class:`~kaito_sandbox.sim.store.Store`: resource versions, uids,
generations, the status subresource, PUT, JSON, merge, strategic-merge and apply patches,
selectors, paging, dry runs, watches from a resource version, and garbage collection.  User
reactions (``emulator['patch', ...] << 500``) still take precedence over the emulated behaviour;
``faults`` (an :class:`~kaito_sandbox.sim.api_faults.ApiFaultTable`) answers chosen requests
with an error.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterable
from typing import Any

import attrs
import kmock

from kaito_sandbox.sim import errors
from kaito_sandbox.sim.api_faults import ApiFaultTable
from kaito_sandbox.sim.collector import collect_garbage
from kaito_sandbox.sim.errors import ApiError
from kaito_sandbox.sim.kmock_private import KmockFrontEnd, Response, bundled_resources
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


def _ok(payload: Any, status: int = 200) -> Response:
    """Always an explicit status: kmock keeps the last status on the shared fallback reaction."""
    return Response(status=status, headers=_JSON, payload=payload)


@attrs.define(kw_only=True)
class FaithfulKubernetesEmulator(KmockFrontEnd):
    """A Kubernetes API emulator that behaves like a real API server for the operators' needs."""

    store: Store = attrs.field(factory=Store, init=False)
    watches: WatchHub = attrs.field(init=False)
    _gc_scheduled: bool = attrs.field(default=False, init=False)
    gc_errors: list[ApiError] = attrs.field(factory=list, init=False)
    faults: ApiFaultTable = attrs.field(factory=ApiFaultTable, init=False)

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
        bundled = bundled_resources()
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

    def served_types(self) -> Iterable[ResourceType]:
        return self.store.types.values()

    # --- resource requests ----------------------------------------------------------------------

    def _serve_resource(self, request: kmock.Request) -> kmock.Payload:
        target = parse_target(request.url.path)
        if target is None:
            # kmock's protocol: NotImplementedError from a reaction means "matched but nothing
            # to answer", so its other reactions (discovery, version) get the request.
            raise NotImplementedError
        try:
            return self._dispatch(request, target)
        except ApiError as e:
            return Response(status=e.code, headers=_JSON, payload=e.body())
        finally:
            self._schedule_gc()

    def _dispatch(self, request: kmock.Request, target: Target) -> kmock.Payload:
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
        request: kmock.Request,
        rtype: ResourceType,
        ns: str | None,
        name: str,
        subresource: str | None,
        dry_run: bool,
    ) -> kmock.Payload:
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
