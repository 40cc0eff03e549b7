"""Pure builders of the workspace controller: Machines, node choice, pod spec, workloads."""

from __future__ import annotations

import re

import pytest

from kaito_operator.api.workspace import Workspace
from kaito_operator.settings import Settings, SettingsError, settings_from_env
from kaito_operator.workspace.apply import drifted
from kaito_operator.workspace.names import machine_name, pull_secret_volume_name
from kaito_operator.workspace.nodes import choose_nodes
from kaito_operator.workspace.provisioning import build_machine, free_indices
from kaito_operator.workspace.sizing import disk_limit, host_share, quantity_bytes
from kaito_operator.workspace.workload import (
    build_headless_service,
    build_service,
    build_workload,
    custom_template,
    preset_template,
    uses_statefulset,
)
from tests.factories import DELETE, inference_workspace, with_changes

SETTINGS = Settings()


def ws_of(changes=None, **kw) -> Workspace:
    obj = with_changes(inference_workspace(**kw), changes or {})
    obj["metadata"]["uid"] = "uid-1"
    return Workspace.model_validate(obj)


def test_machine_names_are_deterministic_and_valid_pool_names():
    names = {machine_name("default", "ws", i) for i in range(50)}
    assert len(names) == 50
    assert all(re.fullmatch(r"[a-z][a-z0-9]{0,11}", n) for n in names)
    assert machine_name("default", "ws", 0) == machine_name("default", "ws", 0)
    assert machine_name("default", "ws", 0) != machine_name("other", "ws", 0)


def test_build_machine_carries_labels_taint_type_and_disk():
    ws = ws_of()
    machine = build_machine(ws, 0, 70)
    assert machine["metadata"]["name"] == machine_name("default", "workspace-phi-3", 0)
    labels = machine["metadata"]["labels"]
    assert labels["kaito.sh/workspace"] == "workspace-phi-3"
    assert labels["kaito.sh/workspacenamespace"] == "default"
    assert labels["apps"] == "phi-3"
    assert {"key": "node.kubernetes.io/instance-type", "operator": "In",
            "values": ["Standard_NC6s_v3"]} in machine["spec"]["requirements"]
    assert machine["spec"]["taints"] == [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}]
    assert machine["spec"]["resources"]["requests"]["storage"] == "70Gi"
    assert "ownerReferences" not in machine["metadata"]  # cluster-scoped: finalizer cleans up


def test_free_indices_fill_gaps_first():
    ws = ws_of()
    existing = {machine_name("default", "workspace-phi-3", 1)}
    assert free_indices(ws, existing, 3) == [0, 2]
    assert free_indices(ws, existing, 1) == []


