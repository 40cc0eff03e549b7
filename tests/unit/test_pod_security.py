"""Every pod the operator builds meets the `restricted` Pod Security Standard.

`violations()` is a checker written from the published Pod Security Standards (baseline and
restricted profiles, Kubernetes 1.30+): host process and namespaces, privileged, capabilities,
hostPath, host ports, AppArmor, SELinux, /proc mount, seccomp, sysctls, volume types, privilege
escalation, non-root, UID 0. It runs on the pods rendered from every example in `examples/`
(and variants: unknown SKU, download mode, each tuning input, push output, multi-node), with
checks the standard does not make: emptyDir size limits, CPU/memory requests, no service
account token, a writable mount under every path the product's processes write. The negative
rows show that the checker catches each kind of violation.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kaito_operator.api.workspace import Workspace
from kaito_operator.settings import Settings
from kaito_operator.workspace.tuning import desired_tuning
from kaito_operator.workspace.workload import desired_inference

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").rglob("*.yaml"))

BASELINE_CAPABILITIES = {
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
    "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
}
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                      "persistentVolumeClaim", "projected", "secret"}
APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"


# --- the checker --------------------------------------------------------------------------
def _containers(spec: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for container in spec.get(key) or []:
            yield f"{key}[{container.get('name')}]", container


def _context(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.get("securityContext") or {}


def _baseline(spec: dict[str, Any], annotations: dict[str, str]) -> Iterator[str]:
    pod = _context(spec)
    if (pod.get("windowsOptions") or {}).get("hostProcess"):
        yield "hostProcess: pod"
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            yield f"host namespaces: {field}"
    for volume in spec.get("volumes") or []:
        if "hostPath" in volume:
            yield f"hostPath volume: {volume.get('name')}"
    for sysctl in pod.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            yield f"sysctls: {sysctl.get('name')}"
    for key, value in annotations.items():
        if key.startswith(APPARMOR_ANNOTATION) and not (
                value == "runtime/default" or value.startswith("localhost/")):
            yield f"appArmor: annotation {key}={value}"
    contexts = [("pod", pod)] + [(where, _context(c)) for where, c in _containers(spec)]
    for where, context in contexts:
        if (context.get("appArmorProfile") or {}).get("type") not in (
                None, "RuntimeDefault", "Localhost"):
            yield f"appArmor: {where}"
        selinux = context.get("seLinuxOptions") or {}
        if selinux.get("type", "") not in SELINUX_TYPES or selinux.get("user") or selinux.get(
                "role"):
            yield f"seLinux: {where}"
        if (context.get("seccompProfile") or {}).get("type") == "Unconfined":
            yield f"seccomp: {where} Unconfined"
    for where, container in _containers(spec):
        context = _context(container)
        if (context.get("windowsOptions") or {}).get("hostProcess"):
            yield f"hostProcess: {where}"
        if context.get("privileged"):
            yield f"privileged: {where}"
        added = set((context.get("capabilities") or {}).get("add") or [])
        if added - BASELINE_CAPABILITIES:
            yield f"capabilities: {where} adds {sorted(added - BASELINE_CAPABILITIES)}"
        for port in container.get("ports") or []:
            if port.get("hostPort"):
                yield f"hostPort: {where} {port['hostPort']}"
        if context.get("procMount") not in (None, "Default"):
            yield f"procMount: {where}"


def _restricted(spec: dict[str, Any]) -> Iterator[str]:
    pod = _context(spec)
    for volume in spec.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            yield f"volume types: {volume.get('name')} is {sorted(kinds - RESTRICTED_VOLUMES)}"
    if pod.get("runAsUser") == 0:
        yield "runAsUser: pod is 0"
    pod_seccomp = (pod.get("seccompProfile") or {}).get("type")
    for where, container in _containers(spec):
        context = _context(container)
        if context.get("allowPrivilegeEscalation") is not False:
            yield f"allowPrivilegeEscalation: {where} not false"
        non_root = context.get("runAsNonRoot")
        if non_root is False or (non_root is None and pod.get("runAsNonRoot") is not True):
            yield f"runAsNonRoot: {where}"
        if context.get("runAsUser") == 0:
            yield f"runAsUser: {where} is 0"
        seccomp = (context.get("seccompProfile") or {}).get("type") or pod_seccomp
        if seccomp not in ("RuntimeDefault", "Localhost"):
            yield f"seccomp: {where} {seccomp or 'unset'}"
        capabilities = context.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            yield f"capabilities: {where} does not drop ALL"
        if set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}:
            yield f"capabilities: {where} adds more than NET_BIND_SERVICE"


def violations(template: dict[str, Any]) -> list[str]:
    """What keeps a pod template (`metadata` + `spec`) out of a `restricted` namespace."""
    spec = template.get("spec") or {}
    annotations = (template.get("metadata") or {}).get("annotations") or {}
    return [*_baseline(spec, annotations), *_restricted(spec)]


# --- the pods the operator builds ----------------------------------------------------------
def _example(path: Path, changes: dict[str, Any] | None = None) -> Workspace:
    obj = yaml.safe_load(path.read_text())
    obj["metadata"].setdefault("namespace", "default")
    obj["metadata"]["uid"] = "uid-1"
    for key, value in (changes or {}).items():
        section, _, field = key.partition(".")
        obj[section][field] = value
    return Workspace.model_validate(obj)


def _render(ws: Workspace, catalog, settings: Settings, known_sku: bool = True):
    """(kind, pod template) of the workload the controller would create."""
    if not known_sku:
        ws = ws.model_copy(deep=True)
        ws.resource.instance_type = "Standard_NC999_unknown"
    if ws.tuning is not None:
        _, job = desired_tuning(ws, ws.tuning, catalog, settings, ["node-0"])
        return job["kind"], job["spec"]["template"]
    _, workload = desired_inference(ws, catalog, settings, ["node-0"])
    return workload["kind"], workload["spec"]["template"]


TUNING = ROOT / "examples/tuning/kaito_workspace_tuning_phi_3.yaml"
VARIANTS = [
    *[(path.relative_to(ROOT).as_posix(), path, None) for path in EXAMPLES],
    ("tuning input image", TUNING, {"tuning.input": {
        "image": "myacr.io/dataset:1", "imagePullSecrets": ["acr.pull"]}}),
    ("tuning input and output PVC", TUNING, {
        "tuning.input": {"volumeSource": {"persistentVolumeClaim": {"claimName": "in"}}},
        "tuning.output": {"volumeSource": {"persistentVolumeClaim": {"claimName": "out"}}}}),
    ("tuning CSI input, emptyDir output", TUNING, {
        "tuning.input": {"volumeSource": {"csi": {"driver": "blob.csi.azure.com"}}},
        "tuning.output": {"volumeSource": {"emptyDir": {}}}}),
]
MODES = [("image", True), ("image", False), ("download", True)]


def _cases():
    for name, path, changes in VARIANTS:
        for weights, known in MODES:
            yield pytest.param(path, changes, weights, known,
                               id=f"{name}-{weights}-{'sku' if known else 'unknown-sku'}")


def test_every_example_is_covered():
    text = " ".join(path.read_text() for path in EXAMPLES)
    for needle in ("template:", "adapters:", "tuning:", "count: 2", "urls:"):
        assert needle in text, needle


@pytest.mark.parametrize(("path", "changes", "weights", "known"), list(_cases()))
def test_rendered_pods_meet_restricted(catalog, path, changes, weights, known):
    ws = _example(path, changes)
    kind, template = _render(ws, catalog, Settings(weights=weights), known)
    assert kind == ("Job" if ws.tuning else
                    "StatefulSet" if ws.resource.count > 1 else "Deployment")
    assert violations(template) == []
    spec = template["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsUser"] == 1000
    assert spec["securityContext"]["runAsGroup"] == 1000
    for volume in spec.get("volumes") or []:
        if "emptyDir" in volume:
            assert volume["emptyDir"].get("sizeLimit"), volume
    if ws.inference is not None and ws.inference.template is not None:
        return  # the user's containers: restricted defaults only (checked above)
    for where, container in _containers(spec):
        resources = container["resources"]
        assert {"cpu", "memory", "ephemeral-storage"} <= set(resources["requests"]), where
        assert {"memory", "ephemeral-storage"} <= set(resources["limits"]), where
        assert container["securityContext"]["readOnlyRootFilesystem"] is True, where
        for path_ in _written_paths(container):
            assert _writable(path_, container["volumeMounts"]), f"{where} writes {path_}"


WRITE_FLAGS = ("--output", "--output-dir", "--cache-dir")


def _written_paths(container: dict[str, Any]) -> list[str]:
    """Where the product's processes write: their output flags, HOME, HF_HOME, /tmp."""
    paths = ["/tmp"]
    for arg in container.get("args") or []:
        flag, _, value = arg.partition("=")
        if flag in WRITE_FLAGS:
            paths.append(value)
    for var in container.get("env") or []:
        if var["name"] in ("HOME", "HF_HOME"):
            paths.append(var["value"])
    if container.get("command", [""])[0] == "sh":  # data-copy: cp -R /data/. /mnt/data/
        paths.append(container["command"][-1].split()[-1])
    return paths


