"""Typed models of the resources the operators read and write.

They are parsed once at the edge (CLI, webhook, controller) and the CRDs in `crds/` are
generated from them (`kaito_operator.api.crd`), so the schema the API server enforces and the
schema the code assumes cannot drift apart.
"""

from kaito_operator.api.machine import Machine
from kaito_operator.api.nodeclaim import NodeClaim
from kaito_operator.api.workspace import Workspace

__all__ = ["Machine", "NodeClaim", "Workspace"]
