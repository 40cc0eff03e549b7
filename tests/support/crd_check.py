"""Apply a CRD's schema to objects as the API server does: defaults, then the OpenAPI schema
(with strict field validation, as `kubectl apply` asks for), then the CEL rules, with `oldSelf`
for transition rules on updates. Used to test the generated CRDs against real objects without
an API server; CEL is evaluated by cel-python, with the Kubernetes library functions the CRDs
we test use (`find`, from Kubernetes' regex library: Karpenter's requirement-key rule)."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from typing import Any

import celpy
import jsonschema


def apply_defaults(schema: dict[str, Any], obj: Any) -> Any:
    obj = copy.deepcopy(obj)
    _defaults(schema, obj)
    return obj


def _defaults(schema: dict[str, Any], obj: Any) -> None:
    if isinstance(obj, dict):
        for name, sub in (schema.get("properties") or {}).items():
            if name not in obj and "default" in sub:
                obj[name] = copy.deepcopy(sub["default"])
            if name in obj:
                _defaults(sub, obj[name])
    elif isinstance(obj, list) and "items" in schema:
        for item in obj:
            _defaults(schema["items"], item)


def _to_jsonschema(node: dict[str, Any], root: bool = False) -> dict[str, Any]:
    if node.get("x-kubernetes-int-or-string"):
        return {"type": ["integer", "string"]}
    out = {k: v for k, v in node.items() if not k.startswith("x-kubernetes") and k != "default"}
    if "properties" in node:
        out["properties"] = {k: _to_jsonschema(v) for k, v in node["properties"].items()}
        if not node.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    if isinstance(node.get("additionalProperties"), dict):
        out["additionalProperties"] = _to_jsonschema(node["additionalProperties"])
    if "items" in node:
        out["items"] = _to_jsonschema(node["items"])
    return out


def schema_errors(schema: dict[str, Any], obj: Any) -> list[str]:
    validator = jsonschema.Draft7Validator(_to_jsonschema(schema, root=True))
    return [
        ".".join(str(p) for p in err.absolute_path) + ": " + err.message
        for err in validator.iter_errors(obj)
    ]


def _walk(
    schema: dict[str, Any], obj: Any, old: Any, path: str
) -> Iterator[tuple[str, dict[str, Any], Any, Any]]:
    yield path, schema, obj, old
    if isinstance(obj, dict):
        for name, sub in (schema.get("properties") or {}).items():
            if name in obj:
                old_value = old.get(name) if isinstance(old, dict) else None
                yield from _walk(sub, obj[name], old_value, f"{path}.{name}".lstrip("."))
    elif isinstance(obj, list) and "items" in schema:
        for i, item in enumerate(obj):
            yield from _walk(schema["items"], item, None, f"{path}[{i}]")


def _find(value: Any, pattern: Any) -> celpy.celtypes.StringType:
    """Kubernetes' `<string>.find(<regex>)`: the first match, or ''."""
    match = re.search(str(pattern), str(value))
    return celpy.celtypes.StringType(match.group(0) if match else "")


#: The Kubernetes CEL library functions cel-python lacks, as far as our CRDs need them.
KUBERNETES_FUNCTIONS = {"find": _find}


def cel_errors(schema: dict[str, Any], obj: Any, old: Any = None) -> list[str]:
    """Messages of the CEL rules `obj` breaks. Transition rules (those naming `oldSelf`) run
    only where the old object has a value at the same path, as in the API server."""
    env = celpy.Environment()
    failures = []
    for path, node, value, old_value in _walk(schema, obj, old, ""):
        for rule in node.get("x-kubernetes-validations", []):
            transition = "oldSelf" in rule["rule"]
            if transition and old_value is None:
                continue
            activation = {"self": celpy.json_to_cel(value)}
            if transition:
                activation["oldSelf"] = celpy.json_to_cel(old_value)
            program = env.program(env.compile(rule["rule"]), functions=KUBERNETES_FUNCTIONS)
            try:
                result = program.evaluate(activation)
            except celpy.CELEvalError as exc:  # e.g. a missing field: the API server refuses
                result = exc
            if isinstance(result, Exception) or not bool(result):
                failures.append(f"{path or '<root>'}: {rule['message']}")
    return failures


def admit(schema: dict[str, Any], obj: Any, old: Any = None) -> list[str]:
    """Every reason the API server would refuse `obj` (empty when admitted)."""
    obj = apply_defaults(schema, obj)
    old = apply_defaults(schema, old) if old is not None else None
    return schema_errors(schema, obj) + cel_errors(schema, obj, old)
