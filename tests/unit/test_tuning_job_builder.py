"""Pure builders of tuning Workspaces: the Job, its pod, the default config, job status."""

from __future__ import annotations

import pytest
import yaml

from kaito_operator.api.workspace import Workspace
from kaito_operator.settings import Settings
from kaito_operator.workspace import status as st
from kaito_operator.workspace.nodes import NodeChoice
from kaito_operator.workspace.tuning import desired_tuning
from tests.factories import tuning_workspace, with_changes

SETTINGS = Settings()


def ws_of(changes=None, **kw) -> Workspace:
    obj = with_changes(tuning_workspace(**kw), changes or {})
    obj["metadata"]["uid"] = "uid-1"
    return Workspace.model_validate(obj)


def build(catalog, changes=None, settings=SETTINGS, nodes=("node-a",), **kw):
    ws = ws_of(changes, **kw)
    return desired_tuning(ws, ws.tuning, catalog, settings, list(nodes))


def test_job_shape(catalog):
    config, job = build(catalog)
    meta = job["metadata"]
    assert (job["apiVersion"], job["kind"], meta["name"]) == ("batch/v1", "Job", "workspace-tuning")
    assert meta["labels"] == {"kaito.sh/workspace": "workspace-tuning"}
    assert meta["ownerReferences"][0] | {} == {
        "apiVersion": "kaito.sh/v1alpha1", "kind": "Workspace", "name": "workspace-tuning",
        "uid": "uid-1", "controller": True, "blockOwnerDeletion": True}
    assert job["spec"]["backoffLimit"] == 0
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (tuner,) = pod["containers"]
    assert tuner["image"] == "mcr.microsoft.com/aks/kaito/kaito-phi-3-mini-4k-instruct:0.1.0"
    assert tuner["command"] == ["python", "-m", "tuning_job"]
    assert tuner["args"] == [
        "--config=/mnt/config/training_config.yaml", "--method=qlora", "--data-dir=/mnt/data",
        "--output-dir=/mnt/results", "--model-dir=/workspace/weights",
        "--push=myregistry.azurecr.io/adapters/a:0.1",
        "--docker-config=/mnt/push-secret/.dockerconfigjson"]
    # Standard_NC24ads_A100_v4: 24 vCPUs, 220 GiB; disk = data 20 + results 10 + cache 1 +
    # /tmp 1 + logs 1
    assert tuner["resources"] == {
        "requests": {"cpu": "17", "memory": "163Gi", "ephemeral-storage": "1Gi",
                     "nvidia.com/gpu": "1"},
        "limits": {"memory": "185Gi", "ephemeral-storage": "33Gi", "nvidia.com/gpu": "1"}}
    env = {e["name"]: e.get("value") for e in tuner["env"]}
    assert (env["HF_HOME"], env["HOME"]) == ("/mnt/hf-cache", "/tmp")
    assert tuner["terminationMessagePath"] == "/dev/termination-log"
    assert {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"} in pod["tolerations"]
    exprs = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"][0]["matchExpressions"]
    assert {"key": "apps", "operator": "In", "values": ["tuning"]} in exprs
    assert {"key": "kubernetes.io/hostname", "operator": "In", "values": ["node-a"]} in exprs
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["config"] == {"name": "config", "configMap": {"name": "workspace-tuning-tuning-config"}}
    assert volumes["push-secret"]["secret"]["secretName"] == "push"
    assert volumes["data"] == {"name": "data", "emptyDir": {"sizeLimit": "20Gi"}}
    assert volumes["results"] == {"name": "results", "emptyDir": {"sizeLimit": "10Gi"}}
    assert volumes["hf-cache"] == {"name": "hf-cache", "emptyDir": {"sizeLimit": "1Gi"}}
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "16Gi"}
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert config["metadata"]["name"] == "workspace-tuning-tuning-config"
    doc = yaml.safe_load(config["data"]["training_config.yaml"])
    assert doc["training_config"]["QuantizationConfig"]["load_in_4bit"] is True


