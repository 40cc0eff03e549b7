"""kopf handlers of the workspace controller: thin, each one hands off to the runtime.

Built into an explicit registry (`build_registry`), so nothing registers at import time and
tests can run several operators in one process.
"""

from __future__ import annotations

from typing import Any

import kopf

from kaito_operator.cache import register_cache
from kaito_operator.controller.startup import KopfIdentity, Login, add_lifecycle
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
    ("karpenter.sh", "v1", "nodeclaims"),
    ("apps", "v1", "deployments"),
    ("apps", "v1", "statefulsets"),
    ("batch", "v1", "jobs"),
    ("v1", "pods"),
    ("v1", "services"),
    ("v1", "nodes"),
]
#: Path of the validating webhook on the webhook server (`/validate-workspace`).
WEBHOOK_ID = "validate-workspace"
#: Wait between checks while a deleted Workspace's node objects (Machines, NodeClaims) go away.
FINALIZE_DELAY = 5.0
#: kopf's finalizer and annotations of the workspace controller live under our API group.
IDENTITY = KopfIdentity(finalizer=FINALIZER, annotation_prefix="kaito.sh")


def build_registry(
    runtime: WorkspaceRuntime,
    login: Login,
    webhook: Any = None,
    webhook_config: str | None = None,
) -> kopf.OperatorRegistry:
    """Handlers bound to `runtime`. `login` gives kopf and our client their credentials (it is
    called like kopf's login functions). `webhook` (a kopf webhook server) turns on the validating
    admission webhook; `webhook_config` names the ValidatingWebhookConfiguration kopf keeps
    pointed at it (with the CA bundle)."""
    registry = kopf.OperatorRegistry()

    def admission(settings: kopf.OperatorSettings) -> None:
        if webhook is not None:
            settings.admission.server = webhook
            settings.admission.managed = webhook_config

    add_lifecycle(registry, login, IDENTITY, runtime.settings.max_workers,
                  runtime.start, runtime.stop, configure=admission)
    register_cache(registry, runtime.cache)

    @kopf.on.resume(*WORKSPACE, registry=registry)
    @kopf.on.create(*WORKSPACE, registry=registry)
    @kopf.on.update(*WORKSPACE, registry=registry)
    async def changed(namespace: str | None, name: str, **_: Any) -> None:
        if namespace:  # Workspaces are namespaced: kopf always names one
            runtime.trigger(namespace, name, urgent=True)  # a new spec does not wait out a backoff

    @kopf.timer(*WORKSPACE, interval=runtime.settings.requeue_seconds, registry=registry)
    async def requeue(namespace: str | None, name: str, **_: Any) -> None:
        if namespace and runtime.due((namespace, name)):
            runtime.trigger(namespace, name)

    @kopf.on.delete(*WORKSPACE, registry=registry)
    async def deleted(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
        remaining = await runtime.finalize(dict(body))
        if remaining:
            logger.info("waiting for %d node object(s) (Machines, NodeClaims) to be deleted",
                        remaining)
            raise kopf.TemporaryError(
                f"waiting for {remaining} node object(s) (Machines, NodeClaims) to be deleted",
                delay=FINALIZE_DELAY,
            )

    if webhook is not None:

        @kopf.on.validate(*WORKSPACE, id=WEBHOOK_ID, registry=registry,
                          operations=["CREATE", "UPDATE"])
        def admit(body: kopf.Body, old: kopf.Body | None = None, **_: Any) -> None:
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

