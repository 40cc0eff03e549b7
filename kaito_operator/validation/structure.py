"""Turn pydantic's parse errors into findings a Workspace author can act on."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from kaito_operator.validation.findings import Finding, show

#: Patterns of the API models, as a user would read them.
_PATTERN_MEANING = {
    "^(0(\\.[0-9]+)?|1(\\.0+)?)$": 'a decimal between 0 and 1 written as a string, e.g. "0.5"',
    "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$": "a DNS-1123 label (lower-case letters, digits and '-')",
    "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$": "a preset name (lower-case letters, digits, '-', '.')",
}


def field_path(loc: tuple[int | str, ...]) -> str:
    """`('inference', 'adapters', 0, 'strength')` → `inference.adapters[0].strength`."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "<object>"


def _explain(error: dict[str, Any]) -> str:
    kind = error["type"]
    value = error.get("input")
    ctx = error.get("ctx") or {}
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "unknown field (check the spelling and the nesting)"
    if kind == "string_pattern_mismatch":
        meaning = _PATTERN_MEANING.get(ctx.get("pattern", ""), f"match {ctx.get('pattern')}")
        return f"{show(value)} is not valid: must be {meaning}"
    if kind == "literal_error":
        return f"{show(value)} is not one of {ctx.get('expected')}"
    if kind in ("string_type", "int_type", "int_parsing", "bool_type", "dict_type",
                "list_type", "model_type", "model_attributes_type", "float_type"):
        wanted = {
            "string_type": "a string",
            "int_type": "an integer",
            "int_parsing": "an integer",
            "bool_type": "a boolean",
            "dict_type": "a mapping",
            "list_type": "a list",
            "model_type": "a mapping",
            "model_attributes_type": "a mapping",
            "float_type": "a number",
        }[kind]
        hint = ""
        if kind == "string_type" and isinstance(value, int | float):
            hint = " (quote it)"
        elif kind in ("int_type", "bool_type", "float_type") and isinstance(value, str):
            hint = " (remove the quotes)"
        return f"{show(value)} is not valid: must be {wanted}{hint}"
    if kind == "greater_than_equal":
        return f"{show(value)} is too small: must be at least {ctx.get('ge')}"
    if kind == "less_than_equal":
        return f"{show(value)} is too large: must be at most {ctx.get('le')}"
    if kind == "too_long":
        return f"has {ctx.get('actual_length')} items: at most {ctx.get('max_length')} allowed"
    if kind == "too_short":
        return f"is empty: at least {ctx.get('min_length')} item(s) required"
    if kind == "string_too_long":
        return f"{show(value)} is too long: at most {ctx.get('max_length')} characters"
    if kind == "string_too_short":
        return "must not be empty"
    return f"{show(value)} is not valid: {error['msg']}"


def findings_from(exc: ValidationError) -> list[Finding]:
    return [
        Finding(field_path(tuple(err["loc"])), _explain(dict(err)))
        for err in exc.errors(include_url=False)
    ]
