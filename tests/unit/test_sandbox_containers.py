"""The sandbox runs the operator's restricted pods: every container path they write or read is
mapped to a folder of the pod on this disk, including folders that exist only as the parent of
mounted Secrets."""

from __future__ import annotations

import json
from pathlib import Path

from inference_server import fetch_adapter
from kaito_operator.api.workspace import Workspace
from kaito_operator.settings import Settings
from kaito_operator.workspace.tuning import desired_tuning
from kaito_operator.workspace.workload import preset_template
from kaito_sandbox.containers import local_command
from tests.factories import inference_workspace, tuning_workspace, with_changes

ADAPTERS = [{"source": {"name": "a1", "image": "r.io/a1:1",
                        "imagePullSecrets": ["acr.pull", "other"]}}]


def _volumes(spec, root: Path) -> dict[str, Path]:
    out = {}
    for volume in spec["volumes"]:
        out[volume["name"]] = root / "volumes" / volume["name"]
        out[volume["name"]].mkdir(parents=True)
    return out


def _materialize(command) -> None:
    for link, target in command.links.items():  # what the kubelet does before starting
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(target, target_is_directory=True)


def test_adapter_fetcher_paths_and_pull_secrets_map_to_the_pod_folder(catalog, tmp_path):
    ws = Workspace.model_validate(with_changes(inference_workspace(),
                                               {"inference.adapters": ADAPTERS}))
    spec = preset_template(ws, catalog.preset("phi-3-mini-4k-instruct"), None, Settings(),
                           [])["spec"]
    volumes = _volumes(spec, tmp_path)
    (init,) = spec["initContainers"]
    env = {e["name"]: e["value"] for e in init["env"]}
    command = local_command(init, tmp_path, volumes, {}, None, env)
    _materialize(command)
    args = fetch_adapter.build_parser().parse_args(command.argv[3:])
    assert args.output == str(volumes["adapters"] / "a1")
    assert command.env["HOME"] == str(volumes["tmp"])
    secrets = {v["secret"]["secretName"]: volumes[v["name"]] for v in spec["volumes"]
               if "secret" in v}
    for name, folder in secrets.items():
        auth = {"auths": {f"{name}.example": {"username": name, "password": "p"}}}
        (folder / ".dockerconfigjson").write_text(json.dumps(auth))
    assert str(tmp_path) in args.docker_config_dir
    assert fetch_adapter.load_auths(args.docker_config_dir) == {
        "acr.pull.example": ("acr.pull", "p"), "other.example": ("other", "p")}


def test_tuning_paths_map_and_unrelated_values_stay(catalog, tmp_path):
    ws = Workspace.model_validate(tuning_workspace())
    _, job = desired_tuning(ws, ws.tuning, catalog, Settings(), [])
    spec = job["spec"]["template"]["spec"]
    volumes = _volumes(spec, tmp_path)
    (tuner,) = spec["containers"]
    env = {e["name"]: e["value"] for e in tuner["env"] if "value" in e}
    weights = tmp_path / "model"
    command = local_command(tuner, tmp_path, volumes, {"/workspace/weights": weights}, None, env)
    assert command.env["HF_HOME"] == str(volumes["hf-cache"])
    assert command.env["HOME"] == str(volumes["tmp"])
    assert command.env["HF_HUB_OFFLINE"] == "1"
    assert f"--output-dir={volumes['results']}" in command.argv
    assert f"--model-dir={weights}" in command.argv
    assert "--push=myregistry.azurecr.io/adapters/a:0.1" in command.argv
    assert command.links == {}  # no value names a folder made only of mounts