def _writable(path: str, mounts: list[dict[str, Any]]) -> bool:
    path = path.rstrip("/")
    return any(not m.get("readOnly") and (path == m["mountPath"]
                                          or path.startswith(m["mountPath"] + "/"))
               for m in mounts)


def test_init_containers_get_bounded_requests_and_the_pod_disk_limit_covers_emptydirs(catalog):
    ws = _example(ROOT / "examples/inference/kaito_workspace_phi_3_with_adapters.yaml")
    _, template = _render(ws, catalog, Settings())
    spec = template["spec"]
    (main,) = spec["containers"]
    total = sum(int(v["emptyDir"]["sizeLimit"].removesuffix("Gi")) for v in spec["volumes"]
                if "emptyDir" in v and v["emptyDir"].get("medium") != "Memory")
    assert main["resources"]["limits"]["ephemeral-storage"] == f"{total + 1}Gi"
    for init in spec["initContainers"]:
        assert init["resources"]["limits"]["ephemeral-storage"] == "512Mi"
        assert init["resources"]["requests"]["cpu"] == "250m"
    assert [c["name"] for c in spec["initContainers"]] == ["adapter-dolly-style",
                                                            "adapter-support-tone"]


# --- the checker catches violations ------------------------------------------------------
def _set(path: str, value: Any) -> Any:
    def change(template: dict[str, Any]) -> None:
        target = template
        *parents, last = path.split(".")
        for part in parents:
            if part.isdigit():
                target = target[int(part)]
            else:
                target = target.setdefault(part, {})
        if value is DELETE:
            target.pop(last, None)
        else:
            target[last] = value
    return change


