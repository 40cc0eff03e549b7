"""The inference pod (pure): container, probes, volumes, adapters, placement.

Layout inside the pod: weights in `/workspace/weights` (baked into the preset image, or
downloaded at start in download mode), adapters in `/mnt/adapter/<name>` (one init container
each, running the inference image's adapter fetcher, with the adapters' pull secrets under
`/var/run/secrets/kaito/docker/<secret>`), `/dev/shm` in memory, `/tmp` (also `HOME`) on disk.
The root filesystem is read-only: those are the only places the processes write, and every
one of them has a size limit (see `sizing`).
"""

from __future__ import annotations

import math
from typing import Any

from kaito_operator.api.workspace import AdapterSpec, Workspace
from kaito_operator.catalog.models import GpuSku, ModelPreset
from kaito_operator.settings import Settings
from kaito_operator.workspace import sizing
from kaito_operator.workspace.names import (
    GPU_RESOURCE,
    GPU_TAINT,
    HTTP_PORT,
    TORCH_PORT,
    pull_secret_volume_name,
)
from kaito_operator.workspace.podsecurity import harden_pod_spec

WEIGHTS_DIR = "/workspace/weights"
PRESETS_DIR = "/workspace/presets"
ADAPTERS_DIR = "/mnt/adapter"
DOCKER_SECRETS_DIR = "/var/run/secrets/kaito/docker"
TMP_DIR = "/tmp"
PROBE_PERIOD = 10


def scratch_volumes(tmp_gib: int, share: sizing.HostShare) -> list[dict[str, Any]]:
    """`/tmp` on disk and `/dev/shm` in memory, both bounded."""
    return [
        {"name": "tmp", "emptyDir": {"sizeLimit": sizing.gib(tmp_gib)}},
        {"name": "dshm", "emptyDir": {"medium": "Memory",
                                      "sizeLimit": sizing.gib(share.shm_gib)}},
    ]


def tmp_mount() -> dict[str, Any]:
    return {"name": "tmp", "mountPath": TMP_DIR}


def home_env() -> dict[str, Any]:
    """`HOME` on the writable `/tmp`: UID 1000 has no home folder in the read-only image, and
    libraries put their caches under `~`."""
    return {"name": "HOME", "value": TMP_DIR}


def fetch_env(settings: Settings) -> list[dict[str, Any]]:
    """Environment of the containers that fetch from outside the pod (adapter fetcher, dataset
    download, adapter push): `HOME`, and the egress guard's private-range switch when the
    operator allows private addresses."""
    env = [home_env()]
    if settings.egress_allow_private:
        env.append({"name": "KAITO_EGRESS_ALLOW_PRIVATE", "value": "1"})
    return env


def tolerations() -> list[dict[str, Any]]:
    return [
        {"key": GPU_TAINT["key"], "operator": "Equal", "value": GPU_TAINT["value"],
         "effect": GPU_TAINT["effect"]},
        {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"},
    ]


def node_affinity(ws: Workspace, nodes: list[str]) -> dict[str, Any]:
    """Required: the Workspace's labels, and the chosen nodes when known."""
    expressions = [
        {"key": key, "operator": "In", "values": [value]}
        for key, value in sorted((ws.resource.label_selector.match_labels or {}).items())
    ]
    if nodes:
        expressions.append(
            {"key": "kubernetes.io/hostname", "operator": "In", "values": sorted(nodes)}
        )
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": expressions}]
            }
        }
    }


def gpus_per_node(preset: ModelPreset, sku: GpuSku | None) -> int:
    """All GPUs of the SKU (the pod owns its node); the preset's count for unknown SKUs."""
    return sku.gpu_count if sku is not None else preset.resources.gpu_count


def probes(preset: ModelPreset) -> dict[str, Any]:
    """Startup probe sized by the preset's readiness timeout, then readiness and liveness."""
    check = {"httpGet": {"path": "/health", "port": HTTP_PORT}}
    return {
        "startupProbe": {
            **check,
            "periodSeconds": PROBE_PERIOD,
            "failureThreshold": math.ceil(preset.readiness_timeout_seconds / PROBE_PERIOD),
        },
        "readinessProbe": {**check, "periodSeconds": PROBE_PERIOD, "failureThreshold": 3},
        "livenessProbe": {**check, "periodSeconds": PROBE_PERIOD, "failureThreshold": 6},
    }


def strengths(adapters: list[AdapterSpec]) -> str:
    return ",".join(f"{a.source.name}={a.strength or '1.0'}" for a in adapters)


def server_args(
    ws: Workspace, preset: ModelPreset, settings: Settings, adapters: list[AdapterSpec]
) -> list[str]:
    """Flags of `python -m inference_server` (see inference_server/settings.py)."""
    if settings.weights == "download":
        source = [
            f"--model-id={preset.hugging_face.repo}",
            f"--revision={preset.hugging_face.revision}",
            f"--cache-dir={WEIGHTS_DIR}",
        ]
    else:
        source = [f"--model-dir={WEIGHTS_DIR}"]
    args = [
        *source,
        f"--served-model-name={preset.name}",
        f"--dtype={preset.dtype}",
        "--device-map=auto",
        f"--port={HTTP_PORT}",
        f"--max-batch-size={settings.max_batch_size}",
        f"--queue-size={settings.queue_size}",
        f"--max-new-tokens-cap={settings.max_new_tokens_cap}",
    ]
    if preset.chat_template:
        args.append(f"--chat-template={PRESETS_DIR}/chat_templates/{preset.chat_template}")
    if preset.runtime.trust_remote_code:
        args.append("--trust-remote-code")
    if adapters:
        args += [f"--adapters-dir={ADAPTERS_DIR}", f"--adapter-strengths={strengths(adapters)}"]
    return args


