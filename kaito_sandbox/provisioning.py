"""The sandbox's node-provisioning modes (`kaito sandbox up --provisioner ...`).

Each mode is the operator's `KAITO_NODE_PROVISIONING` and, where there is one, the
gpu-provisioner's `PROVISIONER_NODE_KIND`: `machine` (the default, what `make demo` runs) and
`nodeclaim` run the gpu-provisioner against the simulated Azure; `none` runs none and offers
pre-joined GPU nodes instead (kaito_sandbox/byo_nodes.py).
"""

from __future__ import annotations

MACHINE, NODECLAIM, NONE = "machine", "nodeclaim", "none"
MODES = (MACHINE, NODECLAIM, NONE)
DEFAULT = MACHINE

_SAYS = {
    MACHINE: "the operator creates a karpenter.sh/v1alpha5 Machine per missing node; the "
             "gpu-provisioner turns each into an agent pool whose node joins",
    NODECLAIM: "the operator creates a karpenter.sh/v1 NodeClaim per missing node; the "
               "gpu-provisioner turns each into an agent pool whose node joins",
    NONE: "bring your own nodes: no Machine or NodeClaim is created and no gpu-provisioner "
          "runs; Workspaces use the Ready nodes carrying their labels and instance type",
}


def operator_env(mode: str) -> dict[str, str]:
    """The workspace operator's environment for `mode`."""
    return {"KAITO_NODE_PROVISIONING": mode}


def provisioner_env(mode: str) -> dict[str, str] | None:
    """The gpu-provisioner's environment for `mode`; None: no gpu-provisioner runs."""
    if mode == NONE:
        return None
    return {"PROVISIONER_NODE_KIND": mode}


def describe(mode: str) -> str:
    return f"{mode} ({_SAYS[mode]})"
