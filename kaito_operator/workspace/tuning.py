"""The tuning Job of a Workspace, and its default config ConfigMap (pure builders).

Pod layout: the training config at `/mnt/config/training_config.yaml` (the user's ConfigMap, or
`<workspace>-tuning-config` made from the method's template in `presets/tuning/`); the data in
`/mnt/data` (an init container downloads the URLs, or copies `/data` out of the input image, or
the input volume is mounted there); the adapter written to `/mnt/results` and pushed by the
trainer itself with the push secret mounted as a docker config (or `/mnt/results` is the output
volume). One container does train-then-push, so the Job succeeds only once the adapter is
published. `backoffLimit: 0`: a failed run says why once instead of retrying for hours on GPUs.
The Hugging Face cache is `/mnt/hf-cache`, scratch space `/tmp` (also `HOME`).

The pod meets the `restricted` Pod Security Standard with a read-only root filesystem, and every
emptyDir has a size limit: the downloaded data 20 GiB (the downloader's cap), the results
10 GiB, the cache the preset's disk size in download mode. An emptyDir the Workspace gives as
its input or output volume gets the same limit unless it sets one.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from kaito_operator.api.workspace import DataSource, TuningSpec, Workspace
from kaito_operator.catalog import Catalog
from kaito_operator.catalog.models import GpuSku, ModelPreset
from kaito_operator.kube import Kind
from kaito_operator.settings import Settings
from kaito_operator.workspace import sizing
from kaito_operator.workspace.names import SPEC_HASH_ANNOTATION, WORKSPACE_LABEL
from kaito_operator.workspace.podsecurity import harden_pod_spec
from kaito_operator.workspace.podspec import (
    WEIGHTS_DIR,
    fetch_env,
    gpus_per_node,
    node_affinity,
    scratch_volumes,
    tmp_mount,
    tolerations,
)
from kaito_operator.workspace.workload import owned_metadata, spec_hash

CONFIGMAPS = Kind("", "v1", "configmaps", "ConfigMap", True)
CONFIG_KEY = "training_config.yaml"
CONFIG_DIR = "/mnt/config"
DATA_DIR = "/mnt/data"
RESULTS_DIR = "/mnt/results"
PUSH_SECRET_DIR = "/mnt/push-secret"
HF_CACHE_DIR = "/mnt/hf-cache"
TERMINATION_LOG = "/dev/termination-log"


def config_map_name(ws: Workspace, tuning: TuningSpec) -> str:
    """The ConfigMap the Job mounts: the user's, else the default one we create."""
    return tuning.config or default_config_name(ws)


def default_config_name(ws: Workspace) -> str:
    return f"{ws.name}-tuning-config"


def default_config_map(ws: Workspace, tuning: TuningSpec, catalog: Catalog) -> dict[str, Any]:
    """The chart's template for the method, as a ConfigMap the user can read and copy (the
    file's text, comments included: they say which library class each section feeds)."""
    path = catalog.root / "tuning" / f"{tuning.method}.yaml"
    text = path.read_text() if path.is_file() else yaml.safe_dump(
        catalog.tuning_template(tuning.method), sort_keys=False)
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": owned_metadata(ws, default_config_name(ws)), "data": {CONFIG_KEY: text}}


def trainer_image(tuning: TuningSpec, preset: ModelPreset, settings: Settings) -> str:
    """The preset image (weights inside, trainer installed) or, in download mode, the base one."""
    options = tuning.preset.preset_options
    if options and options.image:
        return options.image
    if settings.weights == "download":
        return settings.base_image_ref
    return settings.preset_image(preset.name)


def input_init_containers(source: DataSource, image: str,
                          settings: Settings) -> list[dict[str, Any]]:
    """Fill /mnt/data: download the URLs, or copy /data out of the input image."""
    common = {"env": fetch_env(settings), "resources": sizing.init_resources(),
              "volumeMounts": [{"name": "data", "mountPath": DATA_DIR}, tmp_mount()]}
    if source.urls:
        return [{"name": "data-download", "image": image,
                 "command": ["python", "-m", "tuning_job.download"],
                 "args": [f"--output={DATA_DIR}", *source.urls], **common}]
    if source.image:
        return [{"name": "data-copy", "image": source.image,
                 "command": ["sh", "-c", f"cp -R /data/. {DATA_DIR}/"], **common}]
    return []


def trainer_args(tuning: TuningSpec, preset: ModelPreset, settings: Settings) -> list[str]:
    args = [f"--config={CONFIG_DIR}/{CONFIG_KEY}", f"--method={tuning.method}",
            f"--data-dir={DATA_DIR}", f"--output-dir={RESULTS_DIR}"]
    if settings.weights == "download":
        args += [f"--model-dir={preset.hugging_face.repo}",
                 f"--revision={preset.hugging_face.revision}", "--allow-download"]
    else:
        args.append(f"--model-dir={WEIGHTS_DIR}")
    if tuning.output.image:
        args += [f"--push={tuning.output.image}",
                 f"--docker-config={PUSH_SECRET_DIR}/.dockerconfigjson"]
    return args


