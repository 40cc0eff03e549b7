"""Operator settings, read from the environment once at start-up.

Everything the builders need from the deployment (image locations, how weights reach the pod,
defaults of the inference server) is here, so builders stay pure: they take a `Settings`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

PREFIX = "KAITO_"


#: What the NodeClaim settings must be for Karpenter's CRD to accept the NodeClaims (the chart's
#: values schema says the same): a NodePool name, a label key (the form of
#: `kaito_operator.api.nodeclaim.LABEL_KEY`, written again here: settings and api are
#: independent layers).
_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_LABEL_KEY = (r"([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
              r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")


class Settings(BaseModel):
    """Environment variable = `KAITO_` + the field name upper-cased (`KAITO_IMAGE_REGISTRY`)."""

    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    image_registry: str = "mcr.microsoft.com/aks/kaito"
    """Registry of the preset images `<registry>/kaito-<preset>:<tag>` and the base image."""
    image_tag: str = "0.1.0"
    weights: Literal["image", "download"] = "image"
    """`image`: weights baked into the preset image. `download`: the base image downloads the
    preset's pinned revision into a volume at start."""
    base_image: str | None = None
    """Inference image without weights; default `<registry>/kaito-base:<tag>`."""
    hf_token_secret: str = "hf-token"
    """Secret (key `HF_TOKEN`) used for gated models in download mode."""
    image_pull_secrets: tuple[str, ...] = ()
    """Pull secrets added to every inference pod (private mirrors of the preset images)."""
    watch_namespaces: tuple[str, ...] = ()
    """Namespaces to watch; empty = the whole cluster."""
    log_level: str = "INFO"
    max_workers: int = Field(default=20, ge=1)
    """Reconciles running at once."""
    max_batch_size: int = Field(default=8, ge=1)
    queue_size: int = Field(default=64, ge=1)
    max_new_tokens_cap: int = Field(default=2048, ge=1)
    default_disk_gib: int = Field(default=100, ge=1)
    """OS disk of nodes for custom-template Workspaces (presets say their own)."""
    requeue_seconds: float = Field(default=10.0, gt=0)
    """How soon a Workspace that waits on something is looked at again."""
    policy_service_accounts: tuple[str, ...] = ()
    """Workspace policy: service accounts a template may name besides `default`."""
    policy_volume_types: tuple[str, ...] = ()
    """Workspace policy: volume types allowed besides the secure set (e.g. `hostPath`)."""
    policy_capabilities: tuple[str, ...] = ()
    """Workspace policy: capabilities a container may add besides NET_BIND_SERVICE."""
    policy_sysctls: tuple[str, ...] = ()
    """Workspace policy: sysctls allowed besides the safe set."""
    policy_allow_privileged: bool = False
    """Workspace policy: privileged containers and privilege escalation."""
    policy_allow_host_namespaces: bool = False
    """Workspace policy: hostNetwork, hostPID and hostIPC."""
    policy_allow_host_ports: bool = False
    """Workspace policy: container ports bound on the node."""
    policy_allow_unconfined: bool = False
    """Workspace policy: Unconfined seccomp/AppArmor, custom SELinux, procMount Unmasked."""
    egress_allow_private: bool = False
    """Let the pods' fetches (dataset download, adapter fetcher, adapter push) reach private
    addresses (RFC 1918, 100.64/10, fc00::/7): in-cluster or private-endpoint stores and
    registries. Loopback, link-local and metadata addresses stay refused."""

    node_provisioning: Literal["machine", "nodeclaim", "none"] = "machine"
    """How missing GPU nodes are obtained: `machine` creates a `karpenter.sh/v1alpha5` Machine
    per missing node (the gpu-provisioner before v0.3); `nodeclaim` creates a `karpenter.sh/v1`
    NodeClaim (gpu-provisioner v0.3+ or Karpenter); `none` creates nothing and uses the Ready
    nodes that carry the Workspace's labels (bring your own nodes)."""
    nodeclaim_nodepool: str = Field(default="kaito", max_length=63, pattern=_DNS_LABEL)
    """`nodeclaim` mode: the NodePool named by the `karpenter.sh/nodepool` label and
    requirement of every NodeClaim."""
    nodeclaim_node_class_group: str = Field(default="karpenter.azure.com", min_length=1,
                                            pattern=r"^[^/]*$")
    """`nodeclaim` mode: `spec.nodeClassRef.group` (`karpenter.k8s.aws` on AWS)."""
    nodeclaim_node_class_kind: str = Field(default="AKSNodeClass", min_length=1)
    """`nodeclaim` mode: `spec.nodeClassRef.kind` (`EC2NodeClass` on AWS)."""
    nodeclaim_node_class_name: str = Field(default="default", min_length=1)
    """`nodeclaim` mode: `spec.nodeClassRef.name`, the NodeClass object to use."""
    nodeclaim_sku_label: str = Field(default="karpenter.azure.com/sku-name", max_length=316,
                                     pattern=rf"^({_LABEL_KEY})?$")
    """`nodeclaim` mode: the cloud's own instance-type key, required to equal the instance
    type besides `node.kubernetes.io/instance-type` (empty: none; AWS needs none)."""

    @property
    def base_image_ref(self) -> str:
        return self.base_image or f"{self.image_registry}/kaito-base:{self.image_tag}"

    def preset_image(self, preset: str) -> str:
        return f"{self.image_registry}/kaito-{preset}:{self.image_tag}"


class SettingsError(ValueError):
    """A setting in the environment is invalid; the message names the variable."""


_LISTS = {"image_pull_secrets", "watch_namespaces", "policy_service_accounts",
          "policy_volume_types", "policy_capabilities", "policy_sysctls"}


def settings_from_env(environ: Mapping[str, str]) -> Settings:
    values: dict[str, object] = {}
    for name in Settings.model_fields:
        raw = environ.get(PREFIX + name.upper())
        if raw is None:
            continue
        values[name] = tuple(p.strip() for p in raw.split(",") if p.strip()) if (
            name in _LISTS
        ) else raw
    try:
        return Settings.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{PREFIX}{str(e['loc'][0]).upper()}: {e['msg']}" for e in exc.errors()
        )
        raise SettingsError(problems) from exc
