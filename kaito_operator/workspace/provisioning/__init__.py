"""How a Workspace's missing GPU nodes are obtained: one `Provisioner` per mode
(`Settings.node_provisioning`: `machine`, `nodeclaim`, `none`), and the kind-agnostic view of
the node objects a Workspace owns, whatever mode created them."""

from __future__ import annotations

from kaito_operator.workspace.provisioning.base import (
    ConditionNames,
    OwnedNode,
    Provisioner,
    free_indices,
)
from kaito_operator.workspace.provisioning.machine import MACHINE_PROVISIONER, build_machine
from kaito_operator.workspace.provisioning.nodeclaim import (
    NODECLAIM_PROVISIONER,
    build_nodeclaim,
)
from kaito_operator.workspace.provisioning.none import NO_PROVISIONER
from kaito_operator.workspace.provisioning.owned import (
    OWNED_KINDS,
    list_owned,
    owned_objects,
    owner_labels,
)

__all__ = [
    "OWNED_KINDS", "ConditionNames", "OwnedNode", "Provisioner", "build_machine",
    "build_nodeclaim", "free_indices", "list_owned", "owned_objects", "owner_labels",
    "provisioner_for",
]

_BY_MODE = {p.mode: p for p in (MACHINE_PROVISIONER, NODECLAIM_PROVISIONER, NO_PROVISIONER)}


def provisioner_for(mode: str) -> Provisioner:
    """The provisioner of a mode; raises ValueError for an unknown one."""
    try:
        return _BY_MODE[mode]
    except KeyError:
        raise ValueError(f"unknown node-provisioning mode {mode!r}: "
                         f"one of {', '.join(sorted(_BY_MODE))}") from None
