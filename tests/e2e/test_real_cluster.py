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


def test_crds_are_served_as_generated(api):
    _, ext = api
    for path in sorted((ROOT / "crds").glob("*.yaml")):
        wanted = yaml.safe_load(path.read_text())
        live = ext.read_custom_resource_definition(wanted["metadata"]["name"])
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
