"""`none` mode (bring your own nodes): nothing is created; the Workspace runs on the Ready
nodes that carry its `matchLabels` and its instance type (or are named in `preferredNodes`)."""

from __future__ import annotations

from kaito_operator.workspace.provisioning.base import Provisioner

NO_PROVISIONER = Provisioner(mode="none", kind=None, build=None, condition=None)
