"""gpu-provisioner settings, read from the environment once at start-up (docs/design.md §4).

The Azure coordinates use the names the Go gpu-provisioner's chart sets (``ARM_SUBSCRIPTION_ID``,
``ARM_RESOURCE_GROUP``, ``AZURE_CLUSTER_NAME``, ``LOCATION``, ``AZURE_TENANT_ID``,
``AZURE_CLIENT_ID``), so the same Helm values work; our own knobs are ``PROVISIONER_*``.  Every
error names the variable to fix, because a pod that crash-loops on "field required" is a support
ticket.  Durations accept seconds (``30``, ``0.5``) or Go-style units (``90s``, ``10m``, ``1h``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "NODE_KINDS",
    "NodeKindName",
    "ProvisionerSettings",
    "SettingsError",
    "parse_duration",
    "settings_from_env",
]

_GUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
_DURATION = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h)?$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}

NodeKindName = Literal["machine", "nodeclaim"]
#: The kinds the provisioner can serve: `karpenter.sh/v1alpha5` Machine, `karpenter.sh/v1`
#: NodeClaim.
NODE_KINDS: tuple[NodeKindName, ...] = ("machine", "nodeclaim")


class SettingsError(ValueError):
    """A setting in the environment is missing or invalid; the message names the variable."""


@dataclass(frozen=True)
class ProvisionerSettings:
    """What the provisioner needs to know; tests build one directly with short intervals."""

    subscription_id: str
    resource_group: str
    cluster_name: str
    location: str
    tenant_id: str | None = None
    client_id: str | None = None
    arm_endpoint: str | None = None
    """ARM base URL for sovereign clouds or the simulator; None: public Azure."""
    arm_ca_bundle: str | None = None
    """CA file to verify the ARM endpoint with (the simulator's self-signed certificate)."""
    gc_grace_seconds: float = 600.0
    """An orphaned pool of ours must be at least this old before garbage collection deletes it
    (covers a Machine whose create event is still on its way)."""
    gc_interval_seconds: float = 120.0
    poll_seconds: float = 15.0
    """How soon a Machine waiting on ARM or on its Node is looked at again."""
    backoff_base_seconds: float = 5.0
    backoff_max_seconds: float = 300.0
    auth_retry_seconds: float = 300.0
    """Authentication failures need a human: retry rarely, not in a tight loop."""
    request_timeout_seconds: float = 20.0
    call_timeout_seconds: float = 60.0
    max_workers: int = 20
    log_level: str = "INFO"
    node_kind: NodeKindName = "machine"
    """Which kind it provisions; labelled objects of the other kind are only finalized."""


_REQUIRED = {
    "subscription_id": "ARM_SUBSCRIPTION_ID",
    "resource_group": "ARM_RESOURCE_GROUP",
    "cluster_name": "AZURE_CLUSTER_NAME",
    "location": "LOCATION",
}
_OPTIONAL = {
    "tenant_id": "AZURE_TENANT_ID",
    "client_id": "AZURE_CLIENT_ID",
    "arm_endpoint": "ARM_ENDPOINT",
    "arm_ca_bundle": "ARM_CA_BUNDLE",
    "log_level": "PROVISIONER_LOG_LEVEL",
}
_DURATIONS = {
    "gc_grace_seconds": "PROVISIONER_GC_GRACE_PERIOD",
    "gc_interval_seconds": "PROVISIONER_GC_INTERVAL",
    "poll_seconds": "PROVISIONER_POLL_INTERVAL",
    "backoff_base_seconds": "PROVISIONER_BACKOFF_BASE",
    "backoff_max_seconds": "PROVISIONER_BACKOFF_MAX",
    "auth_retry_seconds": "PROVISIONER_AUTH_RETRY_INTERVAL",
    "request_timeout_seconds": "PROVISIONER_ARM_REQUEST_TIMEOUT",
    "call_timeout_seconds": "PROVISIONER_ARM_CALL_TIMEOUT",
}
#: Every variable the provisioner reads, for `--help` and the chart.
ENV_VARS = (
    *_REQUIRED.values(),
    *_OPTIONAL.values(),
    *_DURATIONS.values(),
    "PROVISIONER_MAX_WORKERS",
    "PROVISIONER_NODE_KIND",
)


def parse_duration(value: str) -> float:
    """``"30"``, ``"0.5"``, ``"90s"``, ``"10m"``, ``"1h"``, ``"250ms"`` as seconds."""
    match = _DURATION.match(value.strip())
    if not match:
        raise ValueError(f"not a duration: {value!r} (use seconds or a unit: 90s, 10m, 1h)")
    return float(match.group(1)) * _UNITS[match.group(2)]


def settings_from_env(environ: Mapping[str, str]) -> ProvisionerSettings:
    """Read and check every variable; all problems are reported at once."""
    values: dict[str, Any] = {}  # field -> a str, float or int checked here
    problems: list[str] = []
    for field, var in _REQUIRED.items():
        raw = (environ.get(var) or "").strip()
        if not raw:
            problems.append(f"{var} is required ({field.replace('_', ' ')} of the AKS cluster)")
        values[field] = raw
    sub = str(values["subscription_id"])
    if sub and not _GUID.match(sub):
        problems.append(f"ARM_SUBSCRIPTION_ID must be a subscription GUID, got {sub!r}")
    for field, var in _OPTIONAL.items():
        raw = (environ.get(var) or "").strip()
        if raw:
            values[field] = raw
    endpoint = values.get("arm_endpoint")
    if isinstance(endpoint, str) and not endpoint.startswith("https://"):
        problems.append(f"ARM_ENDPOINT must be an https:// URL, got {endpoint!r}")
    for field, var in _DURATIONS.items():
        raw = (environ.get(var) or "").strip()
        if not raw:
            continue
        try:
            seconds = parse_duration(raw)
        except ValueError as exc:
            problems.append(f"{var}: {exc}")
            continue
        if seconds <= 0 and field != "gc_grace_seconds":
            problems.append(f"{var} must be positive, got {raw!r}")
        values[field] = seconds
    workers = (environ.get("PROVISIONER_MAX_WORKERS") or "").strip()
    if workers:
        if workers.isdigit() and int(workers) >= 1:
            values["max_workers"] = int(workers)
        else:
            problems.append(f"PROVISIONER_MAX_WORKERS must be a positive integer, got {workers!r}")
    kind = (environ.get("PROVISIONER_NODE_KIND") or "").strip().lower()
    if kind in NODE_KINDS:
        values["node_kind"] = kind
    elif kind:
        problems.append(f"PROVISIONER_NODE_KIND must be one of {', '.join(NODE_KINDS)}, "
                        f"got {environ['PROVISIONER_NODE_KIND']!r}")
    if problems:
        raise SettingsError("; ".join(problems))
    return ProvisionerSettings(**values)