def node(name, ready=True, labels=None, deleting=False, itype="Standard_NC6s_v3"):
    meta = {"name": name, "labels": {"apps": "phi-3", "node.kubernetes.io/instance-type": itype,
                                     **(labels or {})}}
    if deleting:
        meta["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    return {"metadata": meta,
            "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def test_node_choice_order_and_qualification():
    ws = ws_of({"resource.count": 3, "resource.preferredNodes": ["p2", "p1"]},)
    ws = ws.model_copy(update={"status": ws.status})
    nodes = [
        node("a-machine"), node("z-other"), node("p1", itype="Standard_NC24ads_A100_v4"),
        node("p2"), node("not-ready", ready=False), node("deleting", deleting=True),
        node("wrong-type", itype="Standard_NC24ads_A100_v4"),
        node("no-label", labels={"apps": "x"}),
        node("taken", labels={"kaito.sh/workspace": "other", "kaito.sh/workspacenamespace": "default"}),
    ]
    choice = choose_nodes(ws, nodes, machine_nodes={"a-machine"})
    assert choice.selected == ["p2", "p1", "a-machine"]
    assert choice.missing == 0


def test_node_choice_prefers_previously_used_nodes():
    obj = with_changes(inference_workspace(), {"resource.count": 1,
                                               "status": {"workerNodes": ["m-node"]}})
    ws = Workspace.model_validate(obj)
    choice = choose_nodes(ws, [node("a-node"), node("m-node")], machine_nodes=set())
    assert choice.selected == ["m-node"]


def test_node_choice_counts_missing():
    choice = choose_nodes(ws_of({"resource.count": 2}), [node("only")], set())
    assert choice.selected == ["only"] and choice.missing == 1


def test_preset_pod_spec(catalog):
    ws = ws_of()
    preset = catalog.preset("phi-3-mini-4k-instruct")
    template = preset_template(ws, preset, catalog.sku("Standard_NC6s_v3"), SETTINGS, ["n1"])
    spec = template["spec"]
    (container,) = spec["containers"]
    assert container["image"] == "mcr.microsoft.com/aks/kaito/kaito-phi-3-mini-4k-instruct:0.1.0"
    assert container["command"] == ["python", "-m", "inference_server"]
    assert "--model-dir=/workspace/weights" in container["args"]
    assert "--served-model-name=phi-3-mini-4k-instruct" in container["args"]
    assert "--dtype=bfloat16" in container["args"]
    # Standard_NC6s_v3: 6 vCPUs, 112 GiB: floor(0.75*6)-1, floor(0.75*112)-2, floor(0.85*112)-2
    assert container["resources"] == {
        "requests": {"cpu": "3", "memory": "82Gi", "ephemeral-storage": "1Gi",
                     "nvidia.com/gpu": "1"},
        "limits": {"memory": "93Gi", "ephemeral-storage": "2Gi", "nvidia.com/gpu": "1"}}
    assert container["startupProbe"]["failureThreshold"] * 10 >= preset.readiness_timeout_seconds
    assert container["readinessProbe"]["httpGet"] == {"path": "/health", "port": 5000}
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}} in spec["volumes"]
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}} in spec["volumes"]
    assert {"name": "HOME", "value": "/tmp"} in container["env"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsUser"] == 1000
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    exprs = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"][0]["matchExpressions"]
    assert {"key": "apps", "operator": "In", "values": ["phi-3"]} in exprs
    assert "kaito.sh/spec-hash" in template["metadata"]["annotations"]


def test_gpu_requests_are_all_gpus_of_the_sku(catalog):
    ws = ws_of({"resource.instanceType": "Standard_NC12s_v3"})
    preset = catalog.preset("phi-3-mini-4k-instruct")
    template = preset_template(ws, preset, catalog.sku("Standard_NC12s_v3"), SETTINGS, [])
    requests = template["spec"]["containers"][0]["resources"]["requests"]
    assert requests["nvidia.com/gpu"] == "2"
    assert (requests["cpu"], requests["memory"]) == ("8", "166Gi")  # 12 vCPUs, 224 GiB


def test_download_mode_uses_base_image_pinned_revision_and_token(catalog):
    settings = Settings(weights="download")
    ws = ws_of({"inference.preset.name": "llama-3.1-8b-instruct",
                "resource.instanceType": "Standard_NC24ads_A100_v4"})
    preset = catalog.preset("llama-3.1-8b-instruct")
    spec = preset_template(ws, preset, None, settings, [])["spec"]
    container = spec["containers"][0]
    assert container["image"] == "mcr.microsoft.com/aks/kaito/kaito-base:0.1.0"
    assert f"--revision={preset.hugging_face.revision}" in container["args"]
    assert f"--model-id={preset.hugging_face.repo}" in container["args"]
    token = [e for e in container["env"] if e["name"] == "HF_TOKEN"]
    assert token[0]["valueFrom"]["secretKeyRef"] == {"name": "hf-token", "key": "HF_TOKEN"}
    assert any(v["name"] == "weights" for v in spec["volumes"])


def test_adapters_init_containers_strengths_and_pull_secrets(catalog):
    adapters = [
        {"source": {"name": "a1", "image": "r.io/a1:1", "imagePullSecrets": ["s1"]}, "strength": "0.3"},
        {"source": {"name": "a2", "image": "r.io/a2:1"}},
    ]
    ws = ws_of({"inference.adapters": adapters})
    preset = catalog.preset("phi-3-mini-4k-instruct")
    spec = preset_template(ws, preset, None, SETTINGS, [])["spec"]
    assert [c["name"] for c in spec["initContainers"]] == ["adapter-a1", "adapter-a2"]
    assert "--output=/mnt/adapter/a1" in spec["initContainers"][0]["args"]
    assert "--adapter-strengths=a1=0.3,a2=1.0" in spec["containers"][0]["args"]
    assert spec["imagePullSecrets"] == [{"name": "s1"}]
    volume = pull_secret_volume_name("s1")
    assert {"name": volume, "secret": {"secretName": "s1"}} in spec["volumes"]
    first = spec["initContainers"][0]
    assert "--docker-config-dir=/var/run/secrets/kaito/docker" in first["args"]
    assert {"name": volume, "mountPath": "/var/run/secrets/kaito/docker/s1",
            "readOnly": True} in first["volumeMounts"]
    assert "--docker-config-dir" not in " ".join(spec["initContainers"][1]["args"])
    # 2 GiB per adapter plus one for a restarted fetch's staging copy; /tmp holds a layer
    assert {"name": "adapters", "emptyDir": {"sizeLimit": "6Gi"}} in spec["volumes"]
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "5Gi"}} in spec["volumes"]
    assert spec["containers"][0]["resources"]["limits"]["ephemeral-storage"] == "12Gi"
    for init in spec["initContainers"]:
        assert init["resources"]["limits"] == {"memory": "2Gi", "ephemeral-storage": "512Mi"}
        assert init["securityContext"]["capabilities"] == {"drop": ["ALL"]}


