"""Pure pool model: what we ask AKS for (``PoolSpec``) and what it reports (``PoolState``).

No I/O and no clock: ``pool_spec_from_machine`` takes ``now`` so the same Machine (or NodeClaim:
both kinds follow the same rules) always yields
the same body for a given instant, and tests need no patching.  The creation-timestamp label is
the pool's own birth time (not the Machine's), so garbage collection's grace period counts from
when the pool was asked for, even if the Machine cache lags behind.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

from kaito_operator.api.machine import Machine
from kaito_operator.api.nodeclaim import NodeClaim
from kaito_operator.provisioner.errors import (
    ErrorClass,
    InvalidPoolParameters,
    ProvisionerError,
    classify_error,
    error_for,
)

__all__ = [
    "AGENTPOOL_NODE_LABEL",
    "LABEL_CREATION_TIMESTAMP",
    "LABEL_MACHINE_TYPE",
    "MACHINE_TYPE_GPU",
    "PoolSpec",
    "PoolState",
    "format_timestamp",
    "parse_quantity_gib",
    "parse_timestamp",
    "pool_spec_from_machine",
]

LABEL_MACHINE_TYPE = "kaito.sh/machine-type"
MACHINE_TYPE_GPU = "gpu"
LABEL_CREATION_TIMESTAMP = "kaito.sh/creation-timestamp"
#: AKS puts this label on every node of a pool; the controller finds the Machine's Node by it.
AGENTPOOL_NODE_LABEL = "kubernetes.azure.com/agentpool"
#: Label values allow only [A-Za-z0-9._-]: a compact ISO-8601 basic form.
TIMESTAMP_FORMAT = "%Y%m%dT%H%M%SZ"
#: The layout Azure/gpu-provisioner (Go) writes, accepted when adopting its pools.
_GO_TIMESTAMP_FORMAT = "%Y-%m-%dT%H-%M-%SZ"
#: AKS rule for Linux pool names.
_POOL_NAME = re.compile(r"^[a-z][a-z0-9]{0,11}$")
_QUANTITY = re.compile(r"^\+?([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE]([+-]?[0-9]+))?([a-zA-Z]*)$")
_SUFFIX: dict[str, Decimal] = {
    "": Decimal(1),
    "m": Decimal("0.001"),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "P": Decimal(10**15),
    "E": Decimal(10**18),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}
#: States in which AKS is still working on the pool (a PUT now would be a 409).
BUSY_STATES = frozenset({"Creating", "Updating", "Upgrading", "Scaling", "Starting", "Stopping"})


@dataclass(frozen=True)
class PoolSpec:
    """The agent pool the provisioner asks for (docs/design.md §4)."""

    name: str
    vm_size: str
    node_labels: Mapping[str, str]
    node_taints: tuple[str, ...] = ()
    os_disk_size_gb: int | None = None
    count: int = 1
    mode: str = "User"
    os_type: str = "Linux"


@dataclass(frozen=True)
class PoolState:
    """A pool as ARM reports it; ``error_*`` is the pool's ``status.provisioningError``."""

    name: str
    provisioning_state: str
    vm_size: str | None = None
    count: int | None = None
    node_labels: Mapping[str, str] = field(default_factory=dict)
    node_taints: tuple[str, ...] = ()
    power_state: str | None = None
    created_at: datetime | None = None
    error_code: str | None = None
    error_message: str | None = None

    @property
    def owned(self) -> bool:
        """Created by a kaito gpu-provisioner: the only pools we may modify or delete."""
        return (
            self.node_labels.get(LABEL_MACHINE_TYPE) == MACHINE_TYPE_GPU
            and LABEL_CREATION_TIMESTAMP in self.node_labels
        )

    @property
    def succeeded(self) -> bool:
        return self.provisioning_state == "Succeeded"

    @property
    def busy(self) -> bool:
        return self.provisioning_state in BUSY_STATES

    def failure(self) -> ProvisionerError | None:
        """The classified error of a Failed pool (same table as HTTP errors), else None."""
        if self.provisioning_state != "Failed":
            return None
        code = self.error_code or "ProvisioningFailed"
        message = self.error_message or f"agent pool {self.name} is in provisioning state Failed"
        klass = classify_error(None, code, message)
        if klass is ErrorClass.NOT_FOUND:
            klass = ErrorClass.RETRYABLE
        return error_for(klass, message, code=code)


def format_timestamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime(TIMESTAMP_FORMAT)


def parse_timestamp(value: str | None) -> datetime | None:
    """Our label (or the Go provisioner's layout) as an aware UTC datetime; None if unreadable."""
    for layout in (TIMESTAMP_FORMAT, _GO_TIMESTAMP_FORMAT):
        try:
            return datetime.strptime(value or "", layout).replace(tzinfo=UTC)
        except ValueError:
            continue
    return None


def parse_quantity_gib(value: int | str) -> int:
    """A Kubernetes quantity ("120Gi", "100G", "64424509440", "1e11") as whole GiB, rounded up
    so the disk is never smaller than asked; raises ValueError for anything else."""
    match = _QUANTITY.match(str(value).strip())
    if not match or match.group(3) not in _SUFFIX:
        raise ValueError(f"not a quantity: {value!r}")
    number, exponent, suffix = match.groups()
    try:
        amount = Decimal(number) * (Decimal(10) ** int(exponent or 0)) * _SUFFIX[suffix]
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only decimals
        raise ValueError(f"not a quantity: {value!r}") from exc
    if amount <= 0:
        raise ValueError(f"quantity must be positive: {value!r}")
    return math.ceil(amount / Decimal(2**30))


def pool_spec_from_machine(machine: Machine | NodeClaim, now: datetime) -> PoolSpec:
    """The pool body for a Machine or a NodeClaim; invalid ones raise
    :class:`InvalidPoolParameters` (a permanent failure of that object)."""
    name, kind = machine.name, machine.kind
    if not _POOL_NAME.match(name):
        raise InvalidPoolParameters(
            f"{kind} name {name!r} cannot name an AKS agent pool: it must start with a lowercase "
            "letter and have at most 12 lowercase letters and digits"
        )
    vm_size = machine.instance_type
    if not vm_size:
        raise InvalidPoolParameters(
            f"{kind} {name} has no 'node.kubernetes.io/instance-type In [<vm size>]' requirement"
        )
    disk: int | None = None
    storage = ((machine.spec.resources.requests or {}) if machine.spec.resources else {}).get(
        "storage"
    )
    if storage is not None:
        try:
            disk = parse_quantity_gib(storage)
        except ValueError as exc:
            raise InvalidPoolParameters(f"{kind} {name}: storage request {exc}") from exc
    labels = dict(machine.metadata.labels or {})
    labels[LABEL_MACHINE_TYPE] = MACHINE_TYPE_GPU
    labels[LABEL_CREATION_TIMESTAMP] = format_timestamp(now)
    taints = tuple(
        f"{t.key}={t.value}:{t.effect}" if t.value else f"{t.key}:{t.effect}"
        for t in machine.spec.taints or []
    )
    return PoolSpec(
        name=name, vm_size=vm_size, node_labels=labels, node_taints=taints, os_disk_size_gb=disk
    )
