"""The real workspace controller with tuning Workspaces: ConfigMap, Job, conditions from the
Job's status, failure reasons, and a spec change that recreates the Job."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from kaito_operator.workspace.operator import OperatorThread
from kaito_sandbox.sim.cluster import JobOutcome, SimulatedCluster
from tests.component.test_workspace_controller import (
    apply,
    condition,
    gpus_of,
    start_operator,
    wait_condition,
    wait_for,
    workspace,
)
from tests.factories import tuning_workspace, with_changes

WS_PATH = "/apis/kaito.sh/v1alpha1/namespaces/{ns}/workspaces"
JOBS = "/apis/batch/v1/namespaces/{ns}/jobs"


@pytest.fixture
def cluster(kube_api) -> Iterator[SimulatedCluster]:
    with SimulatedCluster(kube_api.url, gpus_of=gpus_of) as sim:
        yield sim


@pytest.fixture
def operator(kube_api, namespace) -> Iterator[OperatorThread]:
    op = start_operator(kube_api, namespace)
    yield op
    op.stop()


def job(http: httpx.Client, ns: str, name: str) -> dict | None:
    response = http.get(f"{JOBS.format(ns=ns)}/{name}")
    return response.json() if response.status_code == 200 else None


def test_succeeded_job_makes_the_workspace_ready(http, namespace, operator, cluster):
    ws = apply(http, namespace, tuning_workspace(name="tune"))
    ready = wait_condition(http, namespace, "tune", "WorkspaceReady", "True")
    assert ready["reason"] == "TuningJobSucceeded"
    assert "myregistry.azurecr.io/adapters/a:0.1" in ready["message"]
    final = workspace(http, namespace, "tune")
    assert condition(final, "JobStarted")["status"] == "True"
    assert condition(final, "ResourceReady")["status"] == "True"
    assert condition(final, "InferenceReady") is None
    created = job(http, namespace, "tune")
    assert created["spec"]["backoffLimit"] == 0
    assert created["metadata"]["labels"] == {"kaito.sh/workspace": "tune"}
    assert created["metadata"]["ownerReferences"][0]["uid"] == ws["metadata"]["uid"]
    pod = created["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert init["args"] == ["--output=/mnt/data", "https://example.com/data/train.parquet"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert final["status"]["workerNodes"][0] in str(pod["affinity"])
    config = http.get(f"/api/v1/namespaces/{namespace}/configmaps/tune-tuning-config").json()
    assert "load_in_4bit: true" in config["data"]["training_config.yaml"]
    pods = http.get(f"/api/v1/namespaces/{namespace}/pods",
                    params={"labelSelector": "kaito.sh/workspace=tune"}).json()["items"]
    assert [p["status"]["phase"] for p in pods] == ["Succeeded"]


def test_failed_job_shows_the_trainer_reason(http, namespace, operator, cluster):
    message = "tuning failed: dataset is empty: train.parquet hold no rows"
    cluster.job_outcomes["broken"] = JobOutcome(succeeded=False, message=message)
    apply(http, namespace, tuning_workspace(name="broken"))
    cond = wait_condition(http, namespace, "broken", "WorkspaceReady", "False", "TuningJobFailed")
    assert cond["message"] == (f"Job has reached the specified backoff limit: "
                               f"container tuner: {message}")
    assert condition(workspace(http, namespace, "broken"), "JobStarted")["status"] == "True"

    def warned():
        events = http.get(f"/api/v1/namespaces/{namespace}/events").json()["items"]
        return any(e["reason"] == "TuningJobFailed" and e["type"] == "Warning" for e in events)

    wait_for(warned, what="a Warning Event")


def test_spec_change_recreates_the_job(http, namespace, operator, cluster):
    cluster.job_seconds = 60.0  # still running when the spec changes
    try:
        apply(http, namespace, tuning_workspace(name="redo"))
        wait_condition(http, namespace, "redo", "JobStarted", "True")
        first = job(http, namespace, "redo")
        patch = {"tuning": {"input": {"urls": ["https://example.com/data/v2.jsonl"]}}}
        response = http.patch(f"{WS_PATH.format(ns=namespace)}/redo", json=patch,
                              headers={"Content-Type": "application/merge-patch+json"})
        assert response.status_code == 200
        generation = response.json()["metadata"]["generation"]

        def recreated():
            live = job(http, namespace, "redo")
            return live if live and live["metadata"]["uid"] != first["metadata"]["uid"] else None

        live = wait_for(recreated, what="a new Job")
        init = live["spec"]["template"]["spec"]["initContainers"][0]
        assert init["args"][-1] == "https://example.com/data/v2.jsonl"
    finally:
        cluster.job_seconds = 0.0
    wait_condition(http, namespace, "redo", "WorkspaceReady", "True", generation=generation)


def test_named_config_must_exist(http, namespace, operator, cluster):
    ws = with_changes(tuning_workspace(name="mine"), {"tuning.config": "my-config",
                                                      "tuning.method": "lora"})
    apply(http, namespace, ws)
    cond = wait_condition(http, namespace, "mine", "JobStarted", "False", "ConfigMapNotFound")
    assert "my-config" in cond["message"]
    assert job(http, namespace, "mine") is None
    response = http.post(f"/api/v1/namespaces/{namespace}/configmaps", json={
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "my-config", "namespace": namespace},
        "data": {"training_config.yaml": "training_config:\n  LoraConfig: {r: 4}\n"}})
    assert response.status_code == 201
    wait_condition(http, namespace, "mine", "WorkspaceReady", "True")
    volumes = job(http, namespace, "mine")["spec"]["template"]["spec"]["volumes"]
    assert {"name": "config", "configMap": {"name": "my-config"}} in volumes
    missing = http.get(f"/api/v1/namespaces/{namespace}/configmaps/mine-tuning-config")
    assert missing.status_code == 404


@pytest.mark.parametrize("output", [{"volumeSource": {"persistentVolumeClaim": {"claimName": "out"}}}])
def test_volume_output_needs_no_push(http, namespace, operator, cluster, output):
    ws = with_changes(tuning_workspace(name="vol"), {"tuning.output": output,
                                                     "tuning.input": {"image": "myacr.io/data:1"}})
    apply(http, namespace, ws)
    ready = wait_condition(http, namespace, "vol", "WorkspaceReady", "True")
    assert "output volume" in ready["message"]
    pod = job(http, namespace, "vol")["spec"]["template"]["spec"]
    assert not any("--push" in a for a in pod["containers"][0]["args"])
    assert {"name": "results", "persistentVolumeClaim": {"claimName": "out"}} in pod["volumes"]
    assert pod["initContainers"][0]["image"] == "myacr.io/data:1"
