"""The object store behind the emulated API server: write semantics, history and watch fan-out.

Everything here is synchronous and runs on the emulator's event loop only, so each operation is
atomic with respect to watches: a watch subscribes and snapshots in one step and cannot miss an
event (kmock 0.8 loses events that happen between its snapshot and its subscription).
Stored dicts are never mutated after commit; every write stores a fresh deep copy.
"""

from __future__ import annotations

import builtins
import collections
import copy
import datetime
import random
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from kaito_sandbox.sim import errors
from kaito_sandbox.sim.selectors import FieldSelector, LabelSelector

__all__ = ["ObjKey", "ResourceType", "Store", "WatchEvent"]

TypeKey = tuple[str, str, str]  # (group, version, plural)
ObjKey = tuple[TypeKey, "str | None", str]  # (type, namespace, name)
NAMESPACES: TypeKey = ("", "v1", "namespaces")
CRDS: TypeKey = ("apiextensions.k8s.io", "v1", "customresourcedefinitions")
_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_RANDOM_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # what the apiserver uses for generateName


@dataclass(frozen=True)
class ResourceType:
    """One served resource: what discovery shows and how writes treat it."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    status_subresource: bool = False
    custom: bool = False  # custom resources: no strategic-merge patch, PUT needs resourceVersion
    singular: str = ""
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    verbs: tuple[str, ...] = (
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch",
    )

    @property
    def key(self) -> TypeKey:
        return (self.group, self.version, self.plural)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


@dataclass(frozen=True)
class WatchEvent:
    """One change, kept in a bounded history for ``watch?resourceVersion=N`` replays."""

    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    type_key: TypeKey
    namespace: str | None
    obj: dict[str, Any]
    prev: dict[str, Any] | None = None  # the state before, for selector transitions on watches


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _payload(obj: dict[str, Any]) -> dict[str, Any]:
    """What `generation` tracks: everything but metadata and status (also for the Workspace CRD)."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


