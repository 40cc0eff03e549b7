"""The charts' RBAC against what the operators really do.

The real workspace operator and gpu-provisioner run their main scenarios against the API
emulator, which logs every request with its RBAC verb (as an audit log would). Each request
the operators made (our clients' user agents `kaito-operator` and `kaito-gpu-provisioner`,
kopf's `kopf/<version>`) must be allowed by the rules the charts render, and every rule the
charts grant must be used by some request — least privilege, checked both ways. Requests of the test itself and of the simulated
cluster/AKS (other user agents) are not the operators'.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python as helm
import httpx
import pytest
import yaml

from kaito_operator.provisioner.handlers import FINALIZER
from kaito_operator.settings import Settings
from kaito_operator.workspace.operator import OperatorThread
from kaito_operator.workspace.runtime import WorkspaceRuntime
from kaito_sandbox.sim.aks import SimulatedAks
from kaito_sandbox.sim.arm import ArmSimulator, Fault
from kaito_sandbox.sim.cluster import SimulatedCluster
from kaito_sandbox.sim.kube_api import KubeApiEmulator, RequestRecord
from tests.component import provisioner_fixtures as fixtures
from tests.component import test_provisioner as prov
from tests.component import test_workspace_controller as wsc
from tests.factories import inference_workspace, tuning_workspace, with_changes

CHARTS = Path(__file__).resolve().parents[2] / "charts"
#: The node-object kinds by the mode that creates them: (kind, collection path).
NODE_OBJECTS = {
    "machine": ("Machine", "/apis/karpenter.sh/v1alpha5/machines"),
    "nodeclaim": ("NodeClaim", "/apis/karpenter.sh/v1/nodeclaims"),
}
OPERATOR_AGENTS = ("kaito-operator", "kaito-gpu-provisioner", "kopf/")


# --- RBAC rules as the authorizer evaluates them -----------------------------------------------


@dataclass(frozen=True)
class Grant:
    """One (apiGroup, resource[/subresource], verb) a rule gives, in a namespace or everywhere."""

    group: str
    resource: str
    verb: str
    namespace: str | None  # None: from a ClusterRole (all namespaces and cluster-scoped)
    names: tuple[str, ...] = ()  # resourceNames; empty: any


def grants(chart: str, values: dict[str, Any]) -> list[Grant]:
    out = helm.Chart.load(CHARTS / chart).render(values, name=chart, namespace=chart)
    docs = [d for path, text in out.items() if path.endswith(".yaml")
            for d in yaml.safe_load_all(text) if d]
    found = []
    for doc in docs:
        if doc["kind"] not in ("ClusterRole", "Role"):
            continue
        namespace = doc["metadata"].get("namespace") if doc["kind"] == "Role" else None
        for rule in doc["rules"]:
            assert "*" not in rule["verbs"] and "*" not in rule["resources"], rule
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        found.append(Grant(group, resource, verb, namespace,
                                           tuple(rule.get("resourceNames") or ())))
    return found


def resource_of(record: RequestRecord) -> str:
    return f"{record.resource}/{record.subresource}" if record.subresource else str(record.resource)


def allowing(rules: list[Grant], record: RequestRecord) -> list[Grant]:
    return [
        g for g in rules
        if g.group == (record.group or "") and g.resource == resource_of(record)
        and g.verb == record.verb
        and (g.namespace is None or g.namespace == record.namespace)
        # resourceNames never match create or a collection request (no name to check)
        and (not g.names or (record.name in g.names and record.verb != "create"))
    ]


def operator_requests(api: KubeApiEmulator) -> list[RequestRecord]:
    """API requests of the operators; discovery (non-resource URLs, open to every
    authenticated user through system:discovery) has no resource and is left out."""
    return [r for r in api.requests
            if r.user_agent.startswith(OPERATOR_AGENTS) and r.resource is not None]


def check(rules: list[Grant], requests: list[RequestRecord],
          implied: set[tuple[str, str, str]] = frozenset()) -> None:
    denied = sorted({(r.verb, r.group, resource_of(r), r.namespace) for r in requests
                     if not allowing(rules, r)}, key=str)
    assert not denied, f"the chart does not allow: {denied}"
    used = {(r.group or "", resource_of(r), r.verb) for r in requests} | set(implied)
    unused = sorted({(g.group, g.resource, g.verb) for g in rules} - used)
    assert not unused, f"the chart grants what the operator never uses: {unused}"


# --- the workspace operator --------------------------------------------------------------------


def leftover(mode: str, workspace: str, ns: str) -> tuple[str, dict[str, Any]]:
    """A node object of the kind the *other* mode creates, labelled with the Workspace: what
    a switch of `nodeProvisioning.mode` leaves behind. (collection path, body)"""
    other = "nodeclaim" if mode == "machine" else "machine"
    kind, path = NODE_OBJECTS[other]
    labels = {"kaito.sh/workspace": workspace, "kaito.sh/workspacenamespace": ns,
              "apps": "phi-3"}
    requirement = {"key": "node.kubernetes.io/instance-type", "operator": "In",
                   "values": ["Standard_NC12s_v3"]}
    spec: dict[str, Any] = {"requirements": [requirement]}
    if kind == "NodeClaim":
        spec["nodeClassRef"] = {"group": "karpenter.azure.com", "kind": "AKSNodeClass",
                                "name": "default"}
    version = path.split("/")[3]
    return path, {"apiVersion": f"karpenter.sh/{version}", "kind": kind,
                  "metadata": {"name": f"left{kind.lower()}", "labels": labels}, "spec": spec}


@pytest.fixture(scope="module", params=sorted(NODE_OBJECTS))
def workspace_run(request: pytest.FixtureRequest) -> Iterator[tuple[
        KubeApiEmulator, str, dict[str, Any]]]:
    """Quick start to ready and deletion (with a node object of the other kind left from an
    earlier mode, deleted with it), a multi-node preset, a preferred node without a GPU yet
    (labelled for the device plugin), an invalid Workspace, a repaired Service, and kopf
    managing the webhook configuration: one operator, one namespace, one request log, in the
    node-provisioning mode of the param (machine, nodeclaim)."""
    ns, mode = "rbac-ws", request.param
    with KubeApiEmulator() as api, httpx.Client(base_url=api.url, timeout=10.0) as http, \
            SimulatedCluster(api.url, gpus_of=wsc.gpus_of):
        facts: dict[str, Any] = {"mode": mode}
        runtime = WorkspaceRuntime(wsc.CATALOG, Settings(requeue_seconds=0.5,
                                                         node_provisioning=mode))
        op = OperatorThread(runtime, api.url, [ns]).start(timeout=60)
        try:
            wsc.apply(http, ns, inference_workspace(name="phi"))
            wsc.apply(http, ns, with_changes(inference_workspace(name="falcon"), {
                "inference.preset.name": "falcon-40b-instruct",
                "resource.instanceType": "Standard_NC24ads_A100_v4",
                "resource.count": 2,
                "resource.labelSelector.matchLabels": {"apps": "falcon"},
            }))
            wsc.make_node(http, "byo-1", {"apps": "byo",
                                          "node.kubernetes.io/instance-type": "Standard_NC6s_v3"})
            # No device plugin there yet: no nvidia.com/gpu in the capacity.
            no_gpu = {"status": {"capacity": {"nvidia.com/gpu": None}}}
            assert http.patch("/api/v1/nodes/byo-1/status", json=no_gpu, headers={
                "Content-Type": "application/merge-patch+json"}).status_code == 200
            wsc.apply(http, ns, with_changes(inference_workspace(name="byo"), {
                "resource.labelSelector.matchLabels": {"apps": "byo"},
                "resource.preferredNodes": ["byo-1"],
            }))
            wsc.apply(http, ns, with_changes(inference_workspace(name="bad"),
                                             {"inference.preset.name": "phi-3-medium-4k-instruct"}))
            # Tuning: the default config is created, the Job runs; a spec change recreates it;
            # a named config is read; a changed default template is patched back.
            wsc.apply(http, ns, tuning_workspace(name="tune"))
            wsc.apply(http, ns, with_changes(tuning_workspace(name="mine"),
                                             {"tuning.config": "my-config"}))
            for name in ("phi", "falcon", "tune"):
                wsc.wait_condition(http, ns, name, "WorkspaceReady", "True", timeout=60)
            wsc.wait_condition(http, ns, "mine", "JobStarted", "False", "ConfigMapNotFound",
                               timeout=60)
            merge = {"Content-Type": "application/merge-patch+json"}
            job_path = f"/apis/batch/v1/namespaces/{ns}/jobs/tune"
            first = http.get(job_path).json()["metadata"]["uid"]
            assert http.patch(f"{wsc.WS_PATH.format(ns=ns)}/tune", headers=merge, json={
                "tuning": {"input": {"urls": ["https://example.com/v2.jsonl"]}}}).status_code == 200
            wsc.wait_for(lambda: wsc.uid_other_than(http, job_path, first),
                         timeout=60, what="the tuning Job to be recreated")
            config_path = f"/api/v1/namespaces/{ns}/configmaps/tune-tuning-config"
            assert http.patch(config_path, headers=merge,
                              json={"data": {"training_config.yaml": "edited"}}).status_code == 200
            wsc.wait_for(lambda: http.get(config_path).json()["data"]["training_config.yaml"]
                         != "edited", timeout=60,
                         what="the default tuning config to be put back")
            wsc.wait_condition(http, ns, "bad", "WorkspaceReady", "False", "InvalidWorkspace")
            wsc.wait_for(lambda: http.get("/api/v1/nodes/byo-1").json()["metadata"]["labels"]
                         .get("accelerator") == "nvidia", what="the node to be labelled")
            # Hand edits are repaired by patches (Deployment, StatefulSet, Service).
            merge = {"Content-Type": "application/merge-patch+json"}
            for path, patch, restored in [
                (f"/apis/apps/v1/namespaces/{ns}/deployments/phi", {"spec": {"replicas": 3}},
                 lambda obj: obj["spec"]["replicas"] == 1),
                (f"/apis/apps/v1/namespaces/{ns}/statefulsets/falcon", {"spec": {"replicas": 5}},
                 lambda obj: obj["spec"]["replicas"] == 2),
                (f"/api/v1/namespaces/{ns}/services/phi",
                 {"spec": {"ports": [{"name": "http", "port": 81, "targetPort": 5000}]}},
                 lambda obj: obj["spec"]["ports"][0]["port"] == 80),
            ]:
                assert http.patch(path, json=patch, headers=merge).status_code == 200
                wsc.wait_for(lambda p=path, r=restored: r(http.get(p).json()),
                             what=f"{path} to be repaired")
            http.delete(f"/api/v1/namespaces/{ns}/services/phi")
            wsc.wait_for(lambda: http.get(f"/api/v1/namespaces/{ns}/services/phi")
                         .status_code == 200, what="the Service to be put back")
            # A node object of the other kind, left from an earlier mode: it is the
            # Workspace's (the condition names it), and goes with it.
            path, body = leftover(mode, "phi", ns)
            assert http.post(path, json=body).status_code == 201
            left = body["metadata"]["name"]
            condition = "MachineReady" if mode == "machine" else "NodeClaimReady"
            wsc.wait_for(lambda: left in (wsc.condition(wsc.workspace(http, ns, "phi"),
                                                        condition) or {}).get("message", ""),
                         timeout=60, what=f"{condition} to count the left-over {left}")
            http.delete(f"{wsc.WS_PATH.format(ns=ns)}/phi")
            wsc.wait_for(lambda: http.get(f"{wsc.WS_PATH.format(ns=ns)}/phi").status_code == 404,
                         timeout=60, what="the Workspace to go")
            assert http.get(f"{path}/{left}").status_code == 404
            children = http.get(f"/apis/apps/v1/namespaces/{ns}/statefulsets").json()["items"]
            facts["blockOwnerDeletion"] = any(
                ref.get("blockOwnerDeletion") and ref["kind"] == "Workspace"
                for child in children for ref in child["metadata"].get("ownerReferences", []))
        finally:
            op.stop()
        facts["webhook"] = run_managed_webhook(api, http, ns)
        yield api, ns, facts


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_managed_webhook(api: KubeApiEmulator, http: httpx.Client, ns: str) -> bool:
    """The operator as `--webhook-config NAME` runs it (chart value webhook.tls=operator): kopf
    creates and patches the ValidatingWebhookConfiguration. The certificate is handed in: kopf's
    own generation needs certbuilder, which the operator extra does not install."""
    import asyncio
    import datetime
    import tempfile

    import kopf
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from kaito_operator.settings import Settings
    from kaito_operator.workspace.handlers import build_registry
    from kaito_operator.workspace.runtime import WorkspaceRuntime

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
            .sign(key, hashes.SHA256()))
    tmp = Path(tempfile.mkdtemp())
    (tmp / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / "tls.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                    serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))
    config = "kaito-workspace-kaito-workspace"  # the chart's name for release kaito-workspace
    runtime = WorkspaceRuntime(wsc.CATALOG, Settings())
    webhook = kopf.WebhookServer(addr="127.0.0.1", port=free_port(), host="localhost",
                                 certfile=str(tmp / "tls.crt"), pkeyfile=str(tmp / "tls.key"))
    stop, ready = threading.Event(), threading.Event()

    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=api.url, insecure=True)

    def run() -> None:
        asyncio.run(kopf.operator(
            registry=build_registry(runtime, login=login, webhook=webhook, webhook_config=config),
            standalone=True, clusterwide=False, namespaces=[ns],
            stop_flag=stop, ready_flag=ready))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    path = f"/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/{config}"
    try:
        assert ready.wait(60), "the operator did not start"

        def written() -> list[dict[str, Any]] | None:
            response = http.get(path)  # one read: kopf creates it, then fills in the webhooks
            return (response.json().get("webhooks") or None) if response.status_code == 200 \
                else None

        managed = wsc.wait_for(written, timeout=60, what="kopf to write the webhook configuration")
        return bool(managed[0]["clientConfig"].get("caBundle"))
    finally:
        stop.set()
        thread.join(30)


WORKSPACE_CASES = {
    "cluster-wide": {},
    "namespaced": {"watchNamespaces": ["rbac-ws"]},
}


def mode_values(facts: dict[str, Any]) -> dict[str, Any]:
    return {"nodeProvisioning": {"mode": facts["mode"]}}


@pytest.mark.parametrize("case", sorted(WORKSPACE_CASES))
def test_workspace_chart_allows_every_request_and_nothing_else(workspace_run, case):
    api, ns, facts = workspace_run
    values = {"webhook": {"tls": "operator"}} | WORKSPACE_CASES[case] | mode_values(facts)
    requests = operator_requests(api)
    assert {r.user_agent.split("/")[0] for r in requests} == {"kaito-operator", "kopf"}
    assert facts["webhook"], "kopf did not put a CA bundle into the webhook configuration"
    # Not a request but an admission check (OwnerReferencesPermissionEnforcement): creating a
    # child whose ownerReference blocks the owner's deletion needs update on its finalizers.
    assert facts["blockOwnerDeletion"]
    implied = {("kaito.sh", "workspaces/finalizers", "update")}
    check(grants("kaito-workspace", values), requests, implied)


def test_chart_managed_webhook_needs_no_webhook_rights(workspace_run):
    api, _, facts = workspace_run
    rules = grants("kaito-workspace", mode_values(facts))  # tls: helm: the chart's configuration
    assert not [g for g in rules if g.resource == "validatingwebhookconfigurations"]
    requests = [r for r in operator_requests(api) if r.group != "admissionregistration.k8s.io"]
    check(rules, requests, {("kaito.sh", "workspaces/finalizers", "update")})


def test_namespaced_install_grants_nothing_outside_its_namespaces(workspace_run):
    _, _, facts = workspace_run
    rules = grants("kaito-workspace", {"watchNamespaces": ["rbac-ws"]} | mode_values(facts))
    cluster = {(g.group, g.resource) for g in rules if g.namespace is None}
    assert cluster == {("karpenter.sh", "machines"), ("karpenter.sh", "nodeclaims"),
                       ("", "nodes")}
    api, _, _ = workspace_run
    outside = RequestRecord(method="GET", path="", query={}, verb="list", group="apps",
                            resource="deployments", namespace="elsewhere")
    assert not allowing(rules, outside)


def test_operator_creates_only_its_modes_kind(workspace_run):
    """The run created node objects of the mode's kind only (the left-over was the test's)."""
    api, _, facts = workspace_run
    kind = NODE_OBJECTS[facts["mode"]][0]
    created = {r.resource for r in operator_requests(api)
               if r.verb == "create" and r.group == "karpenter.sh"}
    assert created == {kind.lower() + "s"}


# --- the gpu-provisioner -----------------------------------------------------------------------


#: Per nodeKind: the collection it provisions, its launch condition, how the test creates one,
#: and the other kind (collection, body builder) that the provisioner only finalizes.
KINDS = {
    "machine": (fixtures.MACHINES, "MachineLaunched", fixtures.machine_body,
                fixtures.NODECLAIMS, fixtures.nodeclaim_body),
    "nodeclaim": (fixtures.NODECLAIMS, "Launched", fixtures.nodeclaim_body,
                  fixtures.MACHINES, fixtures.machine_body),
}


@pytest.fixture(scope="module", params=sorted(KINDS))
def provisioner_run(request: pytest.FixtureRequest) -> Iterator[tuple[KubeApiEmulator, str]]:
    """A Machine or NodeClaim (nodeKind, the param) to Ready (labels copied onto the Node by
    the provisioner), a permanent cloud failure (Warning Event), a Workspace's object of the
    other kind (left from an earlier mode: finalized only), deletion of all three, and a Node
    AKS left behind after its pool went."""
    node_kind = request.param
    path, launched, body, other_path, other_body = KINDS[node_kind]

    def get(collection: str, name: str) -> dict[str, Any] | None:
        return fixtures.get_object(http, collection, name)

    with KubeApiEmulator() as api, httpx.Client(base_url=api.url, timeout=10.0) as http, \
            ArmSimulator(lro_polls=2, token="test-token", max_hang_s=2.0) as arm:
        started = prov.Provisioners(api, arm)
        try:
            with SimulatedAks(api.url, arm, prov.gpus_of, apply_pool_labels=False):
                started.start(node_kind=node_kind)
                good, bad, old = prov.new_name(), prov.new_name(), prov.new_name()
                arm.inject("put", Fault.quota(times=None), pool=bad)
                for name in (good, bad):
                    assert http.post(path, json=body(name)).status_code == 201
                assert http.post(other_path, json=other_body(old)).status_code == 201
                prov.wait_condition(http, good, "Ready", "True", path=path)
                prov.wait_condition(http, bad, launched, "False", path=path)
                prov.wait_for(lambda: FINALIZER in (get(other_path, old) or {}).get(
                    "metadata", {}).get("finalizers", []),
                    what="the other kind's object to get the provisioner's finalizer")
                node = (get(path, good) or {})["status"]["nodeName"]
            # AKS is gone (stopped): the pool is deleted but its Node stays behind.
            for collection, name in ((path, good), (path, bad), (other_path, old)):
                assert http.delete(f"{collection}/{name}").status_code in (200, 202)
            for collection, name in ((path, good), (path, bad), (other_path, old)):
                prov.wait_for(lambda c=collection, n=name: get(c, n) is None,
                              what=f"{name} to go")
            prov.wait_for(lambda: http.get(f"{prov.NODES}/{node}").status_code == 404,
                          what="the left-behind Node to be deleted")
        finally:
            started.stop_all()
        yield api, node_kind


def test_provisioner_chart_allows_every_request_and_nothing_else(provisioner_run):
    api, node_kind = provisioner_run
    requests = operator_requests(api)
    assert {r.user_agent.split("/")[0] for r in requests} == {"kaito-gpu-provisioner", "kopf"}
    events = {r.namespace for r in requests if r.resource == "events"}
    assert events == {"default"}
    status = {resource_of(r) for r in requests if r.subresource == "status"}
    assert status == {f"{node_kind}s/status"}, "only nodeKind's status is written"
    check(grants("gpu-provisioner", {"nodeKind": node_kind}), requests)