DELETE = object()
MAIN = "spec.containers.0.securityContext"
POD = "spec.securityContext"
NEGATIVE = [
    ("hostNetwork", _set("spec.hostNetwork", True), "host namespaces: hostNetwork"),
    ("hostPID", _set("spec.hostPID", True), "host namespaces: hostPID"),
    ("hostIPC", _set("spec.hostIPC", True), "host namespaces: hostIPC"),
    ("privileged", _set(f"{MAIN}.privileged", True), "privileged:"),
    ("capability outside baseline", _set(f"{MAIN}.capabilities.add", ["SYS_ADMIN"]),
     "adds ['SYS_ADMIN']"),
    ("baseline capability not allowed by restricted", _set(f"{MAIN}.capabilities.add",
                                                            ["CHOWN"]),
     "adds more than NET_BIND_SERVICE"),
    ("no drop ALL", _set(f"{MAIN}.capabilities.drop", ["NET_RAW"]), "does not drop ALL"),
    ("hostPath", lambda t: t["spec"]["volumes"].append(
        {"name": "root", "hostPath": {"path": "/"}}), "hostPath volume: root"),
    ("nfs volume", lambda t: t["spec"]["volumes"].append(
        {"name": "share", "nfs": {"server": "nfs.example", "path": "/"}}),
     "volume types: share"),
    ("azureFile volume", lambda t: t["spec"]["volumes"].append(
        {"name": "share", "azureFile": {"shareName": "s", "secretName": "x"}}),
     "volume types: share"),
    ("hostPort", _set("spec.containers.0.ports.0.hostPort", 5000), "hostPort:"),
    ("appArmor unconfined", _set(f"{POD}.appArmorProfile", {"type": "Unconfined"}),
     "appArmor: pod"),
    ("appArmor annotation", _set("metadata.annotations",
                                 {APPARMOR_ANNOTATION + "inference": "unconfined"}),
     "appArmor: annotation"),
    ("SELinux type", _set(f"{MAIN}.seLinuxOptions", {"type": "spc_t"}), "seLinux:"),
    ("SELinux user", _set(f"{POD}.seLinuxOptions", {"user": "root"}), "seLinux: pod"),
    ("procMount", _set(f"{MAIN}.procMount", "Unmasked"), "procMount:"),
    ("seccomp unconfined in a container", _set(f"{MAIN}.seccompProfile",
                                               {"type": "Unconfined"}), "Unconfined"),
    ("seccomp unset", _set(f"{POD}.seccompProfile", DELETE), "seccomp: containers"),
    ("unsafe sysctl", _set(f"{POD}.sysctls", [{"name": "kernel.msgmax", "value": "1"}]),
     "sysctls: kernel.msgmax"),
    ("privilege escalation unset", _set(f"{MAIN}.allowPrivilegeEscalation", DELETE),
     "allowPrivilegeEscalation"),
    ("privilege escalation true", _set(f"{MAIN}.allowPrivilegeEscalation", True),
     "allowPrivilegeEscalation"),
    ("runAsNonRoot false", _set(f"{MAIN}.runAsNonRoot", False), "runAsNonRoot:"),
    ("runAsNonRoot nowhere", lambda t: (_set(f"{POD}.runAsNonRoot", DELETE)(t),
                                        _set(f"{MAIN}.runAsNonRoot", DELETE)(t)),
     "runAsNonRoot: containers"),
    ("runAsUser 0 pod", _set(f"{POD}.runAsUser", 0), "runAsUser: pod is 0"),
    ("runAsUser 0 container", _set(f"{MAIN}.runAsUser", 0), "runAsUser: containers"),
    ("hostProcess", _set(f"{POD}.windowsOptions", {"hostProcess": True}), "hostProcess: pod"),
    ("ephemeral container", lambda t: t["spec"].setdefault("ephemeralContainers", []).append(
        {"name": "debug", "image": "busybox"}), "ephemeralContainers[debug]"),
]


