"""Reading a Workspace's node objects of every kind; a kind the cluster does not serve (its
list answers 404: no such CRD) has none."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kaito_operator.cache import Client
from kaito_operator.kube import MACHINES, NODECLAIMS, ApiError, Kind, KubeClient
from kaito_operator.workspace.names import WORKSPACE_LABEL, WORKSPACE_NAMESPACE_LABEL
from kaito_operator.workspace.provisioning.base import OwnedNode
from kaito_operator.workspace.provisioning.machine import machine_view
from kaito_operator.workspace.provisioning.nodeclaim import nodeclaim_view

#: Every kind of node object a Workspace may own, with how each is viewed.
OWNED_KINDS: tuple[tuple[Kind, Callable[[dict[str, Any]], OwnedNode]], ...] = (
    (MACHINES, machine_view),
    (NODECLAIMS, nodeclaim_view),
)


def owner_labels(namespace: str, name: str) -> dict[str, str]:
    return {WORKSPACE_LABEL: name, WORKSPACE_NAMESPACE_LABEL: namespace}


async def list_owned(
    client: Client | KubeClient, kind: Kind, namespace: str, name: str
) -> list[dict[str, Any]]:
    """The Workspace's objects of `kind` as `client` has them (none when 404)."""
    try:
        return await client.list(kind, labels=owner_labels(namespace, name))
    except ApiError as exc:
        if exc.status == 404:
            return []
        raise


async def owned_objects(client: Client, namespace: str, name: str) -> list[OwnedNode]:
    """Views of the Workspace's Machines and NodeClaims, Machines first, each by name."""
    found: list[OwnedNode] = []
    for kind, view in OWNED_KINDS:
        found += [view(obj) for obj in await list_owned(client, kind, namespace, name)]
    return found
