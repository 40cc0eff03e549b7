"""Create-or-repair of child objects: the desired manifest wins over hand edits.

`drifted(desired, live)` is a subset comparison: every field we set must hold the value we
set; fields the API server adds (defaults, status, clusterIP) are ignored.
"""

from __future__ import annotations

from typing import Any

from kaito_operator.cache import Client
from kaito_operator.kube import ApiError, Kind


def drifted(desired: Any, live: Any) -> bool:
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            return True
        return any(drifted(v, live.get(k)) for k, v in desired.items())
    if isinstance(desired, list):
        if not isinstance(live, list) or len(desired) != len(live):
            return True
        return any(drifted(d, lv) for d, lv in zip(desired, live, strict=True))
    if isinstance(desired, int | float) and isinstance(live, str):
        return str(desired) != live
    return bool(desired != live)


async def ensure(client: Client, kind: Kind, desired: dict[str, Any]) -> dict[str, Any]:
    """Make the object match `desired` (create, or patch what drifted); returns it as the
    API server has it now."""
    meta = desired["metadata"]
    live = await client.get_or_none(kind, meta["name"], meta.get("namespace"))
    if live is None:
        try:
            return await client.create(kind, desired)
        except ApiError as exc:
            if exc.status != 409:  # created meanwhile: compare it on the next pass
                raise
            return desired
    wanted = {"metadata": {"labels": meta.get("labels", {})}, "spec": desired["spec"]}
    if not drifted(wanted, live):
        return live
    return await client.patch(kind, meta["name"], wanted, meta.get("namespace"))
