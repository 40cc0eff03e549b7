"""kopf handlers of the gpu-provisioner: thin, each one hands off to the runtime.

Built into an explicit registry (:func:`build_registry`), so nothing registers at import time
and tests can run several provisioners (a restart) in one process.  The kind served
(``PROVISIONER_NODE_KIND``) gets the resume/create/update/delete handlers; objects of the other
kind that belong to a Workspace (labelled ``kaito.sh/workspace``) get only the delete handler,
whose finalizer deletes their pool: a Machine created before a switch to NodeClaims (or the
other way round) still takes its pool with it.  A kind the cluster does not serve is skipped
by kopf (a CRD installed later is watched from the next start: kopf re-scans only where it may
watch CRDs, which the chart does not grant).  kopf's finalizer, progress and diff-base
annotations live under our own names, apart from the workspace controller's.
"""

from __future__ import annotations

from typing import Any

import kopf

from kaito_operator.cache import register_cache
from kaito_operator.controller.startup import KopfIdentity, Login, add_lifecycle
from kaito_operator.provisioner.kinds import WORKSPACE_LABEL
from kaito_operator.provisioner.pools import AGENTPOOL_NODE_LABEL
from kaito_operator.provisioner.runtime import ProvisionerRuntime

__all__ = ["FINALIZER", "IDENTITY", "build_registry"]

NODE = ("v1", "nodes")
FINALIZER = "kaito.sh/gpu-provisioner"
ANNOTATION_PREFIX = "gpu-provisioner.kaito.sh"
IDENTITY = KopfIdentity(finalizer=FINALIZER, annotation_prefix=ANNOTATION_PREFIX)


def build_registry(runtime: ProvisionerRuntime, login: Login) -> kopf.OperatorRegistry:
    """Handlers bound to ``runtime``; ``login`` gives kopf and our client their credentials."""
    registry = kopf.OperatorRegistry()
    add_lifecycle(registry, login, IDENTITY, runtime.settings.max_workers,
                  runtime.start, runtime.stop)
    register_cache(registry, runtime.cache)

    served, legacy = runtime.node_kind.resource, runtime.other_kind.resource

    @kopf.on.resume(*served, id="changed", registry=registry)
    @kopf.on.create(*served, id="changed", registry=registry)
    @kopf.on.update(*served, id="changed", registry=registry)
    async def changed(name: str, **_: Any) -> None:
        runtime.trigger(name)

    async def deleted(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
        delay = await runtime.finalize(dict(body))
        if delay is not None:
            logger.debug("waiting for the agent pool to be deleted")
            raise kopf.TemporaryError("waiting for the agent pool to be deleted", delay=delay)

    kopf.on.delete(*served, id="deleted", registry=registry)(deleted)
    kopf.on.delete(*legacy, id="deleted", labels={WORKSPACE_LABEL: kopf.PRESENT},
                   registry=registry)(deleted)

    @kopf.on.event(*NODE, labels={AGENTPOOL_NODE_LABEL: kopf.PRESENT}, registry=registry)
    async def node_changed(labels: kopf.Labels, **_: Any) -> None:
        runtime.node_changed(dict(labels))

    return registry
