"""The Workspace policy: which pod shapes a Workspace author may ask for.

Whoever may create a Workspace may run the pods it describes, so `inference.template` and the
tuning volumes are held to a policy. The default is secure: no privileged containers, no host
namespaces or host ports, no node-level volumes (hostPath and other types that reach into the
node), no capabilities beyond NET_BIND_SERVICE, no escalation, no unmasked /proc, no unsafe
sysctls, no Unconfined seccomp or AppArmor profile, no custom SELinux type, and only allowed
service accounts. Every refusal names the field, the value, what is allowed and the operator
setting (`KAITO_POLICY_*`, chart value `policy.*`) that would allow it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from kaito_operator.settings import Settings
from kaito_operator.validation.findings import Finding, show

#: Volume types that keep a pod off the node's file systems: the Pod Security Standard
#: `restricted` set plus network file systems (NFS, Azure Files).
VOLUME_TYPES = frozenset({
    "configMap", "secret", "emptyDir", "persistentVolumeClaim", "projected", "downwardAPI",
    "csi", "ephemeral", "nfs", "azureFile",
})
#: Sources a `projected` volume may combine.
PROJECTED_SOURCES = frozenset({"configMap", "secret", "downwardAPI", "serviceAccountToken"})
#: The only capability the `restricted` Pod Security Standard lets a container add.
CAPABILITIES = frozenset({"NET_BIND_SERVICE"})
#: Sysctls the Pod Security Standards call safe (namespaced, no effect on other pods).
SAFE_SYSCTLS = frozenset({
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
})
#: SELinux types of confined containers.
SELINUX_TYPES = frozenset({
    "container_t", "container_init_t", "container_kvm_t", "container_engine_t",
})
_CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")
_APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"
_SECCOMP_ANNOTATIONS = (
    "seccomp.security.alpha.kubernetes.io/pod",
    "container.seccomp.security.alpha.kubernetes.io/",
)


@dataclass(frozen=True)
class Policy:
    """What a Workspace may ask for beyond the secure defaults."""

    service_accounts: frozenset[str] = frozenset()
    """Service accounts a template may name, besides `default`."""
    volume_types: frozenset[str] = frozenset()
    """Volume types allowed besides `VOLUME_TYPES` (e.g. `hostPath`)."""
    capabilities: frozenset[str] = frozenset()
    """Capabilities a container may add besides NET_BIND_SERVICE."""
    sysctls: frozenset[str] = frozenset()
    """Sysctls allowed besides the safe set."""
    allow_privileged: bool = False
    """Privileged containers, allowPrivilegeEscalation, Windows hostProcess."""
    allow_host_namespaces: bool = False
    """hostNetwork, hostPID, hostIPC."""
    allow_host_ports: bool = False
    """Container ports bound on the node (`hostPort`)."""
    allow_unconfined: bool = False
    """Unconfined seccomp or AppArmor, custom SELinux options, procMount Unmasked."""


DEFAULT_POLICY = Policy()

#: The operator setting (environment variable, chart value) that relaxes each rule.
_SETTING = {
    "service_accounts": ("KAITO_POLICY_SERVICE_ACCOUNTS", "policy.serviceAccounts"),
    "volume_types": ("KAITO_POLICY_VOLUME_TYPES", "policy.volumeTypes"),
    "capabilities": ("KAITO_POLICY_CAPABILITIES", "policy.capabilities"),
    "sysctls": ("KAITO_POLICY_SYSCTLS", "policy.sysctls"),
    "allow_privileged": ("KAITO_POLICY_ALLOW_PRIVILEGED", "policy.allowPrivileged"),
    "allow_host_namespaces": ("KAITO_POLICY_ALLOW_HOST_NAMESPACES", "policy.allowHostNamespaces"),
    "allow_host_ports": ("KAITO_POLICY_ALLOW_HOST_PORTS", "policy.allowHostPorts"),
    "allow_unconfined": ("KAITO_POLICY_ALLOW_UNCONFINED", "policy.allowUnconfined"),
}


def _refuse(path: str, value: Any, allowed: str, setting: str) -> Finding:
    env, chart = _SETTING[setting]
    if setting.startswith("allow_"):
        how = f"set {env}=true (chart value {chart}: true)"
    elif not isinstance(value, str):
        return Finding(path, f"{show(value)} is not valid: must be a string")
    else:
        name = value if value.isprintable() and len(value) <= 64 else show(value)
        how = f"add {name} to {env} (chart value {chart})"
    return Finding(
        path,
        f"{show(value)} is not allowed by the Workspace policy: {allowed}; an operator can "
        f"allow it: {how}",
    )


def _is_in(value: Any, allowed: frozenset[str] | set[str]) -> bool:
    """Membership that is false (not an error) for values that cannot be in a set of names."""
    return isinstance(value, str) and value in allowed


def _shape(path: str, value: Any, wanted: type, noun: str) -> Finding | None:
    if isinstance(value, wanted) and not (wanted is int and isinstance(value, bool)):
        return None
    return Finding(path, f"{show(value)} is not valid: must be {noun}")


def _mapping(path: str, value: Any) -> tuple[Mapping[str, Any], list[Finding]]:
    """`value` when it is a mapping (None counts as empty), else a finding."""
    if value is None:
        return {}, []
    if isinstance(value, Mapping):
        return value, []
    return {}, [Finding(path, f"{show(value)} is not valid: must be a mapping")]


def _list(path: str, value: Any) -> tuple[list[Any], list[Finding]]:
    if value is None:
        return [], []
    if isinstance(value, list):
        return value, []
    return [], [Finding(path, f"{show(value)} is not valid: must be a list")]


def _flag(path: str, value: Any) -> tuple[bool, list[Finding]]:
    """A boolean field that must not be true; a non-boolean is a type error."""
    if value is None:
        return False, []
    if isinstance(value, bool):
        return value, []
    return False, [Finding(path, f"{show(value)} is not valid: must be a boolean")]


def check_volume(path: str, volume: Any, policy: Policy, named: bool = True
                 ) -> Iterator[Finding]:
    """A volume uses exactly one allowed type. With `named=False` it is a VolumeSource (the
    same keys without `name`: the operator names the volume)."""
    volume, found = _mapping(path, volume)
    yield from found
    if not named and "name" in volume:
        yield Finding(f"{path}.name", "is not valid in a volumeSource: the operator names the "
                      "volume")
    kinds = [key for key in volume if key != "name"]
    allowed = VOLUME_TYPES | policy.volume_types
    if not kinds:
        yield Finding(path, f"names no volume type: use one of {', '.join(sorted(allowed))}")
        return
    if len(kinds) > 1:
        yield Finding(path, f"has {len(kinds)} volume types ({', '.join(kinds)}): exactly one")
    for kind in kinds:
        if not _is_in(kind, allowed):
            yield _refuse(
                f"{path}.{kind}", kind,
                f"volume types are limited to {', '.join(sorted(allowed))} (node-level "
                "volumes such as hostPath reach the node's files)",
                "volume_types",
            )
        elif kind == "projected":
            yield from _check_projected(f"{path}.projected", volume[kind], policy)


def _check_projected(path: str, projected: Any, policy: Policy) -> Iterator[Finding]:
    projected, found = _mapping(path, projected)
    yield from found
    sources, found = _list(f"{path}.sources", projected.get("sources"))
    yield from found
    allowed = PROJECTED_SOURCES | policy.volume_types
    for i, source in enumerate(sources):
        source, found = _mapping(f"{path}.sources[{i}]", source)
        yield from found
        for kind in source:
            if not _is_in(kind, allowed):
                yield _refuse(
                    f"{path}.sources[{i}].{kind}", kind,
                    f"projected sources are limited to {', '.join(sorted(allowed))}",
                    "volume_types",
                )


def _check_profile(path: str, profile: Any, policy: Policy) -> Iterator[Finding]:
    """A seccomp or AppArmor profile: both have a `type`, and `Unconfined` needs the setting."""
    profile, found = _mapping(path, profile)
    yield from found
    kind = profile.get("type")
    if kind == "Unconfined" and not policy.allow_unconfined:
        yield _refuse(f"{path}.type", kind, "use RuntimeDefault or Localhost",
                      "allow_unconfined")


def _check_selinux(path: str, options: Any, policy: Policy) -> Iterator[Finding]:
    options, found = _mapping(path, options)
    yield from found
    if policy.allow_unconfined:
        return
    kind = options.get("type")
    if kind not in (None, "") and not _is_in(kind, SELINUX_TYPES):
        yield _refuse(f"{path}.type", kind,
                      f"SELinux type must be one of {', '.join(sorted(SELINUX_TYPES))}",
                      "allow_unconfined")
    for key in ("user", "role"):
        if options.get(key) is not None and options.get(key) != "":
            yield _refuse(f"{path}.{key}", options[key], f"SELinux {key} must not be set",
                          "allow_unconfined")


def _check_common_context(path: str, context: Mapping[str, Any], policy: Policy
                          ) -> Iterator[Finding]:
    """Fields a pod and a container security context share."""
    if "seccompProfile" in context:
        yield from _check_profile(f"{path}.seccompProfile", context["seccompProfile"], policy)
    if "appArmorProfile" in context:
        yield from _check_profile(f"{path}.appArmorProfile", context["appArmorProfile"],
                                   policy)
    if "seLinuxOptions" in context:
        yield from _check_selinux(f"{path}.seLinuxOptions", context["seLinuxOptions"], policy)
    windows, found = _mapping(f"{path}.windowsOptions", context.get("windowsOptions"))
    yield from found
    host_process, found = _flag(f"{path}.windowsOptions.hostProcess",
                                windows.get("hostProcess"))
    yield from found
    if host_process and not policy.allow_privileged:
        yield _refuse(f"{path}.windowsOptions.hostProcess", True,
                      "Windows host-process containers run on the node", "allow_privileged")


def _check_container_context(path: str, context: Any, policy: Policy) -> Iterator[Finding]:
    context, found = _mapping(path, context)
    yield from found
    for field in ("privileged", "allowPrivilegeEscalation"):
        value, found = _flag(f"{path}.{field}", context.get(field))
        yield from found
        if value and not policy.allow_privileged:
            yield _refuse(f"{path}.{field}", True, f"{field} must be false or unset",
                          "allow_privileged")
    proc_mount = context.get("procMount")
    if proc_mount is not None and proc_mount != "Default" and not policy.allow_unconfined:
        yield _refuse(f"{path}.procMount", proc_mount, "procMount must be Default",
                      "allow_unconfined")
    capabilities, found = _mapping(f"{path}.capabilities", context.get("capabilities"))
    yield from found
    added, found = _list(f"{path}.capabilities.add", capabilities.get("add"))
    yield from found
    allowed = CAPABILITIES | policy.capabilities
    for i, capability in enumerate(added):
        if not _is_in(capability, allowed):
            yield _refuse(f"{path}.capabilities.add[{i}]", capability,
                          f"containers may add only {', '.join(sorted(allowed))}",
                          "capabilities")
    yield from _check_common_context(path, context, policy)


def _check_container(path: str, container: Any, policy: Policy) -> Iterator[Finding]:
    container, found = _mapping(path, container)
    yield from found
    if "securityContext" in container:
        yield from _check_container_context(f"{path}.securityContext",
                                            container["securityContext"], policy)
    ports, found = _list(f"{path}.ports", container.get("ports"))
    yield from found
    for i, port in enumerate(ports):
        port, found = _mapping(f"{path}.ports[{i}]", port)
        yield from found
        host_port = port.get("hostPort")
        if host_port is None or (host_port == 0 and not isinstance(host_port, bool)):
            continue
        if problem := _shape(f"{path}.ports[{i}].hostPort", host_port, int, "an integer"):
            yield problem
        elif not policy.allow_host_ports:
            yield _refuse(f"{path}.ports[{i}].hostPort", host_port,
                          "hostPort must be 0 or unset (use the Workspace's Service)",
                          "allow_host_ports")


def _check_pod_context(path: str, context: Any, policy: Policy) -> Iterator[Finding]:
    context, found = _mapping(path, context)
    yield from found
    sysctls, found = _list(f"{path}.sysctls", context.get("sysctls"))
    yield from found
    allowed = SAFE_SYSCTLS | policy.sysctls
    for i, sysctl in enumerate(sysctls):
        sysctl, found = _mapping(f"{path}.sysctls[{i}]", sysctl)
        yield from found
        name = sysctl.get("name")
        if not _is_in(name, allowed):
            yield _refuse(f"{path}.sysctls[{i}].name", name,
                          "only the safe sysctls of the Pod Security Standards",
                          "sysctls")
    yield from _check_common_context(path, context, policy)


def _check_annotations(path: str, metadata: Any, policy: Policy) -> Iterator[Finding]:
    metadata, found = _mapping(path, metadata)
    yield from found
    annotations, found = _mapping(f"{path}.annotations", metadata.get("annotations"))
    yield from found
    if policy.allow_unconfined:
        return
    for key, value in annotations.items():
        legacy = str(key).startswith(_APPARMOR_ANNOTATION) or any(
            str(key).startswith(prefix) for prefix in _SECCOMP_ANNOTATIONS
        )
        if legacy and value == "unconfined":
            yield _refuse(f"{path}.annotations[{key}]", value,
                          "use runtime/default or a localhost profile", "allow_unconfined")


def _check_service_account(path: str, spec: Mapping[str, Any], policy: Policy
                           ) -> Iterator[Finding]:
    allowed = {"default"} | policy.service_accounts
    for field in ("serviceAccountName", "serviceAccount"):
        name = spec.get(field)
        if name is None or name == "":
            continue
        if not _is_in(name, allowed):
            yield _refuse(f"{path}.{field}", name,
                          f"service accounts are limited to {', '.join(sorted(allowed))}",
                          "service_accounts")


def check_template(path: str, template: Any, policy: Policy) -> Iterator[Finding]:
    """Every policy rule over a PodTemplateSpec (its pod spec and every container)."""
    template, found = _mapping(path, template)
    yield from found
    yield from _check_annotations(f"{path}.metadata", template.get("metadata"), policy)
    spec, found = _mapping(f"{path}.spec", template.get("spec"))
    yield from found
    base = f"{path}.spec"
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        value, found = _flag(f"{base}.{field}", spec.get(field))
        yield from found
        if value and not policy.allow_host_namespaces:
            yield _refuse(f"{base}.{field}", True,
                          f"{field} must be false or unset (the node's namespaces)",
                          "allow_host_namespaces")
    _, found = _flag(f"{base}.hostUsers", spec.get("hostUsers"))
    yield from found
    if spec.get("nodeName") is not None and spec.get("nodeName") != "":
        yield Finding(f"{base}.nodeName",
                      f"{show(spec['nodeName'])} is not allowed: the operator chooses the "
                      "nodes (use resource.labelSelector or resource.preferredNodes)")
    yield from _check_service_account(base, spec, policy)
    if "securityContext" in spec:
        yield from _check_pod_context(f"{base}.securityContext", spec["securityContext"],
                                      policy)
    volumes, found = _list(f"{base}.volumes", spec.get("volumes"))
    yield from found
    for i, volume in enumerate(volumes):
        yield from check_volume(f"{base}.volumes[{i}]", volume, policy)
    for field in _CONTAINER_LISTS:
        containers, found = _list(f"{base}.{field}", spec.get(field))
        yield from found
        for i, container in enumerate(containers):
            yield from _check_container(f"{base}.{field}[{i}]", container, policy)


def policy_from_settings(settings: Settings) -> Policy:
    """The policy the operator's `KAITO_POLICY_*` settings describe."""
    return Policy(
        service_accounts=frozenset(settings.policy_service_accounts),
        volume_types=frozenset(settings.policy_volume_types),
        capabilities=frozenset(settings.policy_capabilities),
        sysctls=frozenset(settings.policy_sysctls),
        allow_privileged=settings.policy_allow_privileged,
        allow_host_namespaces=settings.policy_allow_host_namespaces,
        allow_host_ports=settings.policy_allow_host_ports,
        allow_unconfined=settings.policy_allow_unconfined,
    )