@pytest.mark.parametrize(("change", "expected"), [pytest.param(c, e, id=i) for i, c, e in NEGATIVE])
def test_the_checker_catches_violations(catalog, change, expected):
    ws = _example(ROOT / "examples/inference/kaito_workspace_phi_3_mini.yaml")
    _, template = _render(ws, catalog, Settings())
    assert violations(template) == []
    broken = copy.deepcopy(template)
    change(broken)
    found = violations(broken)
    assert any(expected in v for v in found), found


def test_the_checker_flags_a_tuning_volume_type_that_restricted_refuses(catalog):
    ws = _example(TUNING, {"tuning.output": {"volumeSource": {"azureFile": {
        "shareName": "out", "secretName": "azure"}}}})
    _, template = _render(ws, catalog, Settings())
    assert violations(template) == ["volume types: results is ['azureFile']"]


def test_a_custom_template_with_nothing_set_is_completed_to_restricted(catalog):
    template = {"spec": {"initContainers": [{"name": "init", "image": "busybox"}],
                         "containers": [{"name": "srv", "image": "srv:1"}]}}
    ws = _example(ROOT / "examples/custom-template/kaito_workspace_custom_pod_template.yaml",
                  {"inference.template": template})
    assert violations(template) != []
    _, rendered = _render(ws, catalog, Settings())
    assert violations(rendered) == []


# --- the egress guard's private-range switch reaches only the fetching containers ---------
def _env_names(container: dict[str, Any]) -> set[str]:
    return {var["name"] for var in container.get("env") or []}


@pytest.mark.parametrize("path", [
    ROOT / "examples/inference/kaito_workspace_phi_3_with_adapters.yaml",
    TUNING,
])
@pytest.mark.parametrize("allow", [False, True])
def test_private_egress_is_allowed_only_when_the_operator_says_so(catalog, path, allow):
    ws = _example(path)
    _, template = _render(ws, catalog, Settings(egress_allow_private=allow))
    spec = template["spec"]
    fetchers = [*spec.get("initContainers", [])]
    if ws.tuning is not None:
        fetchers += spec["containers"]  # the trainer pushes the adapter
    else:
        (server,) = spec["containers"]
        assert "KAITO_EGRESS_ALLOW_PRIVATE" not in _env_names(server)
    assert fetchers
    for container in fetchers:
        assert ("KAITO_EGRESS_ALLOW_PRIVATE" in _env_names(container)) is allow, container["name"]
