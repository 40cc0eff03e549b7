"""The real workspace controller (kopf over HTTP) against the API emulator and a simulated
cluster that provisions Machines into Nodes and runs pods."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from kaito_operator.catalog import load_catalog
from kaito_operator.settings import Settings
from kaito_operator.workspace.names import machine_name
from kaito_operator.workspace.operator import OperatorThread
from kaito_operator.workspace.runtime import WorkspaceRuntime
from kaito_sandbox.sim.cluster import PodFault, SimulatedCluster
from tests.factories import DELETE, inference_workspace, with_changes
from tests.support.waiting import wait_for

CATALOG = load_catalog()
WS_PATH = "/apis/kaito.sh/v1alpha1/namespaces/{ns}/workspaces"
MACHINES = "/apis/karpenter.sh/v1alpha5/machines"




def gpus_of(sku: str) -> int:
    found = CATALOG.sku(sku)
    return found.gpu_count if found else 1


@pytest.fixture
def cluster(kube_api) -> Iterator[SimulatedCluster]:
    with SimulatedCluster(kube_api.url, gpus_of=gpus_of) as sim:
        yield sim


def start_operator(kube_api, namespace) -> OperatorThread:
    runtime = WorkspaceRuntime(CATALOG, Settings(requeue_seconds=0.5))
    return OperatorThread(runtime, kube_api.url, [namespace]).start(timeout=60)


@pytest.fixture
def operator(kube_api, namespace) -> Iterator[OperatorThread]:
    op = start_operator(kube_api, namespace)
    yield op
    op.stop()


def apply(http: httpx.Client, ns: str, obj: dict[str, Any]) -> dict[str, Any]:
    obj = with_changes(obj, {"metadata.namespace": ns})
    response = http.post(WS_PATH.format(ns=ns), json=obj)
    assert response.status_code == 201, response.text
    return response.json()


def workspace(http: httpx.Client, ns: str, name: str) -> dict[str, Any]:
    return http.get(f"{WS_PATH.format(ns=ns)}/{name}").json()


def condition(ws: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for cond in (ws.get("status") or {}).get("conditions") or []:
        if cond["type"] == type_:
            return cond
    return None


def wait_condition(http, ns, name, type_, status, reason=None, timeout=60.0, generation=None):
    """The condition once it has `status` (and `reason`); with `generation`, only as observed
    for that generation of the spec (a condition left from the previous one does not count)."""

    def check():
        cond = condition(workspace(http, ns, name), type_)
        if cond and cond["status"] == status and (reason is None or cond["reason"] == reason) \
                and (generation is None or cond.get("observedGeneration") == generation):
            return cond
        return None

    return wait_for(check, timeout, f"{type_}={status} ({reason}, generation {generation})")


def wait_workspace(http, ns, name, check, what, timeout=60.0):
    """The Workspace as read once, when `check(ws)` holds for that one read."""

    def read():
        ws = workspace(http, ns, name)
        return ws if check(ws) else None

    return wait_for(read, timeout, what)


def events_of(http, ns, name, type_=None):
    items = http.get(f"/api/v1/namespaces/{ns}/events").json()["items"]
    return [e for e in items
            if e["involvedObject"]["name"] == name and (type_ is None or e["type"] == type_)]


def wait_events(http, ns, name, reasons, type_=None, timeout=60.0):
    """The Workspace's Events once every reason in `reasons` is among them (Events are posted
    after the status they announce, so seeing a condition does not mean its Event is there)."""

    def check():
        found = events_of(http, ns, name, type_)
        return found if set(reasons) <= {e["reason"] for e in found} else None

    return wait_for(check, timeout, f"Events {sorted(reasons)} on {name}")


def uid_other_than(http, path, uid):
    """The object at `path` once it exists with a uid other than `uid` (read once per try: an
    object being recreated may be gone between two reads)."""
    response = http.get(path)
    if response.status_code != 200:
        return None
    found = response.json()
    return found if found["metadata"].get("uid") != uid else None


def our_machines(http, ns, name):
    labels = f"kaito.sh/workspace={name},kaito.sh/workspacenamespace={ns}"
    return http.get(MACHINES, params={"labelSelector": labels}).json()["items"]


def test_quick_start_becomes_ready(http, namespace, operator, cluster):
    ws = apply(http, namespace, inference_workspace(name="phi"))
    ready = wait_condition(http, namespace, "phi", "WorkspaceReady", "True")
    assert ready["observedGeneration"] == ws["metadata"]["generation"]
    final = workspace(http, namespace, "phi")
    for type_ in ("MachineReady", "ResourceReady", "InferenceReady"):
        assert condition(final, type_)["status"] == "True", type_
    (machine,) = our_machines(http, namespace, "phi")
    assert machine["metadata"]["name"] == machine_name(namespace, "phi", 0)
    assert machine["spec"]["taints"] == [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}]
    assert final["status"]["workerNodes"] == [machine["status"]["nodeName"]]
    deploy = http.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/phi").json()
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    assert container["image"].endswith("/kaito-phi-3-mini-4k-instruct:0.1.0")
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert deploy["metadata"]["ownerReferences"][0]["uid"] == ws["metadata"]["uid"]
    service = http.get(f"/api/v1/namespaces/{namespace}/services/phi").json()
    # KAITO's quick start shows `80/TCP,29500/TCP` for a single-node phi-3-mini Workspace.
    assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [
        (80, 5000), (29500, 29500)]
    wait_events(http, namespace, "phi", {"MachineCreated", "WorkspaceReady"})


def test_crash_looping_pods_turn_conditions_false_then_recover(http, namespace, operator, cluster):
    cluster.pod_faults["crashy"] = PodFault("CrashLoopBackOff", "back-off restarting", "OOMKilled")
    apply(http, namespace, inference_workspace(name="crashy"))
    seen = wait_workspace(
        http, namespace, "crashy",
        lambda ws: (condition(ws, "InferenceReady") or {}).get("reason") == "OOMKilled",
        "InferenceReady=False (OOMKilled)")
    cond = condition(seen, "InferenceReady")
    assert cond["status"] == "False" and "crashy" in cond["message"]
    ready = condition(seen, "WorkspaceReady")  # written by the same status patch
    assert ready["status"] == "False" and ready["reason"] == "OOMKilled"
    del cluster.pod_faults["crashy"]
    wait_condition(http, namespace, "crashy", "WorkspaceReady", "True")


def test_machine_failure_message_is_surfaced(http, namespace, operator, cluster):
    message = "Operation could not be completed as it results in exceeding approved quota"
    cluster.machine_failures[machine_name(namespace, "quota", 0)] = message
    apply(http, namespace, inference_workspace(name="quota"))
    seen = wait_workspace(
        http, namespace, "quota",
        lambda ws: (condition(ws, "ResourceReady") or {}).get("reason") == "MachineFailed",
        "ResourceReady=False (MachineFailed)")
    cond = condition(seen, "ResourceReady")
    assert cond["status"] == "False" and message in cond["message"]
    summary = condition(seen, "WorkspaceReady")
    assert summary["status"] == "False" and message in summary["message"]


def test_invalid_workspace_gets_condition_and_event_and_others_still_served(
    http, namespace, operator, cluster
):
    bad = with_changes(inference_workspace(name="bad"),
                       {"inference.preset.name": "phi-3-medium-4k-instruct"})
    apply(http, namespace, bad)
    apply(http, namespace, inference_workspace(name="good"))
    cond = wait_condition(http, namespace, "bad", "WorkspaceReady", "False", "InvalidWorkspace")
    assert "needs 28 GiB of GPU memory in total" in cond["message"]
    wait_condition(http, namespace, "good", "WorkspaceReady", "True")
    assert our_machines(http, namespace, "bad") == []
    warnings = wait_events(http, namespace, "bad", {"InvalidWorkspace"}, "Warning")
    assert [e["reason"] for e in warnings] == ["InvalidWorkspace"]


def test_deletion_removes_machines_and_releases_finalizer(http, namespace, operator, cluster):
    apply(http, namespace, inference_workspace(name="gone"))
    wait_condition(http, namespace, "gone", "WorkspaceReady", "True")
    assert our_machines(http, namespace, "gone")
    assert http.delete(f"{WS_PATH.format(ns=namespace)}/gone").status_code in (200, 202)
    wait_for(lambda: http.get(f"{WS_PATH.format(ns=namespace)}/gone").status_code == 404,
             what="the Workspace to be gone")
    assert our_machines(http, namespace, "gone") == []


def test_restart_while_machines_pending_creates_no_duplicates(http, namespace, kube_api, cluster):
    cluster.provision_seconds = 1.5
    op = start_operator(kube_api, namespace)
    try:
        apply(http, namespace, with_changes(inference_workspace(name="twice"),
                                            {"resource.count": 2}))
        wait_for(lambda: len(our_machines(http, namespace, "twice")) == 2, what="2 machines")
    finally:
        op.stop()
    op = start_operator(kube_api, namespace)
    try:
        wait_condition(http, namespace, "twice", "WorkspaceReady", "True")
        names = sorted(m["metadata"]["name"] for m in our_machines(http, namespace, "twice"))
        assert names == sorted(machine_name(namespace, "twice", i) for i in range(2))
    finally:
        op.stop()
        cluster.provision_seconds = 0.0


def test_deleted_service_is_put_back(http, namespace, operator, cluster):
    apply(http, namespace, inference_workspace(name="heal"))
    wait_condition(http, namespace, "heal", "WorkspaceReady", "True")
    assert http.delete(f"/api/v1/namespaces/{namespace}/services/heal").status_code == 200
    wait_for(lambda: http.get(f"/api/v1/namespaces/{namespace}/services/heal").status_code == 200,
             what="the Service to come back")


def make_node(http, name, labels, gpus="1"):
    capacity = {"nvidia.com/gpu": gpus, "cpu": "8"}
    response = http.post("/api/v1/nodes", json={
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "status": {"capacity": capacity, "allocatable": capacity,
                   "conditions": [{"type": "Ready", "status": "True"}]},
    })
    assert response.status_code == 201, response.text


def test_preferred_nodes_are_used_without_new_machines(http, namespace, operator, cluster):
    node = f"byo-{namespace}"
    make_node(http, node, {"apps": f"byo-{namespace}",
                           "node.kubernetes.io/instance-type": "Standard_NC24ads_A100_v4"})
    ws = with_changes(inference_workspace(name="byo"), {
        "resource.labelSelector.matchLabels": {"apps": f"byo-{namespace}"},
        "resource.preferredNodes": [node],
    })
    apply(http, namespace, ws)
    wait_condition(http, namespace, "byo", "WorkspaceReady", "True")
    final = workspace(http, namespace, "byo")
    assert final["status"]["workerNodes"] == [node]
    assert condition(final, "MachineReady")["reason"] == "NoMachinesNeeded"
    assert our_machines(http, namespace, "byo") == []
    deploy = http.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/byo").json()
    terms = deploy["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]} in terms[0][
        "matchExpressions"]


def test_multi_node_preset_gets_statefulset_and_headless_service(http, namespace, operator, cluster):
    ws = with_changes(inference_workspace(name="falcon"), {
        "inference.preset.name": "falcon-40b-instruct",
        "resource.instanceType": "Standard_NC24ads_A100_v4",
        "resource.count": 2,
        "resource.labelSelector.matchLabels": {"apps": "falcon"},
    })
    apply(http, namespace, ws)
    wait_condition(http, namespace, "falcon", "WorkspaceReady", "True")
    sts = http.get(f"/apis/apps/v1/namespaces/{namespace}/statefulsets/falcon").json()
    assert sts["spec"]["replicas"] == 2
    assert sts["spec"]["serviceName"] == "falcon-headless"
    headless = http.get(f"/api/v1/namespaces/{namespace}/services/falcon-headless").json()
    assert headless["spec"]["clusterIP"] == "None"
    assert http.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/falcon").status_code == 404
    assert len(our_machines(http, namespace, "falcon")) == 2


def test_adapters_add_init_containers_and_update_rolls_the_template(http, namespace, operator, cluster):
    adapter = {"source": {"name": "a1", "image": "myregistry.azurecr.io/a1:1"}, "strength": "0.5"}
    ws = with_changes(inference_workspace(name="lora"), {"inference.adapters": [adapter]})
    apply(http, namespace, ws)
    wait_condition(http, namespace, "lora", "WorkspaceReady", "True")
    path = f"/apis/apps/v1/namespaces/{namespace}/deployments/lora"
    first = http.get(path).json()["spec"]["template"]
    (init,) = first["spec"]["initContainers"]
    assert "--image=myregistry.azurecr.io/a1:1" in init["args"]
    assert "--adapter-strengths=a1=0.5" in first["spec"]["containers"][0]["args"]
    live = workspace(http, namespace, "lora")
    patch = {"inference": {"adapters": [dict(adapter, strength="1.0")]}}
    response = http.patch(f"{WS_PATH.format(ns=namespace)}/lora", json=patch,
                          headers={"Content-Type": "application/merge-patch+json"})
    assert response.status_code == 200
    assert response.json()["metadata"]["generation"] == live["metadata"]["generation"] + 1

    def rolled():
        template = http.get(path).json()["spec"]["template"]
        return "--adapter-strengths=a1=1.0" in template["spec"]["containers"][0]["args"] and (
            template["metadata"]["annotations"]["kaito.sh/spec-hash"]
            != first["metadata"]["annotations"]["kaito.sh/spec-hash"]
        )

    wait_for(rolled, what="the new strength in the pod template")
    # WorkspaceReady is still True from the old generation: wait for the new one's.
    wait_condition(http, namespace, "lora", "WorkspaceReady", "True",
                   generation=live["metadata"]["generation"] + 1)


def test_custom_template_runs_with_our_placement(http, namespace, operator, cluster):
    template = {
        "metadata": {"labels": {"app": "custom"}},
        "spec": {"containers": [{"name": "server", "image": "vllm/vllm-openai:v0.6.3",
                                 "ports": [{"containerPort": 8000}]}]},
    }
    ws = with_changes(inference_workspace(name="custom"),
                      {"inference.preset": DELETE, "inference.template": template})
    apply(http, namespace, ws)
    wait_condition(http, namespace, "custom", "WorkspaceReady", "True")
    deploy = http.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/custom").json()
    spec = deploy["spec"]["template"]["spec"]
    assert spec["containers"][0]["image"] == "vllm/vllm-openai:v0.6.3"
    assert {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"} in spec[
        "tolerations"]
    service = http.get(f"/api/v1/namespaces/{namespace}/services/custom").json()
    assert service["spec"]["ports"][0]["targetPort"] == 8000
    labels = deploy["spec"]["template"]["metadata"]["labels"]
    assert labels == {"app": "custom", "kaito.sh/workspace": "custom"}


def test_validating_webhook_denies_with_the_validation_message(kube_api, namespace):
    import socket

    import kopf

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    runtime = WorkspaceRuntime(CATALOG, Settings())
    webhook = kopf.WebhookServer(addr="127.0.0.1", port=port, insecure=True)
    bad = with_changes(inference_workspace(name="big"),
                       {"inference.preset.name": "phi-3-medium-4k-instruct"})

    def review(obj, old=None, operation="CREATE"):
        return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
            "uid": "u-1", "operation": operation, "object": obj, "oldObject": old,
            "kind": {"group": "kaito.sh", "version": "v1alpha1", "kind": "Workspace"},
            "resource": {"group": "kaito.sh", "version": "v1alpha1", "resource": "workspaces"},
            "userInfo": {"username": "test"}, "namespace": namespace, "name": obj["metadata"]["name"],
        }}

    with OperatorThread(runtime, kube_api.url, [namespace], webhook=webhook):
        url = f"http://127.0.0.1:{port}/validate-workspace"

        def post(body):
            try:
                return httpx.post(url, json=body, timeout=5).json()["response"]
            except httpx.TransportError:
                return None

        denied = wait_for(lambda: post(review(bad)), what="the webhook to answer")
        assert denied["allowed"] is False
        assert denied["status"]["code"] == 400
        assert "needs 28 GiB of GPU memory in total" in denied["status"]["message"]
        assert post(review(inference_workspace(name="ok")))["allowed"] is True
        good = inference_workspace(name="ok")
        changed = with_changes(good, {"resource.instanceType": "Standard_NC24ads_A100_v4"})
        update = post(review(changed, old=good, operation="UPDATE"))
        assert update["allowed"] is False and "immutable" in update["status"]["message"]
        root = with_changes(good, {"inference.preset": DELETE, "inference.template": {"spec": {
            "containers": [{"name": "s", "image": "r.io/s:1"}],
            "volumes": [{"name": "root", "hostPath": {"path": "/"}}]}}})
        refused = post(review(root))
        assert refused["allowed"] is False and "KAITO_POLICY_VOLUME_TYPES" in (
            refused["status"]["message"])
        broken_old = with_changes(good, {"resource.count": "1"})
        update = post(review(good, old=broken_old, operation="UPDATE"))
        assert update["allowed"] is False and "stored Workspace" in update["status"]["message"]
        leaving = with_changes(bad, {"metadata.deletionTimestamp": "2026-01-01T00:00:00Z"})
        assert post(review(leaving, old=bad, operation="UPDATE"))["allowed"] is True


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_kaito_operator_command_runs_with_kubeconfig_liveness_and_metrics(
    http, kube_api, namespace, tmp_path
):
    import os
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "emu",
        "clusters": [{"name": "emu", "cluster": {"server": kube_api.url}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "emu", "context": {"cluster": "emu", "user": "u"}}],
    }))
    live, metrics = free_port(), free_port()
    command = Path(sys.executable).parent / "kaito-operator"
    env = dict(os.environ, KUBECONFIG=str(kubeconfig), KAITO_REQUEUE_SECONDS="0.5")
    proc = subprocess.Popen(
        [str(command), "-n", namespace, "--liveness", f"http://127.0.0.1:{live}/healthz",
         "--metrics-port", str(metrics)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        apply(http, namespace, inference_workspace(name="cmd"))
        wait_for(lambda: our_machines(http, namespace, "cmd"), what="a Machine")

        def get(url):
            try:
                return httpx.get(url, timeout=2)
            except httpx.TransportError:
                return None

        health = wait_for(lambda: get(f"http://127.0.0.1:{live}/healthz"), what="liveness")
        assert health.status_code == 200
        # The Machine is created during the first pass; the pass is counted when it ends.
        counted = 'kaito_workspace_reconciles_total{result="pending"}'

        def exported():
            response = get(f"http://127.0.0.1:{metrics}/metrics")
            return response is not None and counted in response.text

        wait_for(exported, what="the pass to be counted in the metrics")
    finally:
        proc.terminate()
        output = proc.communicate(timeout=30)[0]
    assert "Traceback" not in output, output


def test_hand_edited_deployment_is_put_back(http, namespace, operator, cluster):
    apply(http, namespace, inference_workspace(name="edit"))
    wait_condition(http, namespace, "edit", "WorkspaceReady", "True")
    path = f"/apis/apps/v1/namespaces/{namespace}/deployments/edit"
    original = http.get(path).json()["spec"]["template"]["spec"]["containers"][0]["image"]
    response = http.patch(path, json={"spec": {"replicas": 3, "template": {"spec": {
        "containers": [{"name": "inference", "image": "someone/else:latest"}]}}}},
        headers={"Content-Type": "application/strategic-merge-patch+json"})
    assert response.status_code == 200, response.text

    def restored():
        spec = http.get(path).json()["spec"]
        return spec["replicas"] == 1 and spec["template"]["spec"]["containers"][0]["image"] == original

    wait_for(restored, what="the Deployment to be put back")


def test_deletion_waits_for_machines_with_finalizers(http, namespace, operator, cluster):
    apply(http, namespace, inference_workspace(name="slow"))
    wait_condition(http, namespace, "slow", "WorkspaceReady", "True")
    (machine,) = our_machines(http, namespace, "slow")
    machine_path = f"{MACHINES}/{machine['metadata']['name']}"
    merge = {"Content-Type": "application/merge-patch+json"}
    http.patch(machine_path, json={"metadata": {"finalizers": ["karpenter.sh/termination"]}},
               headers=merge).raise_for_status()
    http.delete(f"{WS_PATH.format(ns=namespace)}/slow").raise_for_status()
    wait_for(lambda: http.get(machine_path).json()["metadata"].get("deletionTimestamp"),
             what="the Machine to be deleted by the finalizer")

    def looked_twice():
        # kopf records each run of the deletion handler that asked to wait (its progress
        # annotation); the second one saw the Machine still there, deleted but not gone.
        ws = workspace(http, namespace, "slow")
        for key, value in (ws.get("metadata", {}).get("annotations") or {}).items():
            if key.startswith("kaito.sh/") and key.endswith("deleted") and value.startswith("{"):
                if json.loads(value).get("retries", 0) >= 2:
                    return ws
        return None

    still = wait_for(looked_twice, what="the deletion handler to look again")
    assert still["metadata"].get("deletionTimestamp") and still["metadata"]["finalizers"]
    http.patch(machine_path, json={"metadata": {"finalizers": None}}, headers=merge)
    wait_for(lambda: http.get(f"{WS_PATH.format(ns=namespace)}/slow").status_code == 404,
             what="the Workspace to go once its Machine is gone")
