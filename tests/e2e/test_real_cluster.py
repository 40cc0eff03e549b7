"""End-to-end checks against a real cluster (kind, AKS) where the charts are installed.

Run with `KUBECONFIG=... pytest -m e2e tests/e2e`; without KUBECONFIG they are skipped. They
check what no emulator can: that a real API server (1.30+) accepts our CRDs as written, and
enforces their CEL rules, and that the controller brings a Workspace up in a namespace that
enforces the `restricted` Pod Security Standard.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest
import yaml

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not os.environ.get("KUBECONFIG"),
                       reason="needs a real cluster: set KUBECONFIG (kind or AKS with the charts)"),
]

ROOT = Path(__file__).resolve().parents[2]
GROUP, VERSION, PLURAL = "kaito.sh", "v1alpha1", "workspaces"
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted",
              "pod-security.kubernetes.io/enforce-version": "latest"}


@pytest.fixture(scope="module")
def api():
    from kubernetes import client, config

    config.load_kube_config()
    return client.CustomObjectsApi(), client.ApiextensionsV1Api()


@pytest.fixture
def namespace():
    from kubernetes import client

    name = f"kaito-e2e-{uuid.uuid4().hex[:6]}"
    core = client.CoreV1Api()
    # Pod Security Admission refuses any pod of this namespace that is not `restricted`: the
    # Workspace only becomes ready if the operator's pods pass.
    core.create_namespace({"metadata": {"name": name, "labels": RESTRICTED}})
    yield name
    core.delete_namespace(name)


#: CRDs a cluster may lack: the NodeClaim CRD comes with the gpu-provisioner chart (nodeKind
#: nodeclaim) or with Karpenter, not with the workspace chart.
OPTIONAL_CRDS = {"nodeclaims.karpenter.sh"}


def test_crds_are_served_as_generated(api):
    from kubernetes.client.exceptions import ApiException

    _, ext = api
    for path in sorted((ROOT / "crds").glob("*.yaml")):
        wanted = yaml.safe_load(path.read_text())
        name = wanted["metadata"]["name"]
        try:
            live = ext.read_custom_resource_definition(name)
        except ApiException as exc:
            if exc.status == 404 and name in OPTIONAL_CRDS:
                continue  # not installed here; Karpenter's own has the same columns (unit-tested)
            raise
        columns = [c.name for c in live.spec.versions[0].additional_printer_columns or []]
        assert columns == [c["name"] for c in wanted["spec"]["versions"][0]
                           ["additionalPrinterColumns"]]


def test_api_server_enforces_the_cel_rules(api, namespace):
    from kubernetes.client.exceptions import ApiException

    custom, _ = api
    body = yaml.safe_load((ROOT / "examples/inference/kaito_workspace_phi_3_mini.yaml").read_text())
    body["metadata"]["namespace"] = namespace
    body["tuning"] = {"preset": {"name": "phi-3-mini-4k-instruct"}, "method": "lora",
                      "input": {"urls": ["https://example.com/d.parquet"]},
                      "output": {"volumeSource": {"emptyDir": {}}}}
    with pytest.raises(ApiException) as info:
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    assert info.value.status == 422
    assert "exactly one of inference or tuning" in info.value.body


def test_quick_start_gets_its_resources(api, namespace):
    custom, _ = api
    body = yaml.safe_load((ROOT / "examples/inference/kaito_workspace_phi_3_mini.yaml").read_text())
    body["metadata"]["namespace"] = namespace
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    name = body["metadata"]["name"]
    try:
        deadline = time.monotonic() + float(os.environ.get("KAITO_E2E_TIMEOUT", "1800"))
        while time.monotonic() < deadline:
            live = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
            conds = {c["type"]: c for c in (live.get("status") or {}).get("conditions") or []}
            if conds.get("WorkspaceReady", {}).get("status") == "True":
                return
            time.sleep(10)
        pytest.fail(f"not ready: {conds}")
    finally:
        custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)


def test_rendered_pods_pass_pod_security_admission(namespace):
    """The API server's own Pod Security Admission (dry run: nothing is scheduled) accepts the
    pod of every example as the controller renders it."""
    from kubernetes import client

    from kaito_operator.api.workspace import Workspace
    from kaito_operator.catalog import load_catalog
    from kaito_operator.settings import Settings
    from kaito_operator.workspace.tuning import desired_tuning
    from kaito_operator.workspace.workload import desired_inference

    catalog, core = load_catalog(), client.CoreV1Api()
    for index, path in enumerate(sorted((ROOT / "examples").rglob("*.yaml"))):
        body = yaml.safe_load(path.read_text())
        body["metadata"].update(namespace=namespace, uid="uid-e2e")
        ws = Workspace.model_validate(body)
        if ws.tuning is not None:
            template = desired_tuning(ws, ws.tuning, catalog, Settings(), [])[1]["spec"]["template"]
        else:
            template = desired_inference(ws, catalog, Settings(), [])[1]["spec"]["template"]
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": f"pss-{index}", "namespace": namespace},
               "spec": template["spec"]}
        core.create_namespaced_pod(namespace, pod, dry_run="All")  # raises 403 when refused


def _installed_operator_settings():
    """The Settings of the kaito-workspace operator installed by the chart (its Deployment's
    environment), or None when no such Deployment is found."""
    from kubernetes import client

    from kaito_operator.settings import settings_from_env

    deployments = client.AppsV1Api().list_deployment_for_all_namespaces(
        label_selector="app.kubernetes.io/name=kaito-workspace").items
    for deployment in deployments:
        for container in deployment.spec.template.spec.containers:
            env = {e.name: e.value for e in container.env or [] if e.value is not None}
            if "KAITO_NODE_PROVISIONING" in env:
                return settings_from_env(env)
    return None


def test_nodeclaim_mode_creates_the_nodeclaim_of_the_contract(api, namespace):
    """With the chart's `nodeProvisioning.mode=nodeclaim` on a cluster that serves
    `nodeclaims.karpenter.sh` (Karpenter, or the gpu-provisioner chart with nodeKind=nodeclaim),
    the quick start gets one NodeClaim exactly as `build_nodeclaim` writes it, a
    `NodeClaimReady` condition, and no Machine; deleting the Workspace deletes the NodeClaim."""
    from kubernetes.client.exceptions import ApiException

    from kaito_operator.api.workspace import Workspace
    from kaito_operator.workspace.names import machine_name
    from kaito_operator.workspace.provisioning.nodeclaim import build_nodeclaim

    custom, ext = api
    try:
        ext.read_custom_resource_definition("nodeclaims.karpenter.sh")
    except ApiException as exc:
        if exc.status == 404:
            pytest.skip("the cluster has no nodeclaims.karpenter.sh CRD (install Karpenter, or "
                        "the gpu-provisioner chart with nodeKind=nodeclaim)")
        raise
    settings = _installed_operator_settings()
    if settings is None or settings.node_provisioning != "nodeclaim":
        pytest.skip("the kaito-workspace operator does not run with "
                    "nodeProvisioning.mode=nodeclaim (helm upgrade --set "
                    "nodeProvisioning.mode=nodeclaim)")
    body = yaml.safe_load((ROOT / "examples/inference/kaito_workspace_phi_3_mini.yaml").read_text())
    body["metadata"]["namespace"] = namespace
    name = body["metadata"]["name"]
    claim_name = machine_name(namespace, name, 0)
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    timeout = float(os.environ.get("KAITO_E2E_TIMEOUT", "1800"))

    def nodeclaim():
        try:
            return custom.get_cluster_custom_object("karpenter.sh", "v1", "nodeclaims",
                                                    claim_name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    try:
        deadline = time.monotonic() + 300
        claim = nodeclaim()
        while claim is None and time.monotonic() < deadline:
            time.sleep(5)
            claim = nodeclaim()
        assert claim is not None, f"no NodeClaim {claim_name} within 300 s"
        expected = build_nodeclaim(
            Workspace.model_validate({**body, "metadata": {**body["metadata"], "uid": "e2e"}}),
            0, 1, settings)
        meta = claim["metadata"]
        assert expected["metadata"]["labels"].items() <= meta["labels"].items()
        assert meta["annotations"]["karpenter.sh/do-not-disrupt"] == "true"
        spec = dict(claim["spec"])
        storage = spec.pop("resources")["requests"]["storage"]
        assert storage.endswith("Gi") and int(storage[:-2]) > 0
        wanted = {k: v for k, v in expected["spec"].items() if k != "resources"}
        assert {k: spec.get(k) for k in wanted} == wanted
        assert spec["requirements"][:3] == [
            {"key": "node.kubernetes.io/instance-type", "operator": "In",
             "values": ["Standard_NC6s_v3"]},
            {"key": "karpenter.sh/nodepool", "operator": "In",
             "values": [settings.nodeclaim_nodepool]},
            {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
        ]
        try:
            custom.get_cluster_custom_object("karpenter.sh", "v1alpha5", "machines", claim_name)
            pytest.fail(f"a Machine {claim_name} was created in nodeclaim mode")
        except ApiException as exc:
            assert exc.status == 404
        conds = {}
        deadline = time.monotonic() + 300
        while "NodeClaimReady" not in conds and time.monotonic() < deadline:
            live = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
            conds = {c["type"]: c for c in (live.get("status") or {}).get("conditions") or []}
            if "NodeClaimReady" not in conds:
                time.sleep(5)
        assert "NodeClaimReady" in conds and "MachineReady" not in conds, conds
    finally:
        custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    deadline = time.monotonic() + timeout
    while nodeclaim() is not None and time.monotonic() < deadline:
        time.sleep(10)
    assert nodeclaim() is None, f"NodeClaim {claim_name} outlived its Workspace"
