"""Patch semantics of the Kubernetes API server: merge, JSON and strategic-merge patches.

kmock 0.8 treats every PATCH as a naive dict merge, answers 500 when a JSON-patch ``test`` fails
(kopf then gives up instead of retrying) and replaces lists on strategic-merge patches.  These
pure functions reproduce what the real API server does so that operators meet real semantics.
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["PatchError", "apply_json_patch", "apply_merge_patch", "apply_strategic_merge_patch"]


class PatchError(ValueError):
    """A patch that cannot be applied; the API server answers 422 Unprocessable Entity."""


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge recursively, ``null`` deletes, the rest replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result: dict[str, Any] = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_merge_patch(result.get(key), value)
    return result


# Merge keys of the built-in list fields that strategic merge patch merges item by item (from the
# `patchMergeKey` tags of k8s.io/api).  Lists not named here are replaced, as with a merge patch.
_MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "env": "name",
    "imagePullSecrets": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "conditions": "type",
    "ownerReferences": "uid",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
}
# Lists of scalars with `patchStrategy: merge` (union instead of replacement).
_SET_LISTS: frozenset[str] = frozenset({"finalizers"})


def apply_strategic_merge_patch(target: Any, patch: Any, field: str = "") -> Any:
    """Strategic merge patch for built-in kinds.

    Behaves like a merge patch, except that the well-known lists of objects (containers, env,
    volumes, conditions, ...) are merged item by item on their merge key, ``$patch: delete`` items
    remove the matching item, ``$patch: replace`` replaces a map or list, and ``finalizers`` is a
    union.  Ports (merge key ``containerPort`` with protocol) and ``$setElementOrder`` directives
    are not modelled: those lists are replaced.
    """
    if isinstance(patch, dict):
        if patch.get("$patch") == "replace":
            return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
        if patch.get("$patch") == "delete":
            return None
        result: dict[str, Any] = dict(target) if isinstance(target, dict) else {}
        for key, value in patch.items():
            if key.startswith("$"):
                continue  # $setElementOrder/..., $retainKeys: ordering hints we do not model
            if value is None:
                result.pop(key, None)
                continue
            merged = apply_strategic_merge_patch(result.get(key), value, key)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        return result
    if isinstance(patch, list):
        merge_key = _MERGE_KEYS.get(field)
        if field in _SET_LISTS and isinstance(target, list):
            return list(target) + [item for item in patch if item not in target]
        if merge_key is None or not isinstance(target, list):
            return [
                item
                for item in copy.deepcopy(patch)
                if not (isinstance(item, dict) and "$patch" in item)
            ]
        if any(isinstance(item, dict) and item.get("$patch") == "replace" for item in patch):
            return [
                item
                for item in copy.deepcopy(patch)
                if not (isinstance(item, dict) and "$patch" in item)
            ]
        merged_list: list[Any] = [copy.deepcopy(item) for item in target]
        for item in patch:
            if not isinstance(item, dict) or merge_key not in item:
                raise PatchError(f"map in list {field!r} lacks the merge key {merge_key!r}")
            index = next(
                (
                    i
                    for i, old in enumerate(merged_list)
                    if isinstance(old, dict) and old.get(merge_key) == item[merge_key]
                ),
                None,
            )
            if item.get("$patch") == "delete":
                if index is not None:
                    merged_list.pop(index)
            elif index is None:
                merged_list.append(copy.deepcopy(item))
            else:
                merged_list[index] = apply_strategic_merge_patch(merged_list[index], item)
        return merged_list
    return copy.deepcopy(patch)


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def _split_pointer(pointer: str) -> list[str]:
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise PatchError(f"invalid JSON pointer {pointer!r}")
    return [_unescape(token) for token in pointer[1:].split("/")]


def _resolve_parent(doc: Any, tokens: list[str], pointer: str) -> Any:
    node = doc
    for token in tokens[:-1]:
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            raise PatchError(f"doc is missing path: {pointer!r}")
    return node


def _get(doc: Any, pointer: str) -> Any:
    tokens = _split_pointer(pointer)
    if not tokens:
        return doc
    parent = _resolve_parent(doc, tokens, pointer)
    last = tokens[-1]
    if isinstance(parent, dict) and last in parent:
        return parent[last]
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent[int(last)]
    raise PatchError(f"doc is missing path: {pointer!r}")


def _remove(doc: Any, pointer: str) -> Any:
    tokens = _split_pointer(pointer)
    if not tokens:
        raise PatchError("cannot remove the whole document")
    parent = _resolve_parent(doc, tokens, pointer)
    last = tokens[-1]
    if isinstance(parent, dict) and last in parent:
        return parent.pop(last)
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent.pop(int(last))
    raise PatchError(f"unable to remove nonexistent key: {pointer!r}")


def _add(doc: Any, pointer: str, value: Any, replace: bool = False) -> Any:
    tokens = _split_pointer(pointer)
    if not tokens:
        return value
    parent = _resolve_parent(doc, tokens, pointer)
    last = tokens[-1]
    if isinstance(parent, dict):
        if replace and last not in parent:
            raise PatchError(f"replace operation does not apply: doc is missing key: {pointer!r}")
        parent[last] = value
    elif isinstance(parent, list):
        if replace:
            if not last.isdigit() or int(last) >= len(parent):
                raise PatchError(f"replace operation does not apply: {pointer!r}")
            parent[int(last)] = value
        elif last == "-":
            parent.append(value)
        elif last.isdigit() and int(last) <= len(parent):
            parent.insert(int(last), value)
        else:
            raise PatchError(f"add operation does not apply: index out of range: {pointer!r}")
    else:
        raise PatchError(f"doc is missing path: {pointer!r}")
    return doc


def apply_json_patch(target: Any, ops: Any) -> Any:
    """RFC 6902 JSON patch on a deep copy; any failing op (``test`` included) raises PatchError."""
    if not isinstance(ops, list):
        raise PatchError("a JSON patch must be a list of operations")
    doc = copy.deepcopy(target)
    for op in ops:
        if not isinstance(op, dict) or "path" not in op or "op" not in op:
            raise PatchError(f"invalid JSON patch operation: {op!r}")
        kind, path = op["op"], op["path"]
        if kind == "add":
            doc = _add(doc, path, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            _remove(doc, path)
        elif kind == "replace":
            doc = _add(doc, path, copy.deepcopy(op.get("value")), replace=True)
        elif kind == "move":
            value = _remove(doc, op["from"])
            doc = _add(doc, path, value)
        elif kind == "copy":
            doc = _add(doc, path, copy.deepcopy(_get(doc, op["from"])))
        elif kind == "test":
            if _get(doc, path) != op.get("value"):
                raise PatchError(f"testing value {path} failed")
        else:
            raise PatchError(f"unexpected JSON patch op {kind!r}")
    return doc