def test_gpus_follow_the_sku(catalog):
    _, job = build(catalog, instance_type="Standard_NC48ads_A100_v4")
    resources = job["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == resources["requests"]["nvidia.com/gpu"] == "2"
    assert (resources["requests"]["cpu"], resources["requests"]["memory"]) == ("35", "328Gi")


@pytest.mark.parametrize("source, init", [
    ({"urls": ["https://a.example/x.parquet", "https://b.example/y.jsonl"]},
     {"name": "data-download", "command": ["python", "-m", "tuning_job.download"],
      "args": ["--output=/mnt/data", "https://a.example/x.parquet", "https://b.example/y.jsonl"]}),
    ({"image": "myacr.io/dataset:1", "imagePullSecrets": ["pull"]},
     {"name": "data-copy", "image": "myacr.io/dataset:1",
      "command": ["sh", "-c", "cp -R /data/. /mnt/data/"]}),
])
def test_input_init_containers(catalog, source, init):
    _, job = build(catalog, {"tuning.input": source})
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["initContainers"]
    assert container | init == container
    assert container["volumeMounts"] == [{"name": "data", "mountPath": "/mnt/data"},
                                         {"name": "tmp", "mountPath": "/tmp"}]
    assert container["resources"] == {
        "requests": {"cpu": "250m", "memory": "256Mi", "ephemeral-storage": "64Mi"},
        "limits": {"memory": "2Gi", "ephemeral-storage": "512Mi"}}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    if "imagePullSecrets" in source:
        assert pod["imagePullSecrets"] == [{"name": "pull"}]


def test_input_and_output_volumes(catalog):
    changes = {"tuning.input": {"volumeSource": {"persistentVolumeClaim": {"claimName": "in"}}},
               "tuning.output": {"volumeSource": {"azureFile": {"shareName": "out"}}},
               "tuning.config": "mine"}
    config, job = build(catalog, changes)
    assert config is None
    pod = job["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"] == {"claimName": "in"}
    assert volumes["results"]["azureFile"] == {"shareName": "out"}
    assert volumes["config"]["configMap"]["name"] == "mine"
    assert "push-secret" not in volumes
    assert not any(a.startswith("--push") for a in pod["containers"][0]["args"])
    # a PVC and an Azure file share are not on the node's disk: data, results not counted
    assert pod["containers"][0]["resources"]["limits"]["ephemeral-storage"] == "3Gi"


def test_emptydir_volume_sources_get_a_limit_unless_they_set_one(catalog):
    changes = {"tuning.input": {"volumeSource": {"emptyDir": {"sizeLimit": "500Mi"}}},
               "tuning.output": {"volumeSource": {"emptyDir": {}}}}
    ws = ws_of(changes)
    _, job = desired_tuning(ws, ws.tuning, catalog, SETTINGS, [])
    pod = job["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["data"]["emptyDir"] == {"sizeLimit": "500Mi"}
    assert volumes["results"]["emptyDir"] == {"sizeLimit": "10Gi"}
    assert ws.tuning.output.volume_source == {"emptyDir": {}}  # the Workspace is unchanged
    # 500Mi + 10 + 1 + 1 GiB rounds up to 13 GiB, plus 1 GiB of logs
    assert pod["containers"][0]["resources"]["limits"]["ephemeral-storage"] == "14Gi"


def test_download_mode_lets_the_trainer_fetch_the_pinned_model(catalog):
    settings = Settings(weights="download")
    _, job = build(catalog, settings=settings)
    tuner = job["spec"]["template"]["spec"]["containers"][0]
    assert tuner["image"] == settings.base_image_ref
    preset = catalog.preset("phi-3-mini-4k-instruct")
    assert f"--model-dir={preset.hugging_face.repo}" in tuner["args"]
    assert f"--revision={preset.hugging_face.revision}" in tuner["args"]
    assert "--allow-download" in tuner["args"]
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert volumes["hf-cache"]["emptyDir"] == {"sizeLimit": f"{preset.resources.disk_gib}Gi"}


def test_hash_changes_with_the_spec_not_with_the_node(catalog):
    _, a = build(catalog, nodes=["n1"])
    _, b = build(catalog, nodes=["n2"])
    _, c = build(catalog, {"tuning.input.urls": ["https://example.com/other.csv"]})
    key = "kaito.sh/spec-hash"
    assert a["metadata"]["annotations"][key] == b["metadata"]["annotations"][key]
    assert a["metadata"]["annotations"][key] != c["metadata"]["annotations"][key]


READY_NODES = NodeChoice(selected=["n1"], missing=0)
FAILED_POD = {"metadata": {"name": "p"}, "status": {"containerStatuses": [{
    "name": "tuner", "state": {"terminated": {"exitCode": 1, "reason": "Error",
                                              "message": "tuning failed: bad data\n"}}}]}}


@pytest.mark.parametrize("job, pods, missing, started, ready", [
    (None, [], None, ("False", "JobNotCreated"), ("False", "JobNotCreated")),
    ({"status": {}}, [], None, ("False", "JobPending"), ("False", "JobPending")),
    ({"status": {"startTime": "t", "active": 1}}, [], None, ("True", "JobStarted"), ("False", "TuningJobRunning")),
    ({"status": {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}}, [], None,
     ("True", "JobStarted"), ("True", "TuningJobSucceeded")),
    ({"status": {"failed": 1, "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                              "message": "Job has reached the specified backoff limit"}]}},
     [FAILED_POD], None, ("True", "JobStarted"), ("False", "TuningJobFailed")),
    (None, [], "ConfigMap x not found", ("False", "ConfigMapNotFound"), ("False", "ConfigMapNotFound")),
])
def test_tuning_conditions(job, pods, missing, started, ready):
    obs = st.Observed(nodes=READY_NODES, job=job, pods=pods, config_missing=missing)
    conds = st.compute_conditions(ws_of(), obs)
    assert [c.type for c in conds] == ["MachineReady", "ResourceReady", "JobStarted", "WorkspaceReady"]
    assert (str(conds[2].status), conds[2].reason) == (str(started[0] == "True"), started[1])
    assert (str(conds[3].status), conds[3].reason) == (str(ready[0] == "True"), ready[1])


def test_failure_message_combines_job_and_pod():
    job = {"status": {"failed": 1, "conditions": [{"type": "Failed", "status": "True",
                                                   "message": "Job has reached the specified backoff limit"}]}}
    assert st.job_failure(job, [FAILED_POD]) == (
        "Job has reached the specified backoff limit: container tuner: tuning failed: bad data")
    oom = {"status": {"containerStatuses": [{"name": "tuner", "state": {"terminated": {
        "exitCode": 137, "reason": "OOMKilled"}}}]}}
    assert st.job_failure({"status": {"failed": 1}}, [oom]) == (
        "the tuning Job failed: container tuner: OOMKilled, exit code 137")
    assert st.job_failure({"status": {"active": 1}}, []) is None


def test_waiting_for_nodes_before_the_job():
    obs = st.Observed(nodes=NodeChoice(selected=[], missing=1), machines_wanted=1)
    conds = st.compute_conditions(ws_of(), obs)
    assert (conds[2].reason, conds[3].reason) == ("WaitingForNodes", "NodesNotReady")
