"""kopf handlers of the gpu-provisioner: thin, each one hands off to the runtime.

Built into an explicit registry (:func:`build_registry`), so nothing registers at import time
and tests can run several provisioners (a restart) in one process.  kopf's finalizer, progress
and diff-base annotations live under our own names, apart from the workspace controller's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import kopf

from kaito_operator.kopf_support import connect_with
from kaito_operator.provisioner.pools import AGENTPOOL_NODE_LABEL
from kaito_operator.provisioner.runtime import ProvisionerRuntime

__all__ = ["FINALIZER", "build_registry", "configure"]

MACHINE = ("karpenter.sh", "v1alpha5", "machines")
NODE = ("v1", "nodes")
FINALIZER = "kaito.sh/gpu-provisioner"
ANNOTATION_PREFIX = "gpu-provisioner.kaito.sh"


def configure(settings: kopf.OperatorSettings, max_workers: int) -> None:
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=ANNOTATION_PREFIX
    )
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    settings.execution.max_workers = max_workers
    settings.scanning.disabled = True
    settings.peering.standalone = True


def build_registry(
    runtime: ProvisionerRuntime, login: Callable[..., kopf.ConnectionInfo | None]
) -> kopf.OperatorRegistry:
    """Handlers bound to ``runtime``; ``login`` gives kopf and our client their credentials."""
    registry = kopf.OperatorRegistry()

    kopf.on.login(registry=registry)(login)

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, logger: kopf.Logger, **_: Any) -> None:
        configure(settings, runtime.settings.max_workers)
        await runtime.start(connect_with(login, settings, logger))

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        await runtime.stop()

    @kopf.on.resume(*MACHINE, registry=registry)
    @kopf.on.create(*MACHINE, registry=registry)
    @kopf.on.update(*MACHINE, registry=registry)
    async def changed(name: str, **_: Any) -> None:
        runtime.trigger(name)

    @kopf.on.delete(*MACHINE, registry=registry)
    async def deleted(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
        delay = await runtime.finalize(dict(body))
        if delay is not None:
            logger.debug("waiting for the agent pool to be deleted")
            raise kopf.TemporaryError("waiting for the agent pool to be deleted", delay=delay)

    @kopf.on.event(*NODE, labels={AGENTPOOL_NODE_LABEL: kopf.PRESENT}, registry=registry)
    async def node_changed(labels: kopf.Labels, **_: Any) -> None:
        runtime.node_changed(dict(labels))

    return registry
