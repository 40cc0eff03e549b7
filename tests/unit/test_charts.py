"""The helm charts: render (default and non-default values), lint, Kubernetes schemas 1.30–1.37,
CRDs and preset ConfigMaps identical to their sources, and the security settings the issue asks.

Rendering uses helm-python-sdk (Helm v4 as a library; no helm binary, no cluster)."""

from __future__ import annotations

import base64
import json
import ssl
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHARTS = ROOT / "charts"
KUBE_VERSIONS = [f"1.{minor}.0" for minor in range(30, 38)]
GUID = "00000000-0000-0000-0000-00000000000{}"

AZURE = {
    "subscriptionId": GUID.format(1), "resourceGroup": "rg-kaito", "clusterName": "aks-kaito",
    "location": "eastus", "tenantId": GUID.format(2), "clientId": GUID.format(3),
}
#: (chart, case) -> values; every case is rendered, linted and validated.
CASES: dict[tuple[str, str], dict[str, Any]] = {
    ("kaito-workspace", "defaults"): {},
    ("kaito-workspace", "namespaced-cert-manager-metrics"): {
        "watchNamespaces": ["team-a", "team-b"],
        "webhook": {"tls": "cert-manager"},
        "metrics": {"service": {"enabled": True},
                    "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
        "settings": {"weights": "download", "imagePullSecrets": ["mirror"], "logLevel": "DEBUG"},
        "imagePullSecrets": ["regcred"], "podLabels": {"team": "ml"},
        "tolerations": [{"key": "CriticalAddonsOnly", "operator": "Exists"}],
        "extraEnv": [{"name": "KAITO_BASE_IMAGE", "value": "example.io/kaito-base:1"}],
        "nvidiaDevicePlugin": {"enabled": False}, "presetConfigs": {"create": False},
    },
    ("kaito-workspace", "operator-certs"): {
        "webhook": {"tls": "operator"},
        "image": {"digest": "sha256:" + "a" * 64},
        "nvidiaDevicePlugin": {"imageDigest": "sha256:" + "b" * 64},
    },
    ("kaito-workspace", "cert-manager-cluster-issuer"): {
        "webhook": {"tls": "cert-manager",
                    "certManager": {"issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer"}}},
    },
    ("kaito-workspace", "no-webhook-no-rbac"): {
        "webhook": {"enabled": False}, "rbac": {"create": False},
        "serviceAccount": {"create": False, "name": "existing"},
    },
    ("kaito-workspace", "nodeclaim-aws"): {
        "nodeProvisioning": {"mode": "nodeclaim", "nodeClaim": {
            "nodePool": "gpu", "skuLabel": "",
            "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass",
                             "name": "gpu"}}},
    },
    ("kaito-workspace", "bring-your-own-nodes"): {"nodeProvisioning": {"mode": "none"}},
    ("gpu-provisioner", "defaults"): {},
    ("gpu-provisioner", "nodeclaim"): {"azure": AZURE, "nodeKind": "nodeclaim"},
    ("gpu-provisioner", "karpenter-owns-the-crd"): {
        "nodeKind": "nodeclaim", "crds": {"nodeClaim": {"install": False}}},
    ("gpu-provisioner", "aks"): {"azure": AZURE, "settings": {"gcGracePeriod": "30m"},
                                 "rbac": {"eventsNamespace": "kube-system"},
                                 "image": {"tag": "0.1.0", "digest": "sha256:" + "c" * 64}},
    ("gpu-provisioner", "no-workload-identity"): {
        "azure": dict(AZURE, armEndpoint="https://management.usgovcloudapi.net"),
        "workloadIdentity": {"enabled": False},
    },
}
#: Custom resources (not in Kubernetes' schemas): checked by their own small rules below.
CUSTOM = {("cert-manager.io/v1", "Issuer"), ("cert-manager.io/v1", "Certificate"),
          ("monitoring.coreos.com/v1", "ServiceMonitor")}


