"""Label and field selectors as the Kubernetes API server parses and applies them.

kmock 0.8 ignores ``labelSelector``/``fieldSelector`` and returns every object, which hides
operator bugs (e.g. a controller that adopts pods of another workspace).  Unknown field-selector
fields are rejected with 400 as the real server does: a typo fails loudly instead of matching all.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["FieldSelector", "LabelSelector", "SelectorError"]


class SelectorError(ValueError):
    """An unparsable or unsupported selector; the API server answers 400 Bad Request."""


_KEY_RE = re.compile(
    r"^([a-z0-9A-Z]([-a-z0-9A-Z.]*[a-z0-9A-Z])?/)?[a-zA-Z0-9]([-a-zA-Z0-9_.]*[a-zA-Z0-9])?$"
)
_SET_RE = re.compile(r"^(\S+)\s+(in|notin)\s+\((.*)\)$")


@dataclass(frozen=True)
class _Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!", "gt", "lt"
    values: frozenset[str]

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op in ("=", "in"):
            return present and value in self.values
        if self.op in ("!=", "notin"):
            return not present or value not in self.values
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        try:
            number, bound = int(value or ""), int(next(iter(self.values)))
        except ValueError:
            return False
        return number > bound if self.op == "gt" else number < bound


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside ``( )`` of set-based requirements."""
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [part.strip() for part in parts if part.strip()]


def _check_key(key: str) -> str:
    if not _KEY_RE.match(key):
        raise SelectorError(f"invalid label key {key!r}")
    return key


@dataclass(frozen=True)
class LabelSelector:
    """A parsed ``labelSelector``: equality, ``!=``, ``in``, ``notin``, exists, ``!key``, gt/lt."""

    requirements: tuple[_Requirement, ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> LabelSelector:
        requirements: list[_Requirement] = []
        for part in _split_top_level(text or ""):
            set_match = _SET_RE.match(part)
            if set_match:
                key, op, raw = set_match.groups()
                values = frozenset(v.strip() for v in raw.split(",") if v.strip())
                requirements.append(_Requirement(_check_key(key), op, values))
            elif part.startswith("!"):
                requirements.append(_Requirement(_check_key(part[1:].strip()), "!", frozenset()))
            elif "!=" in part:
                key, value = part.split("!=", 1)
                requirements.append(
                    _Requirement(_check_key(key.strip()), "!=", frozenset({value.strip()}))
                )
            elif "==" in part or "=" in part:
                key, value = part.split("==", 1) if "==" in part else part.split("=", 1)
                requirements.append(
                    _Requirement(_check_key(key.strip()), "=", frozenset({value.strip()}))
                )
            elif ">" in part or "<" in part:
                key, value = re.split(r"[<>]", part, maxsplit=1)
                op = "gt" if ">" in part else "lt"
                if not value.strip().lstrip("-").isdigit():
                    raise SelectorError(f"invalid value for {op}: {value!r}")
                requirements.append(
                    _Requirement(_check_key(key.strip()), op, frozenset({value.strip()}))
                )
            else:
                requirements.append(_Requirement(_check_key(part), "exists", frozenset()))
        return cls(tuple(requirements))

    def matches(self, obj: Mapping[str, Any]) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(req.matches(labels) for req in self.requirements)


def _path_getter(path: str) -> Callable[[Mapping[str, Any]], str]:
    keys = path.split(".")

    def getter(obj: Mapping[str, Any]) -> str:
        node: Any = obj
        for key in keys:
            node = node.get(key) if isinstance(node, Mapping) else None
        if node is None:
            return ""
        if isinstance(node, bool):
            return "true" if node else "false"
        return str(node)

    return getter


# Field labels the real API server accepts per resource (plural); metadata.name/namespace always.
_SUPPORTED_FIELDS: dict[str, frozenset[str]] = {
    "pods": frozenset(
        {
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        }
    ),
    "nodes": frozenset({"spec.unschedulable"}),
    "events": frozenset(
        {
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        }
    ),
    "secrets": frozenset({"type"}),
    "namespaces": frozenset({"status.phase"}),
    "jobs": frozenset({"status.successful"}),
    "replicasets": frozenset({"status.replicas"}),
}


@dataclass(frozen=True)
class FieldSelector:
    """A parsed ``fieldSelector`` (``=``, ``==``, ``!=``) over the fields the server indexes."""

    requirements: tuple[tuple[str, str, str], ...] = ()

    @classmethod
    def parse(cls, text: str | None, plural: str) -> FieldSelector:
        allowed = {"metadata.name", "metadata.namespace"} | _SUPPORTED_FIELDS.get(
            plural, frozenset()
        )
        requirements: list[tuple[str, str, str]] = []
        for part in _split_top_level(text or ""):
            if "!=" in part:
                field, value = part.split("!=", 1)
                op = "!="
            elif "==" in part:
                field, value = part.split("==", 1)
                op = "="
            elif "=" in part:
                field, value = part.split("=", 1)
                op = "="
            else:
                raise SelectorError(f"invalid field selector: {part!r}")
            field = field.strip()
            if field not in allowed:
                raise SelectorError(f'field label not supported: "{field}"')
            requirements.append((field, op, value.strip()))
        return cls(tuple(requirements))

    def matches(self, obj: Mapping[str, Any]) -> bool:
        for field, op, value in self.requirements:
            actual = _path_getter(field)(obj)
            if (actual == value) != (op == "="):
                return False
        return True