def adapter_init_container(adapter: AdapterSpec, image: str, settings: Settings) -> dict[str, Any]:
    """Pulls one adapter (an OCI artifact, or an image with the files in /data) into
    `/mnt/adapter/<name>` with the fetcher shipped in the inference image; each of the
    adapter's pull secrets is mounted read-only at `/var/run/secrets/kaito/docker/<secret>`."""
    name = adapter.source.name
    container: dict[str, Any] = {
        "name": f"adapter-{name}",
        "image": image,
        "command": ["python", "-m", "inference_server.fetch_adapter"],
        "args": [f"--image={adapter.source.image}", f"--output={ADAPTERS_DIR}/{name}"],
        "env": fetch_env(settings),
        "resources": sizing.init_resources(),
        "volumeMounts": [{"name": "adapters", "mountPath": ADAPTERS_DIR}, tmp_mount()],
    }
    secrets = list(dict.fromkeys(adapter.source.image_pull_secrets or []))
    if secrets:
        container["args"].append(f"--docker-config-dir={DOCKER_SECRETS_DIR}")
        container["volumeMounts"] += [
            {"name": pull_secret_volume_name(secret),
             "mountPath": f"{DOCKER_SECRETS_DIR}/{secret}", "readOnly": True}
            for secret in secrets
        ]
    return container


def preset_image(ws: Workspace, preset: ModelPreset, settings: Settings) -> str:
    options = ws.inference.preset.preset_options if ws.inference and ws.inference.preset else None
    if options and options.image:
        return options.image
    if settings.weights == "download":
        return settings.base_image_ref
    return settings.preset_image(preset.name)


def pull_secrets(ws: Workspace, settings: Settings) -> list[str]:
    names: list[str] = list(settings.image_pull_secrets)
    spec = ws.inference
    if spec and spec.preset and spec.preset.preset_options:
        names += spec.preset.preset_options.image_pull_secrets or []
    for adapter in (spec.adapters if spec else None) or []:
        names += adapter.source.image_pull_secrets or []
    return list(dict.fromkeys(names))


def inference_pod_spec(
    ws: Workspace,
    preset: ModelPreset,
    sku: GpuSku | None,
    settings: Settings,
    nodes: list[str],
) -> dict[str, Any]:
    """The pod of the inference Deployment/StatefulSet, `restricted` and sized from the SKU."""
    adapters = list((ws.inference.adapters if ws.inference else None) or [])
    image = preset_image(ws, preset, settings)
    gpus = gpus_per_node(preset, sku)
    share = sizing.host_share(sku, preset)
    ports = [{"name": "http", "containerPort": HTTP_PORT},
             {"name": "torch", "containerPort": TORCH_PORT}]  # the Service's 29500, always
    mounts = [{"name": "dshm", "mountPath": "/dev/shm"}, tmp_mount()]
    volumes = scratch_volumes(sizing.tmp_gib(len(adapters)), share)
    env = [{"name": "HF_HUB_OFFLINE", "value": "1" if settings.weights == "image" else "0"},
           home_env()]
    if settings.weights == "download":
        mounts.append({"name": "weights", "mountPath": WEIGHTS_DIR})
        volumes.append(
            {"name": "weights", "emptyDir": {"sizeLimit": f"{preset.resources.disk_gib}Gi"}}
        )
        if preset.hugging_face.needs_token:
            secret = {"name": settings.hf_token_secret, "key": "HF_TOKEN"}
            env.append({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": secret}})
    if adapters:
        mounts.append({"name": "adapters", "mountPath": ADAPTERS_DIR})
        volumes.append({"name": "adapters", "emptyDir": {
            "sizeLimit": sizing.gib(sizing.adapters_gib(len(adapters)))}})
        secrets = {s for a in adapters for s in a.source.image_pull_secrets or []}
        volumes += [
            {"name": pull_secret_volume_name(s), "secret": {"secretName": s}}
            for s in sorted(secrets)
        ]
    container = {
        "name": "inference",
        "image": image,
        "command": ["python", "-m", "inference_server"],
        "args": server_args(ws, preset, settings, adapters),
        "ports": ports,
        "env": env,
        "resources": sizing.main_resources(share, gpus, sizing.disk_limit(volumes)),
        "volumeMounts": mounts,
        **probes(preset),
    }
    spec: dict[str, Any] = {
        "containers": [container],
        "volumes": volumes,
        "affinity": node_affinity(ws, nodes),
        "tolerations": tolerations(),
    }
    if adapters:
        spec["initContainers"] = [
            adapter_init_container(a, image, settings) for a in adapters
        ]
    if secrets_ := pull_secrets(ws, settings):
        spec["imagePullSecrets"] = [{"name": s} for s in secrets_]
    return harden_pod_spec(spec)
