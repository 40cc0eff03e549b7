"""The controller and the processes in its pods agree: every flag the controller passes is
one the inference server and the adapter fetcher accept."""

from __future__ import annotations

import json

import pytest

from inference_server import fetch_adapter
from inference_server.settings import parse_args
from kaito_operator.api.workspace import Workspace
from kaito_operator.settings import Settings
from kaito_operator.workspace.workload import preset_template
from tests.factories import inference_workspace, with_changes

ADAPTERS = [
    {"source": {"name": "a1", "image": "r.io/a1:1", "imagePullSecrets": ["s1"]}, "strength": "0.3"},
    {"source": {"name": "a2", "image": "r.io/a2:1"}},
]


@pytest.mark.parametrize("weights", ["image", "download"])
@pytest.mark.parametrize("preset", ["phi-3-mini-4k-instruct", "falcon-7b-instruct", "llama-3.1-8b-instruct"])
def test_inference_server_accepts_the_controller_flags(catalog, weights, preset):
    ws = Workspace.model_validate(with_changes(
        inference_workspace(preset=preset, instance_type="Standard_NC24ads_A100_v4"),
        {"inference.adapters": ADAPTERS}))
    spec = preset_template(ws, catalog.preset(preset), None, Settings(weights=weights), [])["spec"]
    container = spec["containers"][0]
    assert container["command"] == ["python", "-m", "inference_server"]
    settings = parse_args(container["args"])
    assert settings.served_model_name == preset
    assert settings.port == 5000
    assert settings.adapter_strengths == {"a1": 0.3, "a2": 1.0}
    for init in spec["initContainers"]:
        assert init["command"] == ["python", "-m", "inference_server.fetch_adapter"]
        parsed = fetch_adapter.build_parser().parse_args(init["args"])
        assert parsed.output.startswith("/mnt/adapter/")
        assert parsed.image in {"r.io/a1:1", "r.io/a2:1"}


def test_fetcher_reads_the_pull_secrets_where_the_controller_mounts_them(catalog, tmp_path):
    adapters = [{"source": {"name": "a1", "image": "r.io/a1:1",
                            "imagePullSecrets": ["acr.pull", "second"]}}]
    ws = Workspace.model_validate(with_changes(inference_workspace(),
                                               {"inference.adapters": adapters}))
    spec = preset_template(ws, catalog.preset("phi-3-mini-4k-instruct"), None, Settings(),
                           [])["spec"]
    (init,) = spec["initContainers"]
    secrets = {v["name"]: v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v}
    hosts = {"acr.pull": "one.example", "second": "two.example"}
    for mount in init["volumeMounts"]:
        if mount["name"] in secrets:  # what the kubelet does: the Secret's keys as files
            folder = tmp_path / mount["mountPath"].lstrip("/")
            folder.mkdir(parents=True)
            auth = {"auths": {hosts[secrets[mount["name"]]]: {"username": "u", "password": "p"}}}
            (folder / ".dockerconfigjson").write_text(json.dumps(auth))
    parsed = fetch_adapter.build_parser().parse_args(init["args"])
    found = fetch_adapter.load_auths(str(tmp_path / parsed.docker_config_dir.lstrip("/")))
    assert found == {"one.example": ("u", "p"), "two.example": ("u", "p")}
