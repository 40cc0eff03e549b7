"""The OCI registry pieces that pulling an adapter and pushing one have in common.

`reference` parses `[host[:port]/]repository[:tag][@digest]`; `auth` reads docker-config
secrets and `WWW-Authenticate` challenges; `session` sends requests to one registry through the
egress guard (`kaito_egress`) with bounded retries and body sizes.  Every failure is a
:class:`RegistryError` whose one-line message is meant for the pod's termination message.
"""

from kaito_workload.oci.auth import (
    Credentials,
    basic_authorization,
    load_auths,
    parse_challenge,
    read_docker_config,
    token_url,
)
from kaito_workload.oci.errors import RegistryError
from kaito_workload.oci.reference import DOCKER_HUB, ImageReference, is_loopback, parse_reference
from kaito_workload.oci.session import RETRY_STATUSES, RegistrySession

__all__ = [
    "DOCKER_HUB",
    "RETRY_STATUSES",
    "Credentials",
    "ImageReference",
    "RegistryError",
    "RegistrySession",
    "basic_authorization",
    "is_loopback",
    "load_auths",
    "parse_challenge",
    "parse_reference",
    "read_docker_config",
    "token_url",
]
