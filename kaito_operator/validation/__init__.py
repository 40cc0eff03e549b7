"""Validation of Workspaces: one module used by the CLI, the webhook and the controller.

`validate_workspace(obj, catalog, old=None, policy=DEFAULT_POLICY)` returns every finding
(errors and warnings), each naming the field path, the offending value and what is required.
The policy says which pod shapes a Workspace may ask for (`validation.policy`); the webhook and
the controller pass the one the operator's settings describe, `kaito validate` the default.
Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from kaito_operator.api.workspace import Workspace
from kaito_operator.catalog import Catalog
from kaito_operator.validation.findings import Finding, errors, summary, warnings
from kaito_operator.validation.policy import DEFAULT_POLICY, Policy, policy_from_settings
from kaito_operator.validation.rules import check_update, check_workspace
from kaito_operator.validation.structure import findings_from

__all__ = [
    "DEFAULT_POLICY",
    "Finding",
    "Policy",
    "errors",
    "policy_from_settings",
    "summary",
    "validate_workspace",
    "warnings",
]

_GROUP_VERSION = "kaito.sh/v1alpha1"


Loc = tuple[int | str, ...]


def _parse(obj: Any) -> tuple[Workspace | None, list[Finding], list[Loc]]:
    """The model, or the findings and the locations of the values pydantic refused."""
    if not isinstance(obj, Mapping):
        return None, [Finding("<object>", f"must be a mapping, got {type(obj).__name__}")], []
    found = []
    if obj.get("apiVersion") != _GROUP_VERSION:
        found.append(
            Finding("apiVersion", f"{obj.get('apiVersion')!r} is not valid: must be "
                    f"{_GROUP_VERSION}")
        )
    if obj.get("kind") != "Workspace":
        found.append(Finding("kind", f"{obj.get('kind')!r} is not valid: must be Workspace"))
    if found:
        return None, found, []
    try:
        return Workspace.model_validate(dict(obj)), [], []
    except ValidationError as exc:
        refused = [tuple(e["loc"]) for e in exc.errors() if e["type"] != "missing"]
        return None, findings_from(exc), refused


def _without(obj: Mapping[str, Any], locs: list[Loc]) -> dict[str, Any]:
    """A copy of `obj` without the values at `locs`; only the containers on those paths are
    copied, so the cost does not depend on the size or depth of the rest."""
    pruned = dict(obj)
    for loc in locs:
        target: Any = pruned
        for part in loc[:-1]:
            try:
                child = target[part]
            except (KeyError, IndexError, TypeError):
                break
            if isinstance(child, Mapping):
                child = dict(child)
            elif isinstance(child, list):
                child = list(child)
            else:
                break
            target[part] = child
            target = child
        else:
            if isinstance(target, dict):
                target.pop(loc[-1], None)
    return pruned


def _parse_leniently(obj: Any) -> tuple[Workspace | None, list[Finding]]:
    """Parse; when values are refused, parse again without them, so that the other rules
    still run and the author sees every problem at once, as the API server reports them."""
    ws, found, refused = _parse(obj)
    if ws is None and refused:
        ws, _, _ = _parse(_without(obj, refused))
    return ws, found


def validate_workspace(
    obj: Any, catalog: Catalog, old: Any | None = None, policy: Policy = DEFAULT_POLICY
) -> list[Finding]:
    """All findings for `obj` (and for the change from `old`, on updates). An `old` object
    that does not parse is an error: the immutable fields could not be compared."""
    ws, found = _parse_leniently(obj)
    if ws is None:
        return found
    reported = [f.path for f in found]
    found += [
        f for f in check_workspace(ws, catalog, policy)
        if not any(f.path.startswith(path) for path in reported)
    ]
    if old is not None:
        previous, old_found, _ = _parse(old)
        if previous is not None:
            found.extend(check_update(previous, ws))
        else:
            first = old_found[0] if old_found else Finding("<object>", "does not parse")
            found.append(Finding(
                "<old object>",
                f"the stored Workspace is not valid ({first}), so the immutable fields cannot "
                "be checked: delete and recreate the Workspace",
            ))
    return list(dict.fromkeys(found))  # one line per problem, in the order found