@pytest.mark.parametrize("secret", ["acr.pull", "a" * 253, "s1"])
def test_pull_secret_volume_names_are_short_valid_and_stable(catalog, secret):
    adapters = [{"source": {"name": "a1", "image": "r.io/a1:1", "imagePullSecrets": [secret]}}]
    preset = catalog.preset("phi-3-mini-4k-instruct")
    spec = preset_template(ws_of({"inference.adapters": adapters}), preset, None, SETTINGS,
                           [])["spec"]
    names = [v["name"] for v in spec["volumes"] if "secret" in v]
    assert names == [pull_secret_volume_name(secret)]
    assert re.fullmatch(r"pull-[0-9a-f]{8}", names[0])
    assert pull_secret_volume_name(secret) == pull_secret_volume_name(secret)
    assert pull_secret_volume_name(secret) != pull_secret_volume_name(secret + "x")


def test_unknown_sku_gets_conservative_figures_from_the_preset(catalog):
    small = preset_template(ws_of(), catalog.preset("phi-3-mini-4k-instruct"), None, SETTINGS,
                            [])["spec"]
    resources = small["containers"][0]["resources"]
    # 3.8 B parameters in bfloat16 = 8 GiB: 2 cores, 8 GiB requested, twice that as the limit
    assert (resources["requests"]["cpu"], resources["requests"]["memory"]) == ("2", "8Gi")
    assert resources["limits"]["memory"] == "16Gi"
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "4Gi"}} in small[
        "volumes"]
    ws = ws_of({"inference.preset.name": "falcon-40b-instruct", "resource.count": 2})
    big = preset_template(ws, catalog.preset("falcon-40b-instruct"), None, SETTINGS, [])["spec"]
    assert big["containers"][0]["resources"]["requests"]["memory"] == "64Gi"  # capped


def test_download_mode_bounds_the_weights_volume_in_the_disk_limit(catalog):
    ws = ws_of({"inference.preset.name": "llama-3.1-8b-instruct",
                "resource.instanceType": "Standard_NC24ads_A100_v4"})
    preset = catalog.preset("llama-3.1-8b-instruct")
    spec = preset_template(ws, preset, catalog.sku("Standard_NC24ads_A100_v4"),
                           Settings(weights="download"), [])["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    disk = preset.resources.disk_gib
    assert volumes["weights"]["emptyDir"] == {"sizeLimit": f"{disk}Gi"}
    resources = spec["containers"][0]["resources"]
    assert resources["limits"]["ephemeral-storage"] == f"{disk + 2}Gi"  # weights, /tmp, logs
    assert resources["requests"]["ephemeral-storage"] == "1Gi"  # still fits the preset's disk


def test_spec_hash_changes_with_strength_only(catalog):
    preset = catalog.preset("phi-3-mini-4k-instruct")
    adapter = {"source": {"name": "a1", "image": "r.io/a1:1"}, "strength": "0.3"}
    one = preset_template(ws_of({"inference.adapters": [adapter]}), preset, None, SETTINGS, [])
    same = preset_template(ws_of({"inference.adapters": [adapter]}), preset, None, SETTINGS, [])
    other = preset_template(ws_of({"inference.adapters": [dict(adapter, strength="0.4")]}),
                            preset, None, SETTINGS, [])
    hash_of = lambda t: t["metadata"]["annotations"]["kaito.sh/spec-hash"]  # noqa: E731
    assert hash_of(one) == hash_of(same) != hash_of(other)


def test_workloads_and_services(catalog):
    ws = ws_of({"metadata.annotations": {"kaito.sh/enablelb": "True"}})
    preset = catalog.preset("phi-3-mini-4k-instruct")
    template = preset_template(ws, preset, None, SETTINGS, [])
    deploy = build_workload(ws, template, stateful=False)
    assert deploy["kind"] == "Deployment" and deploy["spec"]["replicas"] == 1
    assert deploy["metadata"]["ownerReferences"][0] == {
        "apiVersion": "kaito.sh/v1alpha1", "kind": "Workspace", "name": "workspace-phi-3",
        "uid": "uid-1", "controller": True, "blockOwnerDeletion": True}
    service = build_service(ws, template, multi_node=False)
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": 5000, "protocol": "TCP"},
        {"name": "torch", "port": 29500, "targetPort": 29500, "protocol": "TCP"}]
    container = template["spec"]["containers"][0]
    assert container["ports"] == [{"name": "http", "containerPort": 5000},
                                  {"name": "torch", "containerPort": 29500}]


