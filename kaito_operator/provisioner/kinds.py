"""The two kinds the gpu-provisioner serves, each described once (docs/design.md §4).

A :class:`NodeKind` says where the kind lives in the API (:class:`~kaito_operator.kube.Kind`
and the kopf resource tuple), which condition types its lifecycle writes, and how to read an
object into the model ``pool_spec_from_machine`` takes.  Everything else (the pass, the
finalizer, garbage collection) is one code path over either descriptor.  Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kaito_operator.api import machine as machine_api
from kaito_operator.api import nodeclaim as nodeclaim_api
from kaito_operator.api.machine import Machine
from kaito_operator.api.nodeclaim import NodeClaim
from kaito_operator.kube import MACHINES, NODECLAIMS, Kind
from kaito_operator.provisioner.lifecycle import ConditionTypes
from kaito_operator.provisioner.settings import NodeKindName

__all__ = [
    "MACHINE_KIND",
    "NODECLAIM_KIND",
    "NODE_KIND_BY_NAME",
    "WORKSPACE_LABEL",
    "NodeKind",
    "node_kinds",
]

#: Objects of the kind not served are finalized only when they carry this label (a Workspace's).
WORKSPACE_LABEL = "kaito.sh/workspace"


@dataclass(frozen=True)
class NodeKind:
    """One kind of node request: a Machine or a NodeClaim."""

    name: NodeKindName
    kind: Kind
    conditions: ConditionTypes
    parse: Callable[[Mapping[str, Any]], Machine | NodeClaim]
    """The object as its model; raises pydantic's ValidationError when it is not one."""

    @property
    def resource(self) -> tuple[str, str, str]:
        """(group, version, plural): how kopf names the kind."""
        return (self.kind.group, self.kind.version, self.kind.plural)

    @property
    def title(self) -> str:
        """``Machine`` or ``NodeClaim``, for messages and logs."""
        return self.kind.kind


MACHINE_KIND = NodeKind(
    name="machine",
    kind=MACHINES,
    conditions=ConditionTypes(machine_api.LAUNCHED, machine_api.REGISTERED,
                              machine_api.INITIALIZED, machine_api.READY),
    parse=Machine.model_validate,
)
NODECLAIM_KIND = NodeKind(
    name="nodeclaim",
    kind=NODECLAIMS,
    conditions=ConditionTypes(nodeclaim_api.LAUNCHED, nodeclaim_api.REGISTERED,
                              nodeclaim_api.INITIALIZED, nodeclaim_api.READY),
    parse=NodeClaim.model_validate,
)
NODE_KIND_BY_NAME: Mapping[NodeKindName, NodeKind] = {
    "machine": MACHINE_KIND,
    "nodeclaim": NODECLAIM_KIND,
}


def node_kinds(served: NodeKindName) -> tuple[NodeKind, NodeKind]:
    """(the kind provisioned, the other kind: only finalized)."""
    primary = NODE_KIND_BY_NAME[served]
    other = NODECLAIM_KIND if primary is MACHINE_KIND else MACHINE_KIND
    return primary, other