@dataclass
class Store:
    """In-memory objects, a cluster-wide resourceVersion counter and watch listeners."""

    history_size: int = 10_000
    types: dict[TypeKey, ResourceType] = field(default_factory=dict)
    rv: int = 0
    history_floor: int = 0  # events with rv <= floor may have been dropped from the history
    gc_pending: bool = False  # set when an owner may be gone; the emulator runs collect_garbage()
    _objects: dict[ObjKey, dict[str, Any]] = field(default_factory=dict)
    _uids: dict[str, ObjKey] = field(default_factory=dict)
    _history: collections.deque[WatchEvent] = field(default_factory=collections.deque)
    _listeners: dict[int, Callable[[WatchEvent], None]] = field(default_factory=dict)

    # --- registry -------------------------------------------------------------------------------

    def register(self, rtype: ResourceType) -> None:
        self.types[rtype.key] = rtype

    def find_type(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self.types.get((group, version, plural))

    # --- watch plumbing -------------------------------------------------------------------------

    def subscribe(self, listener: Callable[[WatchEvent], None]) -> int:
        token = id(listener)
        self._listeners[token] = listener
        return token

    def unsubscribe(self, token: int) -> None:
        self._listeners.pop(token, None)

    def events_since(self, rv: int) -> list[WatchEvent] | None:
        """Events after `rv`, or None when the history no longer reaches back (410 Expired)."""
        if rv < self.history_floor:
            return None
        return [event for event in self._history if event.rv > rv]

    def _emit(self, event: WatchEvent) -> None:
        if len(self._history) >= self.history_size:
            self.history_floor = self._history.popleft().rv
        self._history.append(event)
        for listener in list(self._listeners.values()):
            listener(event)

    def _commit(
        self,
        rtype: ResourceType,
        key: ObjKey,
        kind: str,
        obj: dict[str, Any],
        prev: dict[str, Any] | None,
    ) -> dict[str, Any]:
        self.rv += 1
        obj = copy.deepcopy(obj)
        obj.setdefault("metadata", {})["resourceVersion"] = str(self.rv)
        uid = obj["metadata"].get("uid")
        if kind == "DELETED":
            self._objects.pop(key, None)
            self._uids.pop(uid, None)
            self.gc_pending = True
        else:
            self._objects[key] = obj
            self._uids[uid] = key
        self._emit(WatchEvent(self.rv, kind, rtype.key, key[1], obj, prev))
        if rtype.key == CRDS:
            self._sync_crd(obj, removed=kind == "DELETED")
        return copy.deepcopy(obj)

    # --- reads ----------------------------------------------------------------------------------

    def get(self, rtype: ResourceType, namespace: str | None, name: str) -> dict[str, Any]:
        obj = self._objects.get((rtype.key, namespace, name))
        if obj is None:
            raise errors.not_found(rtype.plural, rtype.group, name)
        return copy.deepcopy(obj)

    def iter_objects(self, rtype: ResourceType, namespace: str | None) -> Iterator[dict[str, Any]]:
        for key in sorted(
            k for k in self._objects if k[0] == rtype.key and namespace in (None, k[1])
        ):
            yield self._objects[key]

    def list(
        self,
        rtype: ResourceType,
        namespace: str | None,
        labels: LabelSelector,
        fields: FieldSelector,
    ) -> list[dict[str, Any]]:
        return [
            copy.deepcopy(obj)
            for obj in self.iter_objects(rtype, namespace)
            if labels.matches(obj) and fields.matches(obj)
        ]

    # --- create ---------------------------------------------------------------------------------

    def create(
        self, rtype: ResourceType, namespace: str | None, body: Any, *, dry_run: bool = False
    ) -> dict[str, Any]:
        if not isinstance(body, dict) or not isinstance(body.get("metadata", {}), dict):
            raise errors.bad_request("the body of the request was in an unknown format")
        if body.get("kind") not in (None, rtype.kind) or body.get("apiVersion") not in (
            None,
            rtype.api_version,
        ):
            raise errors.bad_request(
                f"the API version/kind in the data ({body.get('apiVersion')}/"
                f"{body.get('kind')}) does not match the expected {rtype.api_version}/{rtype.kind}"
            )
        obj = {"apiVersion": rtype.api_version, "kind": rtype.kind, **copy.deepcopy(body)}
        obj["apiVersion"], obj["kind"] = rtype.api_version, rtype.kind
        meta = obj.setdefault("metadata", {})
        if rtype.namespaced:
            if meta.get("namespace") not in (None, "", namespace):
                raise errors.bad_request(
                    "the namespace of the provided object does not match the "
                    "namespace sent on the request"
                )
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
            namespace = None
        name = meta.get("name") or ""
        if not name:
            prefix = meta.get("generateName") or ""
            if not prefix:
                raise errors.invalid(
                    rtype.plural,
                    rtype.group,
                    "",
                    "metadata.name: Required value: name or generateName is required",
                )
            while not name or (rtype.key, namespace, name) in self._objects:
                name = prefix + "".join(random.choices(_RANDOM_ALPHABET, k=5))
            meta["name"] = name
        if len(name) > 253 or not _NAME_RE.match(name):
            raise errors.invalid(
                rtype.plural,
                rtype.group,
                name,
                f'metadata.name: Invalid value: "{name}": a lowercase RFC 1123 subdomain '
                "must consist of lower case alphanumeric characters, '-' or '.'",
            )
        if meta.get("resourceVersion"):
            raise errors.ApiError(
                500,
                "InternalError",
                "Internal error occurred: resourceVersion should "
                "not be set on objects to be created",
            )
        key: ObjKey = (rtype.key, namespace, name)
        if key in self._objects:
            raise errors.already_exists(rtype.plural, rtype.group, name)
        for transient in (
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "resourceVersion",
            "managedFields",
        ):
            meta.pop(transient, None)
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1)
        self._default_status(rtype, obj)
        if namespace is not None:
            ns_obj = self._objects.get((NAMESPACES, None, namespace))
            if ns_obj is not None and _meta(ns_obj).get("deletionTimestamp"):
                raise errors.ApiError(
                    403,
                    "Forbidden",
                    f'{rtype.plural} "{name}" is forbidden: unable to '
                    f"create new content in namespace {namespace} because it is being terminated",
                )
        if dry_run:
            return obj
        if namespace is not None:
            self.ensure_namespace(namespace)
        if meta.get("ownerReferences"):
            self.gc_pending = True
        return self._commit(rtype, key, "ADDED", obj, None)

    def _default_status(self, rtype: ResourceType, obj: dict[str, Any]) -> None:
        """Creates drop `status` where it is a subresource (nodes keep theirs, as real ones do)."""
        if rtype.key == ("", "v1", "pods"):
            obj["status"] = {"phase": "Pending"}
        elif rtype.key == NAMESPACES:
            obj["status"] = {"phase": "Active"}
        elif rtype.status_subresource and rtype.key != ("", "v1", "nodes"):
            obj.pop("status", None)

    def ensure_namespace(self, name: str) -> None:
        """Namespaces exist implicitly: the first object in a namespace creates it."""
        nstype = self.types.get(NAMESPACES)
        if nstype is not None and (NAMESPACES, None, name) not in self._objects:
            self.create(nstype, None, {"metadata": {"name": name}})

    # --- update / patch -------------------------------------------------------------------------

    def update(
        self,
        rtype: ResourceType,
        namespace: str | None,
        name: str,
        new: Any,
        subresource: str | None,
        *,
        dry_run: bool = False,
        put: bool = False,
    ) -> dict[str, Any]:
        """Store `new` (a full object: a PUT body or the result of applying a patch)."""
        key: ObjKey = (rtype.key, namespace, name)
        old = self._objects.get(key)
        if old is None:
            raise errors.not_found(rtype.plural, rtype.group, name)
        if not isinstance(new, dict) or not isinstance(new.get("metadata", {}), dict):
            raise errors.bad_request("the body of the request was in an unknown format")
        old_meta, new_meta = _meta(old), new.setdefault("metadata", {})
        wanted_rv = new_meta.get("resourceVersion")
        if put and not wanted_rv and rtype.custom:
            raise errors.invalid(
                rtype.plural,
                rtype.group,
                name,
                "metadata.resourceVersion: Invalid value: 0: must be specified for an update",
            )
        if wanted_rv and wanted_rv != old_meta["resourceVersion"]:
            raise errors.conflict(rtype.plural, rtype.group, name)
        if new_meta.get("name", name) != name:
            raise errors.bad_request(
                f"the name of the object ({new_meta.get('name')}) does not match "
                f"the name on the URL ({name})"
            )
        if rtype.namespaced and new_meta.get("namespace", namespace) != namespace:
            raise errors.bad_request(
                "the namespace of the provided object does not match the "
                "namespace sent on the request"
            )
        if subresource == "status":
            result = copy.deepcopy(old)
            if "status" in new:
                result["status"] = copy.deepcopy(new["status"])
            else:
                result.pop("status", None)
        else:
            result = copy.deepcopy(new)
            result["apiVersion"], result["kind"] = rtype.api_version, rtype.kind
            if rtype.status_subresource:
                result.pop("status", None)
                if "status" in old:
                    result["status"] = copy.deepcopy(old["status"])
            meta = result["metadata"]
            for immutable in (
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "name",
                "namespace",
            ):
                meta.pop(immutable, None)
                if immutable in old_meta:
                    meta[immutable] = old_meta[immutable]
            added = set(meta.get("finalizers") or []) - set(old_meta.get("finalizers") or [])
            if old_meta.get("deletionTimestamp") and added:
                raise errors.ApiError(
                    422,
                    "Invalid",
                    f'{rtype.plural} "{name}" is forbidden: no new finalizers '
                    "can be added if the object is being deleted",
                )
            if _payload(result) != _payload(old):
                meta["generation"] = int(old_meta.get("generation", 1)) + 1
        result["metadata"]["resourceVersion"] = old_meta["resourceVersion"]
        if not result["metadata"].get("finalizers"):
            result["metadata"].pop("finalizers", None)
        if result == old or dry_run:
            return result
        if old_meta.get("deletionTimestamp") and not result["metadata"].get("finalizers"):
            # Like the real registry: the update becomes a deletion (watchers see DELETED only).
            self._commit(rtype, key, "DELETED", old, old)
            return result
        if result["metadata"].get("ownerReferences") != old_meta.get("ownerReferences"):
            self.gc_pending = True
        return self._commit(rtype, key, "MODIFIED", result, old)

    # --- delete ---------------------------------------------------------------------------------

    def delete(
        self,
        rtype: ResourceType,
        namespace: str | None,
        name: str,
        options: Any = None,
        *,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """Delete now, or mark with deletionTimestamp and keep the object until finalizers go."""
        key: ObjKey = (rtype.key, namespace, name)
        old = self._objects.get(key)
        if old is None:
            raise errors.not_found(rtype.plural, rtype.group, name)
        options = options if isinstance(options, dict) else {}
        old_meta = _meta(old)
        pre = options.get("preconditions") or {}
        if pre.get("uid") and pre["uid"] != old_meta.get("uid"):
            raise errors.conflict(
                rtype.plural,
                rtype.group,
                name,
                f"Precondition failed: UID in precondition: "
                f"{pre['uid']}, UID in object meta: {old_meta.get('uid')}",
            )
        if pre.get("resourceVersion") and pre["resourceVersion"] != old_meta.get("resourceVersion"):
            raise errors.conflict(rtype.plural, rtype.group, name)
        if old_meta.get("deletionTimestamp"):
            return copy.deepcopy(old)
        policy = options.get("propagationPolicy") or (
            "Orphan" if options.get("orphanDependents") else "Background"
        )
        finalizers = list(old_meta.get("finalizers") or [])
        extra = {"Foreground": "foregroundDeletion", "Orphan": "orphan"}.get(policy)
        if extra and extra not in finalizers:
            finalizers.append(extra)
        if dry_run:
            return copy.deepcopy(old)
        terminating = rtype.key == NAMESPACES  # the namespace controller empties it first
        if not finalizers and not terminating:
            return self._commit(rtype, key, "DELETED", old, old)
        marked = copy.deepcopy(old)
        meta = marked["metadata"]
        meta.update(deletionTimestamp=_now(), deletionGracePeriodSeconds=0)
        if finalizers:
            meta["finalizers"] = finalizers
        if terminating:
            marked["status"] = {"phase": "Terminating"}
        meta["generation"] = int(meta.get("generation", 1)) + 1
        self.gc_pending = True
        return self._commit(rtype, key, "MODIFIED", marked, old)

    # --- access for the garbage collector (collector.py) ---------------------------------------

    def keys(self) -> builtins.list[ObjKey]:  # `list` here is the method above
        return list(self._objects)

    def peek(self, key: ObjKey) -> dict[str, Any] | None:
        """The stored object itself (never mutate it), or None."""
        return self._objects.get(key)

    def uid_exists(self, uid: str) -> bool:
        return uid in self._uids

    def remove(self, key: ObjKey) -> None:
        """Remove an object at once (the namespace controller's last step)."""
        obj = self._objects[key]
        self._commit(self.types[key[0]], key, "DELETED", obj, obj)

    # --- custom resource definitions ------------------------------------------------------------

    def _sync_crd(self, crd: dict[str, Any], removed: bool) -> None:
        """A stored CRD serves its kinds (as apiextensions-apiserver does); deletion stops it."""
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        for version in spec.get("versions") or []:
            rtype = ResourceType(
                group=spec.get("group", ""),
                version=version.get("name", ""),
                plural=names.get("plural", ""),
                kind=names.get("kind", ""),
                namespaced=spec.get("scope") == "Namespaced",
                status_subresource="status" in (version.get("subresources") or {}),
                custom=True,
                singular=names.get("singular", ""),
                short_names=tuple(names.get("shortNames") or ()),
                subresources=("status",) if "status" in (version.get("subresources") or {}) else (),
            )
            if removed:
                for key in [k for k in self._objects if k[0] == rtype.key]:
                    self._commit(rtype, key, "DELETED", self._objects[key], self._objects[key])
                self.types.pop(rtype.key, None)
            elif version.get("served", True):
                self.register(rtype)
