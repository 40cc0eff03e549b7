"""kopf handlers of the workspace controller: thin, each one hands off to the runtime.

Built into an explicit registry (`build_registry`), so nothing registers at import time and
tests can run several operators in one process.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import kopf

from kaito_operator.kopf_support import connect_with
from kaito_operator.validation import (
    errors,
    policy_from_settings,
    summary,
    validate_workspace,
)
from kaito_operator.workspace.names import FINALIZER, WORKSPACE_LABEL
from kaito_operator.workspace.runtime import WorkspaceRuntime

WORKSPACE = ("kaito.sh", "v1alpha1", "workspaces")
CHILDREN = [
    ("karpenter.sh", "v1alpha5", "machines"),
    ("apps", "v1", "deployments"),
    ("apps", "v1", "statefulsets"),
    ("batch", "v1", "jobs"),
    ("v1", "pods"),
    ("v1", "services"),
    ("v1", "nodes"),
]
#: Path of the validating webhook on the webhook server (`/validate-workspace`).
WEBHOOK_ID = "validate-workspace"
#: Wait between checks while a deleted Workspace's Machines are going away.
FINALIZE_DELAY = 5.0


def configure(settings: kopf.OperatorSettings, max_workers: int) -> None:
    """kopf's own bookkeeping under our API group; only warnings posted as Events by kopf."""
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="kaito.sh")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="kaito.sh", key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    settings.execution.max_workers = max_workers
    settings.scanning.disabled = True
    settings.peering.standalone = True


def build_registry(
    runtime: WorkspaceRuntime,
    login: Callable[..., kopf.ConnectionInfo | None],
    webhook: Any = None,
    webhook_config: str | None = None,
) -> kopf.OperatorRegistry:
    """Handlers bound to `runtime`. `login` gives kopf and our client their credentials (it is
    called like kopf's login functions). `webhook` (a kopf webhook server) turns on the validating
    admission webhook; `webhook_config` names the ValidatingWebhookConfiguration kopf keeps
    pointed at it (with the CA bundle)."""
    registry = kopf.OperatorRegistry()

    kopf.on.login(registry=registry)(login)

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, logger: kopf.Logger, **_: Any) -> None:
        configure(settings, runtime.settings.max_workers)
        if webhook is not None:
            settings.admission.server = webhook
            settings.admission.managed = webhook_config
        await runtime.start(connect_with(login, settings, logger))

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        await runtime.stop()

    @kopf.on.resume(*WORKSPACE, registry=registry)
    @kopf.on.create(*WORKSPACE, registry=registry)
    @kopf.on.update(*WORKSPACE, registry=registry)
    async def changed(namespace: str, name: str, **_: Any) -> None:
        runtime.trigger(namespace, name, urgent=True)  # a new spec does not wait out a backoff

    @kopf.timer(*WORKSPACE, interval=runtime.settings.requeue_seconds, registry=registry)
    async def requeue(namespace: str, name: str, **_: Any) -> None:
        if runtime.due((namespace, name)):
            runtime.trigger(namespace, name)

    @kopf.on.delete(*WORKSPACE, registry=registry)
    async def deleted(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
        remaining = await runtime.finalize(dict(body))
        if remaining:
            logger.info("waiting for %d Machine(s) to be deleted", remaining)
            raise kopf.TemporaryError(
                f"waiting for {remaining} Machine(s) to be deleted", delay=FINALIZE_DELAY
            )

    if webhook is not None:

        @kopf.on.validate(*WORKSPACE, id=WEBHOOK_ID, registry=registry,
                          operations=["CREATE", "UPDATE"])
        def admit(body: kopf.Body, old: kopf.Body | None, **_: Any) -> None:
            if body.get("metadata", {}).get("deletionTimestamp"):
                return  # going away: only finalizers can still change
            previous = dict(old) if old else None
            found = errors(validate_workspace(dict(body), runtime.catalog, previous,
                                              policy_from_settings(runtime.settings)))
            if found:
                raise kopf.AdmissionError(summary(found), code=400)

    for child in CHILDREN:

        @kopf.on.event(*child, labels={WORKSPACE_LABEL: kopf.PRESENT}, registry=registry)
        async def child_changed(labels: kopf.Labels, namespace: str | None, **_: Any) -> None:
            runtime.trigger_for_labels(dict(labels), namespace)

    return registry