def render(chart: str, values: dict[str, Any], namespace: str | None = None) -> list[dict]:
    loaded = helm.Chart.load(CHARTS / chart)
    out = loaded.render(values, name=chart, namespace=namespace or chart, is_install=True)
    return [doc for path, text in sorted(out.items()) if path.endswith(".yaml")
            for doc in yaml.safe_load_all(text) if doc]


def notes(chart: str, values: dict[str, Any]) -> str:
    out = helm.Chart.load(CHARTS / chart).render(values, name=chart, namespace=chart)
    return next(text for path, text in out.items() if path.endswith("NOTES.txt"))


@pytest.fixture(scope="module", params=sorted(CASES), ids=lambda c: f"{c[0]}:{c[1]}")
def case(request) -> tuple[str, dict[str, Any], list[dict]]:
    chart, name = request.param
    values = CASES[request.param]
    return chart, values, render(chart, values)


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def test_values_pass_the_schema(case):
    chart, values, _ = case
    helm.Chart.load(CHARTS / chart).validate_schema(values)


def test_lint_is_clean(case):
    chart, values, _ = case
    report = helm.lint(CHARTS / chart, values, strict=True, kube_version="v1.30.0")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not problems and not report["errors"], report


def test_every_object_is_valid_for_kubernetes_1_30_to_1_37(case):
    _, _, docs = case
    assert docs
    for doc in docs:
        if (doc["apiVersion"], doc["kind"]) in CUSTOM:
            assert doc["metadata"]["name"] and doc["spec"], doc
            continue
        for version in KUBE_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)