def _bounded(source: dict[str, Any] | None, size_gib: int) -> dict[str, Any]:
    """The Workspace's volume source, or an emptyDir; an emptyDir without a size limit gets
    `size_gib` (a copy: the Workspace is not modified)."""
    volume = copy.deepcopy(source) if source else {"emptyDir": {}}
    empty = volume.get("emptyDir")
    if isinstance(empty, dict) and empty.get("medium") != "Memory" and not empty.get("sizeLimit"):
        empty["sizeLimit"] = sizing.gib(size_gib)
    return volume


def _volumes(ws: Workspace, tuning: TuningSpec, preset: ModelPreset, sku: GpuSku | None,
             settings: Settings) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, trainer mounts)."""
    cache_gib = (preset.resources.disk_gib if settings.weights == "download"
                 else sizing.SMALL_CACHE_GIB)
    volumes = [
        {"name": "config", "configMap": {"name": config_map_name(ws, tuning)}},
        {"name": "data", **_bounded(tuning.input.volume_source, sizing.DATA_GIB)},
        {"name": "results", **_bounded(tuning.output.volume_source, sizing.RESULTS_GIB)},
        {"name": "hf-cache", "emptyDir": {"sizeLimit": sizing.gib(cache_gib)}},
        *scratch_volumes(sizing.TMP_GIB, sizing.host_share(sku, preset)),
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "data", "mountPath": DATA_DIR},
        {"name": "results", "mountPath": RESULTS_DIR},
        {"name": "hf-cache", "mountPath": HF_CACHE_DIR},
        {"name": "dshm", "mountPath": "/dev/shm"},
        tmp_mount(),
    ]
    if tuning.output.image and tuning.output.image_push_secret:
        volumes.append({"name": "push-secret", "secret": {
            "secretName": tuning.output.image_push_secret,
            "items": [{"key": ".dockerconfigjson", "path": ".dockerconfigjson"}]}})
        mounts.append({"name": "push-secret", "mountPath": PUSH_SECRET_DIR, "readOnly": True})
    return volumes, mounts


def pod_spec(ws: Workspace, tuning: TuningSpec, preset: ModelPreset, sku: GpuSku | None,
             settings: Settings, nodes: list[str]) -> dict[str, Any]:
    """The tuning pod, `restricted` and sized from the SKU."""
    image = trainer_image(tuning, preset, settings)
    gpus = gpus_per_node(preset, sku)
    volumes, mounts = _volumes(ws, tuning, preset, sku, settings)
    env = [{"name": "HF_HUB_OFFLINE", "value": "1" if settings.weights == "image" else "0"},
           {"name": "HF_HOME", "value": HF_CACHE_DIR}, *fetch_env(settings)]
    if settings.weights == "download" and preset.hugging_face.needs_token:
        env.append({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {
            "name": settings.hf_token_secret, "key": "HF_TOKEN"}}})
    trainer = {
        "name": "tuner",
        "image": image,
        "command": ["python", "-m", "tuning_job"],
        "args": trainer_args(tuning, preset, settings),
        "env": env,
        "resources": sizing.main_resources(sizing.host_share(sku, preset), gpus,
                                           sizing.disk_limit(volumes)),
        "volumeMounts": mounts,
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [trainer],
        "volumes": volumes,
        "affinity": node_affinity(ws, nodes),
        "tolerations": tolerations(),
    }
    if init := input_init_containers(tuning.input, image, settings):
        spec["initContainers"] = init
    options = tuning.preset.preset_options
    secrets = list(dict.fromkeys([*settings.image_pull_secrets,
                                  *(tuning.input.image_pull_secrets or []),
                                  *((options.image_pull_secrets or []) if options else [])]))
    if secrets:
        spec["imagePullSecrets"] = [{"name": s} for s in secrets]
    return harden_pod_spec(spec)


def job_hash(ws: Workspace, tuning: TuningSpec, preset: ModelPreset, sku: GpuSku | None,
             settings: Settings) -> str:
    """What the Job must be recreated for: the pod without node pinning (a replaced node
    must not rerun a finished tuning)."""
    return spec_hash(pod_spec(ws, tuning, preset, sku, settings, []))


def build_job(ws: Workspace, tuning: TuningSpec, preset: ModelPreset, sku: GpuSku | None,
              settings: Settings, nodes: list[str]) -> dict[str, Any]:
    """The `batch/v1` Job named after the Workspace."""
    meta = owned_metadata(ws, ws.name)
    meta["annotations"] = {SPEC_HASH_ANNOTATION: job_hash(ws, tuning, preset, sku, settings)}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": {
            "backoffLimit": 0,
            "template": {"metadata": {"labels": {WORKSPACE_LABEL: ws.name}},
                         "spec": pod_spec(ws, tuning, preset, sku, settings, nodes)},
        },
    }


def desired_tuning(ws: Workspace, tuning: TuningSpec, catalog: Catalog, settings: Settings,
                   nodes: list[str]) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """(the default ConfigMap, or None when the user names one; the Job) of `ws`, whose
    tuning spec is `tuning`. Validation has checked that the preset exists."""
    preset = catalog.preset(tuning.preset.name)
    if preset is None:
        raise ValueError(f"tuning.preset.name: no preset {tuning.preset.name!r} in the catalog")
    config = None if tuning.config else default_config_map(ws, tuning, catalog)
    sku = catalog.sku(ws.resource.instance_type)
    return config, build_job(ws, tuning, preset, sku, settings, nodes)
