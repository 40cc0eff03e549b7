"""The one error type of `kaito_workload.oci`."""

from __future__ import annotations


class RegistryError(Exception):
    """A registry, reference or secret failure; the message is one line meant for the user
    (the pod's termination message)."""
