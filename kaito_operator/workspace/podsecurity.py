"""Security contexts of the pods the operator builds: the `restricted` Pod Security Standard.

The product's images run as UID/GID 1000 (`USER 1000:1000`). Every pod the operator builds from
a preset runs as that user with the runtime's default seccomp profile and no service account
token; every container drops all capabilities, cannot gain privileges and has a read-only root
filesystem (the processes write only to the emptyDirs the pod mounts: `/tmp`, caches, adapters,
data, results). A custom `inference.template` gets the same defaults wherever its author left a
field unset; a value the author wrote is kept (the Workspace policy refuses the dangerous ones).
"""

from __future__ import annotations

import copy
from typing import Any

RUN_AS_UID = 1000
RUN_AS_GID = 1000
CONTAINER_LISTS = ("initContainers", "containers")


def pod_security_context() -> dict[str, Any]:
    """Pod-level context: non-root UID/GID 1000, volumes group-owned by 1000, RuntimeDefault
    seccomp. `OnRootMismatch` avoids a recursive chown of large input volumes on every start."""
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_UID,
        "runAsGroup": RUN_AS_GID,
        "fsGroup": RUN_AS_GID,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    """Container-level context of the product's own containers."""
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
    }


def harden_pod_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """Sets the restricted contexts on a pod spec the operator built (in place; returns it)."""
    spec["securityContext"] = pod_security_context()
    spec["automountServiceAccountToken"] = False
    for key in CONTAINER_LISTS:
        for container in spec.get(key) or []:
            container["securityContext"] = container_security_context()
    return spec


def _fill(target: dict[str, Any], defaults: dict[str, Any]) -> None:
    """Adds each default key the target lacks (or holds as null); nested dicts are filled the
    same way, so a user's `seccompProfile.localhostProfile` or `capabilities.add` stays."""
    for key, value in defaults.items():
        current = target.get(key)
        if current is None:
            target[key] = copy.deepcopy(value)
        elif isinstance(current, dict) and isinstance(value, dict):
            _fill(current, value)


def _child(parent: dict[str, Any], key: str) -> dict[str, Any]:
    """`parent[key]` as a mapping, made an empty one when absent or not a mapping."""
    value = parent.get(key)
    if not isinstance(value, dict):
        value = {}
        parent[key] = value
    return value


def fill_restricted_defaults(spec: dict[str, Any]) -> dict[str, Any]:
    """Completes a user's pod spec (in place; returns it) with the restricted defaults it left
    unset: the pod's non-root UID/GID, fsGroup and RuntimeDefault seccomp, no service account
    token, and per container `allowPrivilegeEscalation: false` and `capabilities.drop: [ALL]`.

    Explicit values win, including `automountServiceAccountToken: true` and a container's own
    `runAsUser`. The root filesystem is left writable unless the author asks otherwise: an
    arbitrary server image usually writes to its home or cache folders."""
    _fill(_child(spec, "securityContext"), {k: v for k, v in pod_security_context().items()
                                            if k != "fsGroupChangePolicy"})
    if spec.get("automountServiceAccountToken") is None:
        spec["automountServiceAccountToken"] = False
    for key in CONTAINER_LISTS:
        for container in spec.get(key) or []:
            if not isinstance(container, dict):
                continue
            context = _child(container, "securityContext")
            _child(context, "capabilities")
            _fill(context, {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}})
    return spec