def test_names_are_unique_and_labels_consistent(case):
    _, _, docs = case
    keys = [(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in docs]
    assert len(keys) == len(set(keys))
    for doc in docs:
        assert doc["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"


@pytest.mark.parametrize("chart", ["kaito-workspace", "gpu-provisioner"])
def test_invalid_values_are_refused_by_the_schema(chart):
    bad = {"webhook": {"tls": "self"}} if chart == "kaito-workspace" else {
        "azure": {"subscriptionId": "not-a-guid"}}
    with pytest.raises(helm.HelmValuesError):
        helm.Chart.load(CHARTS / chart).validate_schema(bad)
    with pytest.raises(helm.HelmValuesError):
        helm.Chart.load(CHARTS / chart).validate_schema({"unknownKey": 1})


# --- sources the charts carry copies of --------------------------------------------------------


@pytest.mark.parametrize("chart, files", [
    ("kaito-workspace", ["kaito.sh_workspaces.yaml", "karpenter.sh_machines.yaml"]),
    ("gpu-provisioner", ["karpenter.sh_machines.yaml"]),
])
def test_chart_crds_are_identical_to_crds_folder(chart, files):
    carried = sorted(p.name for p in (CHARTS / chart / "crds").iterdir())
    assert carried == sorted(files)
    for name in files:
        assert (CHARTS / chart / "crds" / name).read_bytes() == (ROOT / "crds" / name).read_bytes(), (
            f"regenerate: python -m kaito_operator.api.crd --write crds/ and copy to charts/{chart}/crds/")
    loaded = {c["filename"].rsplit("/", 1)[-1] for c in helm.Chart.load(CHARTS / chart).crds}
    assert loaded == set(files)


def test_configmaps_carry_the_presets_byte_for_byte():
    docs = render("kaito-workspace", {})
    maps = {d["metadata"]["name"]: d["data"] for d in by_kind(docs, "ConfigMap")}
    presets = ROOT / "presets"
    assert maps == {
        "lora-params-template": {"training_config.yaml": (presets / "tuning/lora.yaml").read_text()},
        "qlora-params-template": {"training_config.yaml": (presets / "tuning/qlora.yaml").read_text()},
        "inference-params-template": {
            "inference_config.yaml": (presets / "inference/default.yaml").read_text()},
    }
    files = CHARTS / "kaito-workspace" / "files"
    for copy, source in [("tuning/lora.yaml", "tuning/lora.yaml"),
                         ("tuning/qlora.yaml", "tuning/qlora.yaml"),
                         ("inference/default.yaml", "inference/default.yaml")]:
        assert (files / copy).read_bytes() == (presets / source).read_bytes(), copy


# --- the operator Deployment -------------------------------------------------------------------


def container(docs: list[dict]) -> tuple[dict, dict]:
    (deploy,) = by_kind(docs, "Deployment")
    pod = deploy["spec"]["template"]["spec"]
    return pod, pod["containers"][0]


@pytest.mark.parametrize("chart", ["kaito-workspace", "gpu-provisioner"])
def test_pods_are_locked_down(chart):
    pod, main = container(render(chart, CASES[(chart, "defaults")]))
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    sc = main["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert main["resources"]["requests"] and main["resources"]["limits"]["memory"]
    assert main["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "liveness"}
    ports = {p["name"]: p["containerPort"] for p in main["ports"]}
    assert ports == ({"liveness": 8080, "metrics": 8000, "webhook": 9443}
                     if chart == "kaito-workspace" else {"liveness": 8081, "metrics": 8001})
    assert f"--liveness=http://0.0.0.0:{ports['liveness']}/healthz" in main["args"]
    assert f"--metrics-port={ports['metrics']}" in main["args"]
    assert {"name": "tmp", "mountPath": "/tmp"} in main["volumeMounts"]


def test_operator_args_and_settings_follow_values():
    docs = render("kaito-workspace", CASES[("kaito-workspace", "namespaced-cert-manager-metrics")])
    pod, main = container(docs)
    assert main["command"] == ["kaito-operator"]
    assert "--namespace=team-a" in main["args"] and "--namespace=team-b" in main["args"]
    env = {e["name"]: e.get("value") for e in main["env"]}
    assert env["KAITO_WEIGHTS"] == "download" and env["KAITO_IMAGE_PULL_SECRETS"] == "mirror"
    assert env["KAITO_BASE_IMAGE"] == "example.io/kaito-base:1"
    from kaito_operator.settings import settings_from_env

    settings = settings_from_env({k: v for k, v in env.items() if v is not None})
    assert settings.log_level == "DEBUG" and settings.image_pull_secrets == ("mirror",)
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert main["image"] == "mcr.microsoft.com/aks/kaito/kaito-operator:0.1.0"


def test_default_settings_equal_the_operator_defaults():
    from kaito_operator.settings import Settings, settings_from_env

    _, main = container(render("kaito-workspace", {}))
    env = {e["name"]: e["value"] for e in main["env"] if "value" in e}
    assert settings_from_env(env) == Settings()


# --- webhook and TLS ---------------------------------------------------------------------------


def webhook_config(docs: list[dict]) -> dict:
    (config,) = by_kind(docs, "ValidatingWebhookConfiguration")
    (hook,) = config["webhooks"]
    return config | {"hook": hook}


def test_helm_generated_certificate_serves_the_service_name(tmp_path):
    docs = render("kaito-workspace", {}, namespace="kaito-system")
    config = webhook_config(docs)
    hook = config["hook"]
    assert hook["clientConfig"]["service"] == {
        "name": "kaito-workspace-webhook", "namespace": "kaito-system", "port": 9443,
        "path": "/validate-workspace"}
    assert hook["rules"][0]["resources"] == ["workspaces"]
    (secret,) = by_kind(docs, "Secret")
    cert = base64.b64decode(secret["data"]["tls.crt"])
    key = base64.b64decode(secret["data"]["tls.key"])
    assert base64.b64decode(hook["clientConfig"]["caBundle"]) == cert
    # The bundle verifies the served certificate for the Service's DNS name (as the API server
    # does), and the key matches the certificate.
    (tmp_path / "c.pem").write_bytes(cert)
    (tmp_path / "k.pem").write_bytes(key)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    from cryptography import x509

    parsed = x509.load_pem_x509_certificate(cert)
    names = parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "kaito-workspace-webhook.kaito-system.svc" in names.get_values_for_type(x509.DNSName)
    _, main = container(docs)
    assert "--webhook-cert=/etc/kaito/webhook-tls/tls.crt" in main["args"]
    assert not any(a.startswith("--webhook-config") for a in main["args"])
    services = {s["metadata"]["name"]: s for s in by_kind(docs, "Service")}
    assert services["kaito-workspace-webhook"]["spec"]["ports"][0]["targetPort"] == "webhook"


def test_cert_manager_mode_injects_the_ca():
    docs = render("kaito-workspace", CASES[("kaito-workspace", "namespaced-cert-manager-metrics")])
    config = webhook_config(docs)
    assert config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == (
        "kaito-workspace/kaito-workspace-webhook-tls")
    assert "caBundle" not in config["hook"]["clientConfig"]
    assert config["hook"]["namespaceSelector"]["matchExpressions"][0]["values"] == ["team-a", "team-b"]
    (cert,) = by_kind(docs, "Certificate")
    assert cert["spec"]["secretName"] == "kaito-workspace-webhook-tls"
    assert "kaito-workspace-webhook.kaito-workspace.svc" in cert["spec"]["dnsNames"]
    assert by_kind(docs, "Issuer") and not by_kind(docs, "Secret")
    other = render("kaito-workspace", CASES[("kaito-workspace", "cert-manager-cluster-issuer")])
    assert not by_kind(other, "Issuer")
    assert by_kind(other, "Certificate")[0]["spec"]["issuerRef"]["kind"] == "ClusterIssuer"


def test_operator_mode_lets_kopf_manage_the_configuration():
    docs = render("kaito-workspace", {"webhook": {"tls": "operator"}})
    assert not by_kind(docs, "ValidatingWebhookConfiguration") and not by_kind(docs, "Secret")
    _, main = container(docs)
    assert "--webhook-config=kaito-workspace-kaito-workspace" in main["args"]
    assert "--webhook-host=kaito-workspace-webhook.kaito-workspace.svc" in main["args"]
    (role,) = by_kind(docs, "ClusterRole")
    hooks = [r for r in role["rules"] if "validatingwebhookconfigurations" in r["resources"]]
    assert {tuple(r["verbs"]) for r in hooks} == {("create",), ("patch",)}
    (patch,) = [r for r in hooks if r["verbs"] == ["patch"]]
    assert patch["resourceNames"] == ["kaito-workspace-kaito-workspace"]


# --- image digests -----------------------------------------------------------------------------


def images(docs: list[dict]) -> list[str]:
    return sorted(c["image"] for d in docs if d["kind"] in ("Deployment", "DaemonSet")
                  for c in d["spec"]["template"]["spec"]["containers"])


PLUGIN = "nvcr.io/nvidia/k8s-device-plugin:v0.17.2"
OPERATOR = "mcr.microsoft.com/aks/kaito/kaito-operator"


@pytest.mark.parametrize(
    ("chart", "case", "expected"),
    [
        ("kaito-workspace", "defaults", [OPERATOR + ":{app}", PLUGIN]),
        ("kaito-workspace", "operator-certs",
         [OPERATOR + "@sha256:" + "a" * 64, PLUGIN + "@sha256:" + "b" * 64]),
        ("gpu-provisioner", "defaults", [OPERATOR + ":{app}"]),
        ("gpu-provisioner", "aks", [OPERATOR + "@sha256:" + "c" * 64]),
    ],
)
def test_images_are_pulled_by_digest_when_one_is_given(chart, case, expected):
    app = yaml.safe_load((CHARTS / chart / "Chart.yaml").read_text())["appVersion"]
    rendered = images(render(chart, CASES[(chart, case)]))
    assert rendered == sorted(image.format(app=app) for image in expected)


@pytest.mark.parametrize("digest", [
    "sha256:" + "a" * 63, "sha256:" + "A" * 64, "sha512:" + "a" * 128, "a" * 64, "latest",
    "sha256:" + "a" * 64 + "0", " sha256:" + "a" * 64,
])
@pytest.mark.parametrize("chart", ["kaito-workspace", "gpu-provisioner"])
def test_malformed_digests_are_refused_by_the_schema(chart, digest):
    loaded = helm.Chart.load(CHARTS / chart)
    with pytest.raises(helm.HelmValuesError):
        loaded.validate_schema({"image": {"digest": digest}})
    if chart == "kaito-workspace":
        with pytest.raises(helm.HelmValuesError):
            loaded.validate_schema({"nvidiaDevicePlugin": {"imageDigest": digest}})


# --- optional parts and NOTES ------------------------------------------------------------------


def test_optional_parts_follow_their_switches():
    defaults = render("kaito-workspace", {})
    (plugin,) = by_kind(defaults, "DaemonSet")
    spec = plugin["spec"]["template"]["spec"]
    assert spec["nodeSelector"] == {"accelerator": "nvidia"}
    assert {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"} in spec[
        "tolerations"]
    assert not by_kind(defaults, "ServiceMonitor")
    other = render("kaito-workspace", CASES[("kaito-workspace", "namespaced-cert-manager-metrics")])
    assert not by_kind(other, "DaemonSet") and not by_kind(other, "ConfigMap")
    (monitor,) = by_kind(other, "ServiceMonitor")
    metrics = [s for s in by_kind(other, "Service") if s["metadata"]["name"].endswith("-metrics")]
    assert metrics and monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= metrics[0]["metadata"][
        "labels"].items()
    bare = render("kaito-workspace", CASES[("kaito-workspace", "no-webhook-no-rbac")])
    assert {d["kind"] for d in bare} == {"Deployment", "DaemonSet", "ConfigMap"}
    assert container(bare)[0]["serviceAccountName"] == "existing"


def test_notes_tell_the_next_command():
    text = notes("kaito-workspace", {})
    assert "kubectl apply -f examples/inference/kaito_workspace_phi_3_mini.yaml" in text
    assert (ROOT / "examples/inference/kaito_workspace_phi_3_mini.yaml").exists()
    missing = notes("gpu-provisioner", {})
    assert "WARNING: azure.subscriptionId" in missing
    assert "WARNING" not in notes("gpu-provisioner", {"azure": AZURE})


# --- gpu-provisioner ---------------------------------------------------------------------------


def test_provisioner_gets_azure_settings_and_workload_identity():
    docs = render("gpu-provisioner", CASES[("gpu-provisioner", "aks")])
    pod, main = container(docs)
    assert main["command"] == ["kaito-gpu-provisioner"]
    env = {e["name"]: e["value"] for e in main["env"]}
    from kaito_operator.provisioner.settings import ENV_VARS, settings_from_env

    assert set(env) <= set(ENV_VARS)
    settings = settings_from_env(env)
    assert (settings.subscription_id, settings.resource_group, settings.cluster_name,
            settings.location, settings.tenant_id, settings.client_id) == (
        AZURE["subscriptionId"], "rg-kaito", "aks-kaito", "eastus", AZURE["tenantId"],
        AZURE["clientId"])
    assert settings.gc_grace_seconds == 1800
    labels = by_kind(docs, "Deployment")[0]["spec"]["template"]["metadata"]["labels"]
    assert labels["azure.workload.identity/use"] == "true"
    (sa,) = by_kind(docs, "ServiceAccount")
    assert sa["metadata"]["annotations"]["azure.workload.identity/client-id"] == AZURE["clientId"]
    assert pod["serviceAccountName"] == sa["metadata"]["name"]
    (role,) = by_kind(docs, "Role")
    assert role["metadata"]["namespace"] == "kube-system"
    plain = render("gpu-provisioner", CASES[("gpu-provisioner", "no-workload-identity")])
    assert "azure.workload.identity/use" not in by_kind(plain, "Deployment")[0]["spec"][
        "template"]["metadata"]["labels"]
    env = {e["name"]: e["value"] for e in container(plain)[1]["env"]}
    assert env["ARM_ENDPOINT"] == "https://management.usgovcloudapi.net"


def karpenter_grants(docs: list[dict]) -> dict[str, set[str]]:
    """resource -> verbs the chart's ClusterRole grants in the karpenter.sh group."""
    out: dict[str, set[str]] = {}
    for role in by_kind(docs, "ClusterRole"):
        for rule in role["rules"]:
            if "karpenter.sh" in rule["apiGroups"]:
                for resource in rule["resources"]:
                    out.setdefault(resource, set()).update(rule["verbs"])
    return out


@pytest.mark.parametrize(("node_kind", "status"), [
    ("machine", "machines/status"), ("nodeclaim", "nodeclaims/status")])
def test_provisioner_rbac_is_node_objects_nodes_and_events_only(node_kind, status):
    docs = render("gpu-provisioner", {"nodeKind": node_kind})
    granted = {res for kind in ("ClusterRole", "Role") for d in by_kind(docs, kind)
               for rule in d["rules"] for res in rule["resources"]}
    assert granted == {"machines", "nodeclaims", status, "nodes", "events"}
    # Both kinds are watched and finalized whatever nodeKind is; only nodeKind's status is
    # written (the other kind is only finalized, so an old Workspace can still be deleted).
    rules = karpenter_grants(docs)
    assert rules["machines"] == rules["nodeclaims"] == {"list", "watch", "patch"}
    assert rules[status] == {"patch"}
    _, main = container(docs)
    env = {e["name"]: e["value"] for e in main["env"]}
    assert env["PROVISIONER_NODE_KIND"] == node_kind


@pytest.mark.parametrize(("mode", "created"), [
    ("machine", "machines"), ("nodeclaim", "nodeclaims"), ("none", None)])
@pytest.mark.parametrize("namespaces", [[], ["team-a"]], ids=["cluster-wide", "namespaced"])
def test_operator_creates_only_its_modes_kind(mode, created, namespaces):
    """Every mode reads and deletes both kinds (objects left from an earlier mode are still
    the Workspace's); only the mode's kind is created, and in mode none neither is."""
    docs = render("kaito-workspace", {"nodeProvisioning": {"mode": mode},
                                      "watchNamespaces": namespaces})
    rules = karpenter_grants(docs)
    assert set(rules) == {"machines", "nodeclaims"}
    for resource, verbs in rules.items():
        expected = {"list", "watch", "delete"} | ({"create"} if resource == created else set())
        assert verbs == expected, resource
    for role in by_kind(docs, "Role"):
        assert not [r for r in role["rules"] if "karpenter.sh" in r["apiGroups"]]


def operator_env(values: dict[str, Any]) -> dict[str, str]:
    _, main = container(render("kaito-workspace", values))
    return {e["name"]: e["value"] for e in main["env"] if "value" in e}


def test_node_provisioning_values_become_the_operators_settings():
    from kaito_operator.settings import settings_from_env

    env = operator_env(CASES[("kaito-workspace", "nodeclaim-aws")])
    assert env["KAITO_NODE_PROVISIONING"] == "nodeclaim"
    assert env["KAITO_NODECLAIM_SKU_LABEL"] == ""
    settings = settings_from_env(env)
    assert (settings.node_provisioning, settings.nodeclaim_nodepool,
            settings.nodeclaim_node_class_group, settings.nodeclaim_node_class_kind,
            settings.nodeclaim_node_class_name, settings.nodeclaim_sku_label) == (
        "nodeclaim", "gpu", "karpenter.k8s.aws", "EC2NodeClass", "gpu", "")
    defaults = settings_from_env(operator_env({}))
    assert defaults.node_provisioning == "machine"
    assert (defaults.nodeclaim_node_class_group, defaults.nodeclaim_node_class_kind,
            defaults.nodeclaim_sku_label) == (
        "karpenter.azure.com", "AKSNodeClass", "karpenter.azure.com/sku-name")
    none = settings_from_env(operator_env(CASES[("kaito-workspace", "bring-your-own-nodes")]))
    assert none.node_provisioning == "none"


@pytest.mark.parametrize(("chart", "bad"), [
    ("kaito-workspace", {"nodeProvisioning": {"mode": "karpenter"}}),
    ("kaito-workspace", {"nodeProvisioning": {"mode": "NodeClaim"}}),
    ("kaito-workspace", {"nodeProvisioning": {"nodeClaim": {"nodePool": "Kaito_GPU"}}}),
    ("kaito-workspace", {"nodeProvisioning": {"nodeClaim": {"nodeClassRef": {"name": ""}}}}),
    ("kaito-workspace", {"nodeProvisioning": {"nodeClaim": {
        "nodeClassRef": {"group": "karpenter.k8s.aws/v1", "kind": "EC2NodeClass",
                         "name": "x"}}}}),
    ("kaito-workspace", {"nodeProvisioning": {"nodeClaim": {"skuLabel": "bad label"}}}),
    ("kaito-workspace", {"nodeProvisioning": {"nodeClaims": {}}}),
    ("gpu-provisioner", {"nodeKind": "nodeclaims"}),
    ("gpu-provisioner", {"crds": {"nodeClaim": {"install": "yes"}}}),
    ("gpu-provisioner", {"crds": {"nodeclaim": {"install": False}}}),
], ids=lambda v: json.dumps(v) if isinstance(v, dict) else v)
def test_bad_node_provisioning_values_are_refused(chart, bad):
    with pytest.raises(helm.HelmValuesError):
        helm.Chart.load(CHARTS / chart).validate_schema(bad)


NODECLAIM_CRD = "karpenter.sh_nodeclaims.yaml"


def test_provisioner_chart_installs_the_nodeclaim_crd_unless_told_not_to():
    """The template carries crds/karpenter.sh_nodeclaims.yaml (a byte-identical copy under
    files/), with the chart's labels and the keep policy; crds.nodeClaim.install=false leaves
    it out. The workspace chart never carries it (whoever provisions NodeClaims brings it)."""
    copy = CHARTS / "gpu-provisioner" / "files" / NODECLAIM_CRD
    assert copy.read_bytes() == (ROOT / "crds" / NODECLAIM_CRD).read_bytes(), (
        "regenerate: make crds")
    source = yaml.safe_load((ROOT / "crds" / NODECLAIM_CRD).read_text())
    for values in ({}, {"nodeKind": "machine"}, {"nodeKind": "nodeclaim"}):
        (crd,) = by_kind(render("gpu-provisioner", values), "CustomResourceDefinition")
        assert crd["spec"] == source["spec"]
        assert crd["metadata"]["name"] == source["metadata"]["name"] == "nodeclaims.karpenter.sh"
        assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
        assert crd["metadata"]["labels"]["app.kubernetes.io/instance"] == "gpu-provisioner"
    skipped = render("gpu-provisioner", CASES[("gpu-provisioner", "karpenter-owns-the-crd")])
    assert not by_kind(skipped, "CustomResourceDefinition")
    assert by_kind(skipped, "Deployment")
    assert "crds.nodeClaim.install=false" in notes(
        "gpu-provisioner", CASES[("gpu-provisioner", "karpenter-owns-the-crd")])
    assert not by_kind(render("kaito-workspace", {"nodeProvisioning": {"mode": "nodeclaim"}}),
                       "CustomResourceDefinition")


@pytest.mark.parametrize(("mode", "words"), [
    ("machine", ["machines.karpenter.sh", "gpu-provisioner", "nodeKind=machine"]),
    ("nodeclaim", ["nodeclaims.karpenter.sh", 'NodePool "kaito"', "AKSNodeClass/default",
                   "nodeKind=nodeclaim", "docs/install.md"]),
    ("none", ["InsufficientNodes", "resource.preferredNodes", "kubectl label node"]),
])
def test_notes_explain_the_node_provisioning_mode(mode, words):
    text = notes("kaito-workspace", {"nodeProvisioning": {"mode": mode}})
    for word in words:
        assert word in text, (mode, word)
    if mode == "none":
        assert "karpenter.sh" not in text


def test_schema_is_valid_json_schema():
    import jsonschema

    for chart in ("kaito-workspace", "gpu-provisioner"):
        schema = json.loads((CHARTS / chart / "values.schema.json").read_text())
        jsonschema.Draft7Validator.check_schema(schema)
        values = yaml.safe_load((CHARTS / chart / "values.yaml").read_text())
        jsonschema.validate(values, schema)

