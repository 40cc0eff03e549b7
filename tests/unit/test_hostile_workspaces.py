"""Hostile Workspaces, one row each: every one is refused with the field path and a specific
reason, the secure defaults can be relaxed by the operator's settings, and benign Workspaces
(every example, pods of the `restricted` shape) still pass."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kaito_operator.settings import Settings, settings_from_env
from kaito_operator.validation import (
    DEFAULT_POLICY,
    errors,
    policy_from_settings,
    validate_workspace,
)
from tests.factories import (
    DELETE,
    example_workspaces,
    inference_workspace,
    tuning_workspace,
    with_changes,
)

ROOT = Path(__file__).resolve().parents[2]
INF = inference_workspace()
TUN = tuning_workspace()
TPL = with_changes(INF, {
    "inference.preset": DELETE,
    "inference.template": {
        "metadata": {"labels": {"app": "server"}},
        "spec": {"containers": [{"name": "server", "image": "registry.example.com/server:1",
                                 "ports": [{"containerPort": 5000}]}]},
    },
})
SPEC = "inference.template.spec"
C0 = f"{SPEC}.containers[0]"
SC = f"{C0}.securityContext"
ADAPTER = {"source": {"name": "a1", "image": "myregistry.azurecr.io/adapters/a1:1"}}
POLICY = "not allowed by the Workspace policy"


def adapter(**source):
    return [{"source": dict(ADAPTER["source"], **source)}]


def with_strength(strength):
    return [dict(ADAPTER, strength=strength)]


def volume(**kind):
    return [dict({"name": "v"}, **kind)]


def nested(depth):
    """A mapping nested `depth` levels deep."""
    root = node = {}
    for _ in range(depth):
        node["a"] = {}
        node = node["a"]
    return root


def self_containing():
    """A list that contains itself (what a recursive YAML alias loads as)."""
    loop = []
    loop.append(loop)
    return loop


def laughs(levels=9, width=10):
    """`width ** levels` values made of shared lists (a billion-laughs shape)."""
    layer = ["lol"] * width
    for _ in range(levels):
        layer = [layer] * width
    return layer


# (id, base, changes, expected field path, expected words in the message)
CASES = [
    # --- privilege
    ("privileged-container", TPL, {f"{SC}.privileged": True}, f"{SC}.privileged", POLICY),
    ("privileged-init-container", TPL, {f"{SPEC}.initContainers": [
        {"name": "init", "image": "r.io/i:1", "securityContext": {"privileged": True}}]},
     f"{SPEC}.initContainers[0].securityContext.privileged", "KAITO_POLICY_ALLOW_PRIVILEGED"),
    ("privileged-ephemeral-container", TPL, {f"{SPEC}.ephemeralContainers": [
        {"name": "debug", "image": "r.io/d:1", "securityContext": {"privileged": True}}]},
     f"{SPEC}.ephemeralContainers[0].securityContext.privileged", POLICY),
    ("ephemeral-containers-in-template", TPL, {f"{SPEC}.ephemeralContainers": [
        {"name": "debug", "image": "r.io/d:1"}]},
     f"{SPEC}.ephemeralContainers", "not allowed in a pod template"),
    ("privileged-as-string", TPL, {f"{SC}.privileged": "true"}, f"{SC}.privileged",
     "must be a boolean"),
    ("privilege-escalation", TPL, {f"{SC}.allowPrivilegeEscalation": True},
     f"{SC}.allowPrivilegeEscalation", "policy.allowPrivileged"),
    ("windows-host-process", TPL, {f"{SC}.windowsOptions": {"hostProcess": True}},
     f"{SC}.windowsOptions.hostProcess", "run on the node"),
    ("pod-windows-host-process", TPL,
     {f"{SPEC}.securityContext": {"windowsOptions": {"hostProcess": True}}},
     f"{SPEC}.securityContext.windowsOptions.hostProcess", POLICY),
    # --- host namespaces and ports
    ("host-network", TPL, {f"{SPEC}.hostNetwork": True}, f"{SPEC}.hostNetwork",
     "KAITO_POLICY_ALLOW_HOST_NAMESPACES=true"),
    ("host-pid", TPL, {f"{SPEC}.hostPID": True}, f"{SPEC}.hostPID", POLICY),
    ("host-ipc", TPL, {f"{SPEC}.hostIPC": True}, f"{SPEC}.hostIPC", POLICY),
    ("host-network-as-string", TPL, {f"{SPEC}.hostNetwork": "yes"}, f"{SPEC}.hostNetwork",
     "must be a boolean"),
    ("host-users-as-string", TPL, {f"{SPEC}.hostUsers": "false"}, f"{SPEC}.hostUsers",
     "must be a boolean"),
    ("host-port", TPL, {f"{C0}.ports": [{"containerPort": 22, "hostPort": 22}]},
     f"{C0}.ports[0].hostPort", "KAITO_POLICY_ALLOW_HOST_PORTS"),
    ("host-port-in-init-container", TPL, {f"{SPEC}.initContainers": [
        {"name": "init", "image": "r.io/i:1", "ports": [{"containerPort": 80, "hostPort": 80}]}]},
     f"{SPEC}.initContainers[0].ports[0].hostPort", POLICY),
    ("host-port-as-string", TPL, {f"{C0}.ports": [{"containerPort": 80, "hostPort": "80"}]},
     f"{C0}.ports[0].hostPort", "must be an integer"),
    ("node-name", TPL, {f"{SPEC}.nodeName": "control-plane-1"}, f"{SPEC}.nodeName",
     "the operator chooses the nodes"),
    # --- volumes of the template
    ("host-path-root", TPL, {f"{SPEC}.volumes": volume(hostPath={"path": "/"})},
     f"{SPEC}.volumes[0].hostPath", "node-level volumes such as hostPath"),
    ("host-path-docker-socket", TPL,
     {f"{SPEC}.volumes": volume(hostPath={"path": "/var/run/docker.sock"})},
     f"{SPEC}.volumes[0].hostPath", "add hostPath to KAITO_POLICY_VOLUME_TYPES"),
    ("git-repo-volume", TPL, {f"{SPEC}.volumes": volume(gitRepo={"repository": "x"})},
     f"{SPEC}.volumes[0].gitRepo", POLICY),
    ("iscsi-volume", TPL, {f"{SPEC}.volumes": volume(iscsi={"targetPortal": "1.2.3.4"})},
     f"{SPEC}.volumes[0].iscsi", POLICY),
    ("flex-volume", TPL, {f"{SPEC}.volumes": volume(flexVolume={"driver": "x/y"})},
     f"{SPEC}.volumes[0].flexVolume", POLICY),
    ("rbd-volume", TPL, {f"{SPEC}.volumes": volume(rbd={"image": "x"})},
     f"{SPEC}.volumes[0].rbd", POLICY),
    ("cephfs-volume", TPL, {f"{SPEC}.volumes": volume(cephfs={"monitors": ["m"]})},
     f"{SPEC}.volumes[0].cephfs", POLICY),
    ("unknown-volume-type", TPL, {f"{SPEC}.volumes": volume(nodeRoot={})},
     f"{SPEC}.volumes[0].nodeRoot", "volume types are limited to"),
    ("projected-cluster-trust-bundle", TPL, {f"{SPEC}.volumes": volume(
        projected={"sources": [{"clusterTrustBundle": {"name": "x"}}]})},
     f"{SPEC}.volumes[0].projected.sources[0].clusterTrustBundle", "projected sources"),
    ("projected-sources-not-a-list", TPL, {f"{SPEC}.volumes": volume(
        projected={"sources": "secret"})},
     f"{SPEC}.volumes[0].projected.sources", "must be a list"),
    ("volume-with-two-types", TPL, {f"{SPEC}.volumes": volume(emptyDir={}, hostPath={})},
     f"{SPEC}.volumes[0]", "exactly one"),
    ("volume-without-type", TPL, {f"{SPEC}.volumes": [{"name": "v"}]}, f"{SPEC}.volumes[0]",
     "names no volume type"),
    ("volumes-not-a-list", TPL, {f"{SPEC}.volumes": {"hostPath": {"path": "/"}}},
     f"{SPEC}.volumes", "must be a list"),
    ("volume-not-a-mapping", TPL, {f"{SPEC}.volumes": ["hostPath"]}, f"{SPEC}.volumes[0]",
     "must be a mapping"),
    # --- capabilities and kernel settings
    ("cap-sys-admin", TPL, {f"{SC}.capabilities": {"add": ["SYS_ADMIN"]}},
     f"{SC}.capabilities.add[0]", "containers may add only NET_BIND_SERVICE"),
    ("cap-all", TPL, {f"{SC}.capabilities": {"add": ["ALL"]}}, f"{SC}.capabilities.add[0]",
     "add ALL to KAITO_POLICY_CAPABILITIES"),
    ("cap-net-admin-second", TPL,
     {f"{SC}.capabilities": {"add": ["NET_BIND_SERVICE", "NET_ADMIN"]}},
     f"{SC}.capabilities.add[1]", POLICY),
    ("cap-prefixed", TPL, {f"{SC}.capabilities": {"add": ["CAP_SYS_ADMIN"]}},
     f"{SC}.capabilities.add[0]", POLICY),
    ("cap-lower-case", TPL, {f"{SC}.capabilities": {"add": ["sys_ptrace"]}},
     f"{SC}.capabilities.add[0]", POLICY),
    ("cap-add-as-string", TPL, {f"{SC}.capabilities": {"add": "SYS_ADMIN"}},
     f"{SC}.capabilities.add", "must be a list"),
    ("cap-not-a-string", TPL, {f"{SC}.capabilities": {"add": [{"SYS_ADMIN": True}]}},
     f"{SC}.capabilities.add[0]", "must be a string"),
    ("cap-in-init-container", TPL, {f"{SPEC}.initContainers": [
        {"name": "init", "image": "r.io/i:1",
         "securityContext": {"capabilities": {"add": ["SYS_MODULE"]}}}]},
     f"{SPEC}.initContainers[0].securityContext.capabilities.add[0]", POLICY),
    ("proc-mount-unmasked", TPL, {f"{SC}.procMount": "Unmasked"}, f"{SC}.procMount",
     "procMount must be Default"),
    ("unsafe-sysctl", TPL,
     {f"{SPEC}.securityContext": {"sysctls": [{"name": "kernel.msgmax", "value": "1"}]}},
     f"{SPEC}.securityContext.sysctls[0].name", "add kernel.msgmax to KAITO_POLICY_SYSCTLS"),
    ("unsafe-sysctl-somaxconn", TPL, {f"{SPEC}.securityContext": {"sysctls": [
        {"name": "net.ipv4.tcp_syncookies", "value": "1"},
        {"name": "net.core.somaxconn", "value": "1024"}]}},
     f"{SPEC}.securityContext.sysctls[1].name", "safe sysctls"),
    ("sysctl-not-a-mapping", TPL, {f"{SPEC}.securityContext": {"sysctls": ["kernel.msgmax"]}},
     f"{SPEC}.securityContext.sysctls[0]", "must be a mapping"),
    # --- confinement
    ("seccomp-unconfined-pod", TPL,
     {f"{SPEC}.securityContext": {"seccompProfile": {"type": "Unconfined"}}},
     f"{SPEC}.securityContext.seccompProfile.type", "KAITO_POLICY_ALLOW_UNCONFINED"),
    ("seccomp-unconfined-container", TPL, {f"{SC}.seccompProfile": {"type": "Unconfined"}},
     f"{SC}.seccompProfile.type", "RuntimeDefault or Localhost"),
    ("apparmor-unconfined", TPL, {f"{SC}.appArmorProfile": {"type": "Unconfined"}},
     f"{SC}.appArmorProfile.type", POLICY),
    ("apparmor-unconfined-pod", TPL,
     {f"{SPEC}.securityContext": {"appArmorProfile": {"type": "Unconfined"}}},
     f"{SPEC}.securityContext.appArmorProfile.type", POLICY),
    ("apparmor-annotation-unconfined", TPL, {"inference.template.metadata.annotations": {
        "container.apparmor.security.beta.kubernetes.io/server": "unconfined"}},
     "inference.template.metadata.annotations[container.apparmor.security.beta.kubernetes.io"
     "/server]", POLICY),
    ("seccomp-annotation-unconfined", TPL, {"inference.template.metadata.annotations": {
        "seccomp.security.alpha.kubernetes.io/pod": "unconfined"}},
     "inference.template.metadata.annotations[seccomp.security.alpha.kubernetes.io/pod]",
     POLICY),
    ("selinux-spc-type", TPL, {f"{SC}.seLinuxOptions": {"type": "spc_t"}},
     f"{SC}.seLinuxOptions.type", "SELinux type must be one of"),
    ("selinux-pod-type", TPL,
     {f"{SPEC}.securityContext": {"seLinuxOptions": {"type": "unconfined_t"}}},
     f"{SPEC}.securityContext.seLinuxOptions.type", POLICY),
    ("selinux-user", TPL, {f"{SC}.seLinuxOptions": {"user": "system_u"}},
     f"{SC}.seLinuxOptions.user", "SELinux user must not be set"),
    ("selinux-role", TPL, {f"{SC}.seLinuxOptions": {"role": "sysadm_r"}},
     f"{SC}.seLinuxOptions.role", POLICY),
    ("security-context-not-a-mapping", TPL, {f"{SC}": "privileged"}, SC, "must be a mapping"),
    # --- service accounts
    ("service-account-admin", TPL, {f"{SPEC}.serviceAccountName": "cluster-admin"},
     f"{SPEC}.serviceAccountName", "add cluster-admin to KAITO_POLICY_SERVICE_ACCOUNTS"),
    ("service-account-operator", TPL, {f"{SPEC}.serviceAccountName": "kaito-workspace"},
     f"{SPEC}.serviceAccountName", "service accounts are limited to default"),
    ("deprecated-service-account-field", TPL, {f"{SPEC}.serviceAccount": "admin"},
     f"{SPEC}.serviceAccount", POLICY),
    ("service-account-not-a-string", TPL, {f"{SPEC}.serviceAccountName": ["admin"]},
     f"{SPEC}.serviceAccountName", "must be a string"),
    # --- template shape (what would break at the API server or in the operator)
    ("template-not-a-mapping", INF, {"inference.preset": DELETE, "inference.template": "pod"},
     "inference.template", "must be a mapping"),
    ("template-spec-a-list", TPL, {SPEC: []}, SPEC, "must be a mapping"),
    ("template-without-spec", TPL, {SPEC: DELETE}, SPEC, "is required"),
    ("template-no-containers", TPL, {f"{SPEC}.containers": []}, f"{SPEC}.containers",
     "at least one container"),
    ("template-containers-a-mapping", TPL, {f"{SPEC}.containers": {"name": "x"}},
     f"{SPEC}.containers", "must be a list"),
    ("container-without-image", TPL, {f"{C0}.image": DELETE}, f"{C0}.image", "is required"),
    ("container-image-newline", TPL, {f"{C0}.image": "r.io/server:1\n"}, f"{C0}.image",
     "image reference"),
    ("container-name-uppercase", TPL, {f"{C0}.name": "Server"}, f"{C0}.name", "DNS-1123"),
    ("container-names-duplicate", TPL, {f"{SPEC}.initContainers": [
        {"name": "server", "image": "r.io/i:1"}]},
     f"{C0}.name", "used by another container"),
    ("container-port-named", TPL, {f"{C0}.ports": [{"containerPort": "http"}]},
     f"{C0}.ports[0].containerPort", "must be an integer"),
    ("container-port-out-of-range", TPL, {f"{C0}.ports": [{"containerPort": 70000}]},
     f"{C0}.ports[0].containerPort", "between 1 and 65535"),
    ("template-label-bad-value", TPL, {"inference.template.metadata.labels": {"app": "a b"}},
     "inference.template.metadata.labels[app]", "label value"),
    ("template-label-number", TPL, {"inference.template.metadata.labels": {"version": 1.0}},
     "inference.template.metadata.labels[version]", "must be a string (quote it)"),
    ("template-annotations-too-large", TPL,
     {"inference.template.metadata.annotations": {"big": "x" * 300_000}},
     "inference.template.metadata.annotations", "at most 262144 bytes"),
    ("template-metadata-a-list", TPL, {"inference.template.metadata": ["x"]},
     "inference.template.metadata", "must be a mapping"),
    ("template-affinity-a-string", TPL, {f"{SPEC}.affinity": "gpu"}, f"{SPEC}.affinity",
     "must be a mapping"),
    ("template-node-selector-terms-a-mapping", TPL, {f"{SPEC}.affinity": {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": {"a": 1}}}}},
     f"{SPEC}.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
     ".nodeSelectorTerms", "must be a list"),
    ("template-nested-10000-deep", TPL, {f"{SPEC}.extra": nested(10_000)},
     "inference.template", "nests deeper than 64 levels"),
    ("template-contains-itself", TPL, {f"{SPEC}.extra": self_containing()},
     "inference.template", "nests deeper than 64 levels"),
    ("template-billion-laughs", TPL, {f"{SPEC}.extra": laughs()},
     "inference.template", "holds more than 100000 values"),
    ("template-tolerations-a-string", TPL, {f"{SPEC}.tolerations": "all"},
     f"{SPEC}.tolerations", "must be a list"),
    # --- tuning volumes
    ("tuning-input-host-path", TUN, {"tuning.input.urls": DELETE,
                                     "tuning.input.volumeSource": {"hostPath": {"path": "/"}}},
     "tuning.input.volumeSource.hostPath", "node-level volumes such as hostPath"),
    ("tuning-output-host-path", TUN, {
        "tuning.output": {"volumeSource": {"hostPath": {"path": "/var/lib/kubelet"}}}},
     "tuning.output.volumeSource.hostPath", "KAITO_POLICY_VOLUME_TYPES"),
    ("tuning-output-git-repo", TUN, {
        "tuning.output": {"volumeSource": {"gitRepo": {"repository": "x"}}}},
     "tuning.output.volumeSource.gitRepo", POLICY),
    ("tuning-input-two-types", TUN, {"tuning.input.urls": DELETE, "tuning.input.volumeSource": {
        "persistentVolumeClaim": {"claimName": "d"}, "hostPath": {"path": "/"}}},
     "tuning.input.volumeSource", "exactly one"),
    ("tuning-input-empty-volume", TUN, {"tuning.input.urls": DELETE,
                                        "tuning.input.volumeSource": {}},
     "tuning.input.volumeSource", "names no volume type"),
    ("tuning-input-volume-a-list", TUN, {"tuning.input.urls": DELETE,
                                         "tuning.input.volumeSource": [{"hostPath": {}}]},
     "tuning.input.volumeSource", "must be a mapping"),
    ("tuning-input-volume-named", TUN, {"tuning.input.urls": DELETE,
                                        "tuning.input.volumeSource": {
                                            "name": "results", "emptyDir": {}}},
     "tuning.input.volumeSource.name", "the operator names the volume"),
    ("tuning-output-config-map", TUN, {"tuning.output": {"volumeSource": {
        "configMap": {"name": "out"}}}},
     "tuning.output.volumeSource.configMap", "read-only"),
    # --- derived names
    ("adapter-name-56", INF, {"inference.adapters": adapter(name="a" * 56)},
     "inference.adapters[0].source.name", "at most 55 characters"),
    ("adapter-name-63", INF, {"inference.adapters": adapter(name="b" * 63)},
     "inference.adapters[0].source.name", "at most 55 characters"),
    ("adapter-name-newline", INF, {"inference.adapters": adapter(name="a1\n")},
     "inference.adapters[0].source.name", "DNS-1123 label"),
    ("adapter-image-newline", INF, {"inference.adapters": adapter(image="r.io/a:1\n")},
     "inference.adapters[0].source.image", "image reference"),
    ("adapter-image-fullwidth-tag", INF, {"inference.adapters": adapter(image="r.io/a:ｖ1")},
     "inference.adapters[0].source.image", "image reference"),
    ("adapter-pull-secret-too-long", INF,
     {"inference.adapters": adapter(imagePullSecrets=["s" * 254])},
     "inference.adapters[0].source.imagePullSecrets[0]", "at most 253 characters"),
    ("adapter-pull-secret-underscore", INF,
     {"inference.adapters": adapter(imagePullSecrets=["acr_pull"])},
     "inference.adapters[0].source.imagePullSecrets[0]", "not a Secret name"),
    ("preset-pull-secret-bad", INF, {"inference.preset.presetOptions": {
        "image": "r.io/p:1", "imagePullSecrets": ["Bad Secret"]}},
     "inference.preset.presetOptions.imagePullSecrets[0]", "not a Secret name"),
    ("name-53", INF, {"metadata.name": "w" * 53}, "metadata.name", "at most 52"),
    ("name-newline", INF, {"metadata.name": "phi\n"}, "metadata.name", "is not valid"),
    ("preset-name-newline", INF, {"inference.preset.name": "phi-4\n"}, "inference.preset.name",
     "must be a preset name"),
    ("instance-type-64", INF, {"resource.instanceType": "Standard_N" + "x" * 54},
     "resource.instanceType", "at most 63 characters"),
    ("instance-type-space", INF, {"resource.instanceType": "Standard_NC6s v3"},
     "resource.instanceType", "it labels the nodes"),
    ("instance-type-newline", INF, {"resource.instanceType": "Standard_NC6s_v3\n"},
     "resource.instanceType", "it labels the nodes"),
    ("tuning-config-newline", TUN, {"tuning.config": "cfg\n"}, "tuning.config",
     "not a ConfigMap name"),
    ("push-secret-newline", TUN, {"tuning.output.imagePushSecret": "push\n"},
     "tuning.output.imagePushSecret", "DNS-1123 subdomain"),
    ("preferred-node-newline", INF, {"resource.preferredNodes": ["node-1\n"]},
     "resource.preferredNodes[0]", "not a node name"),
    ("preferred-nodes-101", INF, {"resource.preferredNodes": [f"n{i}" for i in range(101)]},
     "resource.preferredNodes", "at most 100"),
    # --- counts and strict types
    ("count-100000", INF, {"resource.count": 100_000}, "resource.count", "at most 64"),
    ("count-65", INF, {"resource.count": 65}, "resource.count", "at most 64"),
    ("count-quoted", INF, {"resource.count": "2"}, "resource.count",
     "must be an integer (remove the quotes)"),
    ("count-true", INF, {"resource.count": True}, "resource.count", "must be an integer"),
    ("count-float", INF, {"resource.count": 2.0}, "resource.count", "must be an integer"),
    ("count-huge", INF, {"resource.count": 10**400}, "resource.count", "at most 64"),
    ("strength-nan", INF, {"inference.adapters": with_strength("nan")},
     "inference.adapters[0].strength", "between 0 and 1"),
    ("strength-1e400", INF, {"inference.adapters": with_strength("1e400")},
     "inference.adapters[0].strength", "between 0 and 1"),
    ("strength-leading-space", INF, {"inference.adapters": with_strength(" 0.5")},
     "inference.adapters[0].strength", "between 0 and 1"),
    ("strength-trailing-newline", INF, {"inference.adapters": with_strength("0.5\n")},
     "inference.adapters[0].strength", "between 0 and 1"),
    ("strength-infinity", INF, {"inference.adapters": with_strength("Infinity")},
     "inference.adapters[0].strength", "between 0 and 1"),
    ("strength-bool", INF, {"inference.adapters": with_strength(True)},
     "inference.adapters[0].strength", "must be a string"),
    ("access-mode-number", INF, {"inference.preset.accessMode": 1},
     "inference.preset.accessMode", "is not one of"),
    ("method-upper-case", TUN, {"tuning.method": "LoRA"}, "tuning.method", "is not one of"),
    ("urls-a-string", TUN, {"tuning.input.urls": "https://example.com/d.parquet"},
     "tuning.input.urls", "must be a list"),
    ("url-a-number", TUN, {"tuning.input.urls": [42]}, "tuning.input.urls[0]",
     "must be a string"),
    ("metadata-a-string", INF, {"metadata": "phi"}, "metadata", "must be a mapping"),
    ("metadata-a-list", INF, {"metadata": ["phi"]}, "metadata", "must be a mapping"),
    ("metadata-null", INF, {"metadata": None}, "metadata", "must be a mapping"),
    ("metadata-labels-number", INF, {"metadata.labels": {"team": 7}}, "metadata.labels.team",
     "must be a string"),
    ("annotation-bypass-bool", INF, {"metadata.annotations": {
        "kaito.sh/bypass-resource-checks": True}},
     "metadata.annotations.kaito.sh/bypass-resource-checks", "must be a string"),
    # --- the node selector (its labels are put on the GPU nodes)
    ("match-label-number", INF, {"resource.labelSelector.matchLabels": {"apps": 1}},
     "resource.labelSelector.matchLabels.apps", "must be a string"),
    ("match-labels-65", INF, {"resource.labelSelector.matchLabels": {
        f"k{i}": "v" for i in range(65)}},
     "resource.labelSelector.matchLabels", "at most 64"),
    ("match-label-value-newline", INF, {"resource.labelSelector.matchLabels": {"apps": "x\n"}},
     "resource.labelSelector.matchLabels[apps]", "label value"),
    ("match-expression-in-without-values", INF, {"resource.labelSelector.matchExpressions": [
        {"key": "zone", "operator": "In"}]},
     "resource.labelSelector.matchExpressions[0].values", "is required with operator In"),
    ("match-expression-exists-with-values", INF, {"resource.labelSelector.matchExpressions": [
        {"key": "zone", "operator": "Exists", "values": ["a"]}]},
     "resource.labelSelector.matchExpressions[0].values", "must be empty"),
    ("match-expression-bad-key", INF, {"resource.labelSelector.matchExpressions": [
        {"key": "-zone", "operator": "Exists"}]},
     "resource.labelSelector.matchExpressions[0].key", "label key"),
]


@pytest.mark.parametrize(
    ("base", "changes", "path", "words"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_hostile_workspace_is_refused_with_path_and_reason(catalog, base, changes, path, words):
    found = errors(validate_workspace(with_changes(base, changes), catalog))
    at_path = [f for f in found if f.path == path]
    assert at_path, f"no error at {path}; got {[str(f) for f in found]}"
    assert any(words in f.message for f in at_path), [str(f) for f in at_path]
    for finding in found:
        assert "\n" not in str(finding) and len(str(finding)) < 600, str(finding)


def test_table_tally(catalog):
    """Tried / rejected with a clear message / accepted / crashed, over the whole table."""
    tally = {"tried": 0, "rejected": 0, "accepted": 0, "crashed": 0}
    for _, base, changes, path, words in CASES:
        tally["tried"] += 1
        try:
            found = errors(validate_workspace(with_changes(base, changes), catalog))
        except Exception:  # noqa: BLE001 - counted, then asserted to be none
            tally["crashed"] += 1
            continue
        clear = any(f.path == path and words in f.message for f in found)
        tally["rejected" if clear else "accepted"] += 1
    print(f"hostile Workspaces: {tally}")
    assert len({case[0] for case in CASES}) == len(CASES)
    assert tally["tried"] >= 80
    assert tally == {"tried": len(CASES), "rejected": len(CASES), "accepted": 0, "crashed": 0}


# --- updates -----------------------------------------------------------------------------------

UPDATES = [
    ("old-with-bad-count", with_changes(INF, {"resource.count": "1"}), INF,
     "the stored Workspace is not valid (resource.count"),
    ("old-not-a-mapping", "garbage", INF, "must be a mapping"),
    ("old-with-unknown-field", with_changes(INF, {"resource.gpus": 8}), INF,
     "immutable fields cannot be checked"),
    ("old-wrong-kind", with_changes(INF, {"kind": "Deployment"}),
     with_changes(INF, {"resource.instanceType": "Standard_NC24ads_A100_v4"}),
     "delete and recreate"),
]


@pytest.mark.parametrize(("old", "new", "words"), [u[1:] for u in UPDATES],
                         ids=[u[0] for u in UPDATES])
def test_update_from_an_unparseable_old_object_fails(catalog, old, new, words):
    found = errors(validate_workspace(new, catalog, old=old))
    at_old = [f for f in found if f.path == "<old object>"]
    assert at_old and words in at_old[0].message, [str(f) for f in found]


# --- relaxing the defaults ---------------------------------------------------------------------

_BY_ID = {case[0]: case for case in CASES}

#: (hostile row, operator environment that allows it)
RELAXED = [
    ("host-path-root", {"KAITO_POLICY_VOLUME_TYPES": "hostPath"}),
    ("tuning-input-host-path", {"KAITO_POLICY_VOLUME_TYPES": "hostPath"}),
    ("tuning-output-git-repo", {"KAITO_POLICY_VOLUME_TYPES": "gitRepo, hostPath"}),
    ("projected-cluster-trust-bundle", {"KAITO_POLICY_VOLUME_TYPES": "clusterTrustBundle"}),
    ("privileged-container", {"KAITO_POLICY_ALLOW_PRIVILEGED": "true"}),
    ("privilege-escalation", {"KAITO_POLICY_ALLOW_PRIVILEGED": "true"}),
    ("windows-host-process", {"KAITO_POLICY_ALLOW_PRIVILEGED": "true"}),
    ("host-network", {"KAITO_POLICY_ALLOW_HOST_NAMESPACES": "true"}),
    ("host-pid", {"KAITO_POLICY_ALLOW_HOST_NAMESPACES": "true"}),
    ("host-port", {"KAITO_POLICY_ALLOW_HOST_PORTS": "true"}),
    ("cap-sys-admin", {"KAITO_POLICY_CAPABILITIES": "SYS_ADMIN"}),
    ("cap-net-admin-second", {"KAITO_POLICY_CAPABILITIES": "NET_ADMIN,SYS_PTRACE"}),
    ("unsafe-sysctl", {"KAITO_POLICY_SYSCTLS": "kernel.msgmax"}),
    ("seccomp-unconfined-pod", {"KAITO_POLICY_ALLOW_UNCONFINED": "true"}),
    ("apparmor-annotation-unconfined", {"KAITO_POLICY_ALLOW_UNCONFINED": "true"}),
    ("selinux-spc-type", {"KAITO_POLICY_ALLOW_UNCONFINED": "true"}),
    ("proc-mount-unmasked", {"KAITO_POLICY_ALLOW_UNCONFINED": "true"}),
    ("service-account-admin", {"KAITO_POLICY_SERVICE_ACCOUNTS": "cluster-admin"}),
]


@pytest.mark.parametrize(("row", "env"), RELAXED, ids=[r[0] for r in RELAXED])
def test_settings_relax_the_defaults(catalog, row, env):
    _, base, changes, path, _ = _BY_ID[row]
    ws = with_changes(base, changes)
    assert any(f.path == path for f in errors(validate_workspace(ws, catalog)))
    policy = policy_from_settings(settings_from_env(env))
    assert errors(validate_workspace(ws, catalog, policy=policy)) == []


def test_a_relaxed_rule_relaxes_only_itself(catalog):
    policy = policy_from_settings(settings_from_env({"KAITO_POLICY_VOLUME_TYPES": "nfs,hostPath"}))
    ws = with_changes(TPL, {f"{SPEC}.volumes": volume(hostPath={"path": "/"}),
                            f"{SPEC}.hostNetwork": True})
    assert [f.path for f in errors(validate_workspace(ws, catalog, policy=policy))] == [
        f"{SPEC}.hostNetwork"
    ]


def test_default_settings_give_the_default_policy():
    assert policy_from_settings(Settings()) == DEFAULT_POLICY
    assert policy_from_settings(settings_from_env({})) == DEFAULT_POLICY


def test_chart_policy_values_reach_the_operator():
    helm = pytest.importorskip("helm_python")
    values = {"policy": {"serviceAccounts": ["inference"], "volumeTypes": ["hostPath"],
                         "capabilities": ["SYS_PTRACE"], "allowHostPorts": True}}
    out = helm.Chart.load(ROOT / "charts" / "kaito-workspace").render(
        values, name="kaito", namespace="kaito", is_install=True)
    docs = [doc for path, text in out.items() if path.endswith(".yaml")
            for doc in yaml.safe_load_all(text) if doc]
    (deploy,) = [d for d in docs if d["kind"] == "Deployment"]
    env = {e["name"]: e["value"] for e in deploy["spec"]["template"]["spec"]["containers"][0]["env"]
           if "value" in e}
    policy = policy_from_settings(settings_from_env(env))
    assert policy.service_accounts == {"inference"} and policy.volume_types == {"hostPath"}
    assert policy.capabilities == {"SYS_PTRACE"} and policy.allow_host_ports
    assert not policy.allow_privileged and not policy.allow_host_namespaces


# --- benign Workspaces -------------------------------------------------------------------------


@pytest.mark.parametrize("obj", list(example_workspaces()))
def test_every_example_passes_the_default_policy(catalog, obj):
    assert errors(validate_workspace(obj, catalog)) == []


RESTRICTED_CONTEXT = {
    "allowPrivilegeEscalation": False,
    "privileged": False,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
    "seccompProfile": {"type": "RuntimeDefault"},
    "seLinuxOptions": {"type": "container_t", "level": "s0:c123,c456"},
    "procMount": "Default",
    "readOnlyRootFilesystem": True,
}

BENIGN = [
    ("restricted-container", {SC: RESTRICTED_CONTEXT}),
    ("localhost-seccomp", {SC: {"seccompProfile": {"type": "Localhost",
                                                   "localhostProfile": "p.json"}}}),
    ("apparmor-runtime-default", {SC: {"appArmorProfile": {"type": "RuntimeDefault"}}}),
    ("user-namespace", {f"{SPEC}.hostUsers": False}),
    ("host-namespaces-false", {f"{SPEC}.hostNetwork": False, f"{SPEC}.hostPID": False}),
    ("safe-sysctl", {f"{SPEC}.securityContext": {"sysctls": [
        {"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}]}}),
    ("default-service-account", {f"{SPEC}.serviceAccountName": "default"}),
    ("host-port-zero", {f"{C0}.ports": [{"containerPort": 5000, "hostPort": 0}]}),
    ("allowed-volumes", {f"{SPEC}.volumes": [
        {"name": "a", "emptyDir": {"sizeLimit": "1Gi"}},
        {"name": "b", "configMap": {"name": "cfg"}},
        {"name": "c", "secret": {"secretName": "s"}},
        {"name": "d", "persistentVolumeClaim": {"claimName": "models"}},
        {"name": "e", "projected": {"sources": [{"serviceAccountToken": {"path": "t"}},
                                                {"configMap": {"name": "cfg"}}]}},
        {"name": "f", "csi": {"driver": "file.csi.azure.com"}},
        {"name": "g", "nfs": {"server": "nfs.example.com", "path": "/models"}},
        {"name": "h", "azureFile": {"secretName": "s", "shareName": "models"}},
        {"name": "i", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}},
        {"name": "j", "downwardAPI": {"items": []}},
    ]}),
    ("init-container", {f"{SPEC}.initContainers": [{"name": "init", "image": "r.io/i:1"}]}),
]


@pytest.mark.parametrize("changes", [b[1] for b in BENIGN], ids=[b[0] for b in BENIGN])
def test_benign_templates_pass(catalog, changes):
    assert errors(validate_workspace(with_changes(TPL, changes), catalog)) == []


@pytest.mark.parametrize("source", [
    {"persistentVolumeClaim": {"claimName": "data"}},
    {"azureFile": {"secretName": "s", "shareName": "data"}},
    {"nfs": {"server": "nfs.example.com", "path": "/data"}},
    {"csi": {"driver": "blob.csi.azure.com"}},
    {"configMap": {"name": "data"}},
    {"secret": {"secretName": "data"}},
])
def test_benign_tuning_input_volumes_pass(catalog, source):
    ws = with_changes(TUN, {"tuning.input.urls": DELETE, "tuning.input.volumeSource": source})
    assert errors(validate_workspace(ws, catalog)) == []


@pytest.mark.parametrize("source", [
    {"persistentVolumeClaim": {"claimName": "adapters"}},
    {"azureFile": {"secretName": "s", "shareName": "adapters"}},
    {"nfs": {"server": "nfs.example.com", "path": "/adapters"}},
    {"csi": {"driver": "blob.csi.azure.com"}},
    {"emptyDir": {"sizeLimit": "10Gi"}},
])
def test_benign_tuning_output_volumes_pass(catalog, source):
    ws = with_changes(TUN, {"tuning.output": {"volumeSource": source}})
    assert errors(validate_workspace(ws, catalog)) == []


def test_adapter_name_of_55_characters_passes(catalog):
    ws = with_changes(INF, {"inference.adapters": adapter(name="a" * 55)})
    assert errors(validate_workspace(ws, catalog)) == []


# --- the controller applies the operator's policy ----------------------------------------------


class _PastValidation(Exception):
    """Raised by the fake client when the pass goes on to look for Machines."""


class _RecordingClient:
    """Records status patches; the first read after validation ends the pass."""

    def __init__(self) -> None:
        self.patches: list[dict] = []

    async def patch(self, resource, name, body, namespace=None, status=False):
        self.patches.append(body)
        return body

    async def event(self, *args, **kwargs):
        return None

    async def list(self, *args, **kwargs):
        raise _PastValidation


def _reconcile(catalog, ws, settings):
    import asyncio

    from kaito_operator.workspace.reconcile import Deps, reconcile

    client = _RecordingClient()
    deps = Deps(client=client, catalog=catalog, settings=settings,
                now=lambda: "2026-01-01T00:00:00Z")
    try:
        outcome = asyncio.run(reconcile(ws, deps))
    except _PastValidation:
        return None, client.patches
    return outcome, client.patches


def test_controller_refuses_by_the_default_policy(catalog):
    ws = with_changes(TPL, {f"{SPEC}.hostPID": True, "metadata.generation": 1})
    outcome, patches = _reconcile(catalog, ws, Settings())
    assert outcome is not None and outcome.settled and not outcome.ready
    (condition,) = patches[-1]["status"]["conditions"]
    assert condition["reason"] == "InvalidWorkspace"
    assert "KAITO_POLICY_ALLOW_HOST_NAMESPACES" in condition["message"]


def test_controller_follows_the_configured_policy(catalog):
    ws = with_changes(TPL, {f"{SPEC}.hostPID": True, "metadata.generation": 1})
    settings = settings_from_env({"KAITO_POLICY_ALLOW_HOST_NAMESPACES": "true"})
    outcome, patches = _reconcile(catalog, ws, settings)
    assert outcome is None and patches == []  # validation passed; the pass looked for Machines


def test_each_problem_is_reported_once(catalog):
    ws = with_changes(TPL, {f"{SPEC}.containers": {"name": "x"}, "inference.template.metadata": 1})
    found = [str(f) for f in errors(validate_workspace(ws, catalog))]
    assert len(found) == len(set(found)) == 2, found