def test_multi_node_workload(catalog):
    ws = ws_of({"inference.preset.name": "falcon-40b-instruct", "resource.count": 2})
    preset = catalog.preset("falcon-40b-instruct")
    assert uses_statefulset(ws, preset)
    assert not uses_statefulset(ws_of(), catalog.preset("phi-3-mini-4k-instruct"))
    template = preset_template(ws, preset, None, SETTINGS, [])
    sts = build_workload(ws, template, stateful=True)
    assert sts["kind"] == "StatefulSet" and sts["spec"]["serviceName"] == "workspace-phi-3-headless"
    env = {e["name"]: e for e in template["spec"]["containers"][0]["env"]}
    assert env["WORLD_SIZE"]["value"] == "2"
    assert env["MASTER_ADDR"]["value"].startswith("workspace-phi-3-0.workspace-phi-3-headless.")
    service = build_service(ws, template, multi_node=True)
    assert [p["name"] for p in service["spec"]["ports"]] == ["http", "torch"]
    assert build_headless_service(ws)["spec"]["clusterIP"] == "None"


def test_custom_template_keeps_user_affinity_and_adds_ours():
    template = {"spec": {
        "containers": [{"name": "c", "image": "x"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [
                {"key": "zone", "operator": "In", "values": ["1"]}]}]}}},
        "tolerations": [{"key": "team", "operator": "Exists"}],
    }}
    ws = ws_of({"inference.preset": DELETE, "inference.template": template})
    out = custom_template(ws, ws.inference.template, ["n1"])
    exprs = out["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"][0]["matchExpressions"]
    assert [e["key"] for e in exprs] == ["zone", "apps", "kubernetes.io/hostname"]
    assert out["spec"]["tolerations"][0] == {"key": "team", "operator": "Exists"}
    assert len(out["spec"]["tolerations"]) == 3
    assert ws.inference.template == template  # the Workspace itself is not modified
    assert out["spec"]["securityContext"] == {
        "runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000,
        "seccompProfile": {"type": "RuntimeDefault"}}
    assert out["spec"]["automountServiceAccountToken"] is False
    assert out["spec"]["containers"][0]["securityContext"] == {
        "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def test_custom_template_keeps_explicit_security_values():
    template = {"spec": {
        "automountServiceAccountToken": True,
        "securityContext": {"runAsUser": 2000, "seccompProfile": {
            "type": "Localhost", "localhostProfile": "profiles/vllm.json"}},
        "initContainers": [{"name": "i", "image": "x", "securityContext": None}],
        "containers": [{"name": "c", "image": "x", "securityContext": {
            "capabilities": {"add": ["NET_BIND_SERVICE"]}, "readOnlyRootFilesystem": True}}],
    }}
    ws = ws_of({"inference.preset": DELETE, "inference.template": template})
    spec = custom_template(ws, ws.inference.template, [])["spec"]
    assert spec["automountServiceAccountToken"] is True
    assert spec["securityContext"] == {
        "runAsUser": 2000, "runAsNonRoot": True, "runAsGroup": 1000, "fsGroup": 1000,
        "seccompProfile": {"type": "Localhost", "localhostProfile": "profiles/vllm.json"}}
    assert spec["containers"][0]["securityContext"] == {
        "capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]},
        "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False}
    assert spec["initContainers"][0]["securityContext"] == {
        "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


@pytest.mark.parametrize(
    ("desired", "live", "expected"),
    [
        ({"a": 1}, {"a": 1, "b": 2}, False),  # server-added fields are ignored
        ({"a": 1}, {"a": 2}, True),
        ({"l": [{"x": 1}]}, {"l": [{"x": 1, "y": 0}]}, False),
        ({"l": [{"x": 1}]}, {"l": [{"x": 1}, {"x": 2}]}, True),
        ({"port": 80}, {"port": "80"}, False),
        ({"a": {"b": 1}}, {}, True),
    ],
)
def test_drift_is_a_subset_comparison(desired, live, expected):
    assert drifted(desired, live) is expected


def test_settings_from_env():
    settings = settings_from_env({"KAITO_IMAGE_TAG": "1.2.3", "KAITO_WATCH_NAMESPACES": "a, b",
                                  "KAITO_WEIGHTS": "download"})
    assert settings.preset_image("phi-4") == "mcr.microsoft.com/aks/kaito/kaito-phi-4:1.2.3"
    assert settings.watch_namespaces == ("a", "b")
    with pytest.raises(SettingsError, match="KAITO_WEIGHTS"):
        settings_from_env({"KAITO_WEIGHTS": "torrent"})


@pytest.mark.parametrize(("variable", "value"), [
    ("KAITO_NODE_PROVISIONING", "karpenter"),
    ("KAITO_NODECLAIM_NODEPOOL", ""),
    ("KAITO_NODECLAIM_NODEPOOL", "GPU_Pool"),
    ("KAITO_NODECLAIM_NODEPOOL", "a" * 64),
    ("KAITO_NODECLAIM_NODE_CLASS_GROUP", "karpenter.azure.com/v1"),
    ("KAITO_NODECLAIM_NODE_CLASS_KIND", ""),
    ("KAITO_NODECLAIM_SKU_LABEL", "sku name"),
    ("KAITO_NODECLAIM_SKU_LABEL", "/sku"),
])
def test_bad_node_provisioning_settings_name_the_variable(variable, value):
    """Values Karpenter's CRD would refuse in every NodeClaim stop the operator at start-up,
    naming the variable, instead of failing every Workspace later."""
    with pytest.raises(SettingsError, match=variable):
        settings_from_env({variable: value})


def test_node_provisioning_settings_from_env():
    settings = settings_from_env({"KAITO_NODE_PROVISIONING": "nodeclaim",
                                  "KAITO_NODECLAIM_NODEPOOL": "gpu-a100",
                                  "KAITO_NODECLAIM_SKU_LABEL": ""})
    assert (settings.node_provisioning, settings.nodeclaim_nodepool) == ("nodeclaim", "gpu-a100")
    assert settings.nodeclaim_sku_label == ""


def test_every_catalog_sku_leaves_room_for_the_node(catalog):
    preset = catalog.preset("phi-3-mini-4k-instruct")
    for sku in catalog.skus.values():
        share = host_share(sku, preset)
        assert 1 <= share.cpu <= 0.75 * sku.vcpus, sku.name
        assert 2 <= share.memory_request_gib <= share.memory_limit_gib, sku.name
        assert share.memory_limit_gib <= 0.85 * sku.memory_gib, sku.name
        assert 1 <= share.shm_gib <= min(16, share.memory_request_gib), sku.name


@pytest.mark.parametrize(("value", "expected"), [
    ("20Gi", 20 * 2**30), ("500M", 5e8), ("1e9", 1e9), ("1.5Gi", 1.5 * 2**30), (1024, 1024),
    (".5Ki", 512), ("1E3", 1000), ("2E", 2e18), ("abc", None), ("-1", None), (True, None),
    ("1Gi ", None), ("1Gi\n", None), ("", None), (None, None)])
def test_quantities(value, expected):
    assert quantity_bytes(value) == expected


def test_disk_limit_rounds_up_and_skips_memory_and_unparsable_sizes():
    volumes = [{"name": "a", "emptyDir": {"sizeLimit": "500Mi"}},
               {"name": "b", "emptyDir": {"sizeLimit": "1Gi"}},
               {"name": "m", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}},
               {"name": "x", "emptyDir": {"sizeLimit": "lots"}},
               {"name": "p", "persistentVolumeClaim": {"claimName": "c"}}]
    assert disk_limit(volumes) == 2
