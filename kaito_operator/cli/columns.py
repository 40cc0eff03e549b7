"""kubectl's view of custom resources: the CRD's printer columns applied to objects.

Only the JSONPath forms our CRDs use are understood: `.a.b`, escaped dots in label keys
(`.metadata.labels.node\\.kubernetes\\.io/instance-type`), and
`.status.conditions[?(@.type=="X")].status`.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from kaito_operator.cli.table import render_table

_FILTER = re.compile(
    r'^(?P<list>[^\[]+)\[\?\(@\.(?P<key>\w+)=="(?P<value>[^"]*)"\)\]\.(?P<field>\w+)$'
)


def _walk(obj: Any, path: str) -> Any:
    parts = re.split(r"(?<!\\)\.", path.lstrip("."))
    for part in parts:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part.replace("\\.", "."))
    return obj


def json_path(obj: dict[str, Any], path: str) -> Any:
    match = _FILTER.match(path)
    if match:
        for item in _walk(obj, match["list"]) or []:
            if isinstance(item, dict) and str(item.get(match["key"])) == match["value"]:
                return item.get(match["field"])
        return None
    return _walk(obj, path)


def age(timestamp: str | None, now: datetime) -> str:
    """kubectl's short age: 45s, 12m, 3h, 2d."""
    if not timestamp:
        return "<unknown>"
    seconds = int((now - datetime.fromisoformat(timestamp.replace("Z", "+00:00"))).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def columns_table(
    crd: dict[str, Any], items: list[dict[str, Any]], wide: bool = False,
    now: datetime | None = None,
) -> str:
    now = now or datetime.now(UTC)
    columns = [
        c for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]
        if wide or not c.get("priority")
    ]
    rows = []
    for item in items:
        row = [item["metadata"]["name"]]
        for column in columns:
            value = json_path(item, column["jsonPath"])
            if column["type"] == "date":
                row.append(age(value, now))
            else:
                row.append("" if value is None else str(value))
        rows.append(row)
    return render_table(["NAME", *[c["name"] for c in columns]], rows)
