"""Deployment or StatefulSet, and the Services, of an inference Workspace (pure)."""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

from kaito_operator.api.workspace import Workspace
from kaito_operator.catalog import Catalog
from kaito_operator.catalog.models import GpuSku, ModelPreset
from kaito_operator.settings import Settings
from kaito_operator.workspace.names import (
    ENABLE_LB_ANNOTATION,
    HTTP_PORT,
    SERVICE_PORT,
    SPEC_HASH_ANNOTATION,
    TORCH_PORT,
    WORKSPACE_LABEL,
    headless_service_name,
)
from kaito_operator.workspace.podsecurity import fill_restricted_defaults
from kaito_operator.workspace.podspec import inference_pod_spec, node_affinity, tolerations


def owner_reference(ws: Workspace) -> dict[str, Any]:
    return {
        "apiVersion": "kaito.sh/v1alpha1",
        "kind": "Workspace",
        "name": ws.name,
        "uid": ws.metadata.uid or "",
        "controller": True,
        "blockOwnerDeletion": True,
    }


def owned_metadata(ws: Workspace, name: str) -> dict[str, Any]:
    """Metadata of an object the Workspace owns: its namespace, label and owner reference."""
    return {
        "name": name,
        "namespace": ws.namespace,
        "labels": {WORKSPACE_LABEL: ws.name},
        "ownerReferences": [owner_reference(ws)],
    }


def spec_hash(template: dict[str, Any]) -> str:
    """Hash of the pod template: a change (adapters, strengths, template) rolls the pods."""
    text = json.dumps(template, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _with_hash(template: dict[str, Any]) -> dict[str, Any]:
    annotations = template.setdefault("metadata", {}).setdefault("annotations", {})
    annotations.pop(SPEC_HASH_ANNOTATION, None)
    annotations[SPEC_HASH_ANNOTATION] = spec_hash(template)
    return template


def uses_statefulset(ws: Workspace, preset: ModelPreset | None) -> bool:
    return preset is not None and preset.multi_node_inference and ws.resource.count > 1


def _distributed_env(ws: Workspace) -> list[dict[str, Any]]:
    """torch.distributed rendezvous for multi-node presets: rank from the pod index."""
    master = f"{ws.name}-0.{headless_service_name(ws.name)}.{ws.namespace}.svc.cluster.local"
    return [
        {"name": "MASTER_ADDR", "value": master},
        {"name": "MASTER_PORT", "value": str(TORCH_PORT)},
        {"name": "WORLD_SIZE", "value": str(ws.resource.count)},
        {
            "name": "NODE_RANK",
            "valueFrom": {
                "fieldRef": {"fieldPath": "metadata.labels['apps.kubernetes.io/pod-index']"}
            },
        },
    ]


def preset_template(
    ws: Workspace,
    preset: ModelPreset,
    sku: GpuSku | None,
    settings: Settings,
    nodes: list[str],
) -> dict[str, Any]:
    multi = uses_statefulset(ws, preset)
    spec = inference_pod_spec(ws, preset, sku, settings, nodes)
    if multi:
        spec["containers"][0]["env"] += _distributed_env(ws)
    return _with_hash({"metadata": {"labels": {WORKSPACE_LABEL: ws.name}}, "spec": spec})


def custom_template(ws: Workspace, user_template: dict[str, Any],
                    nodes: list[str]) -> dict[str, Any]:
    """The user's pod template (`inference.template` of `ws`) with our label, node affinity
    and GPU tolerations added, and the `restricted` security defaults wherever the user left
    them unset. `user_template` itself is not modified."""
    template = copy.deepcopy(user_template)
    meta = template.setdefault("metadata", {})
    meta.setdefault("labels", {})[WORKSPACE_LABEL] = ws.name
    spec = template.setdefault("spec", {})
    ours = node_affinity(ws, nodes)["nodeAffinity"]
    affinity = spec.setdefault("affinity", {})
    required = affinity.setdefault("nodeAffinity", {}).setdefault(
        "requiredDuringSchedulingIgnoredDuringExecution", {"nodeSelectorTerms": []}
    )
    our_exprs = ours["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0][
        "matchExpressions"
    ]
    terms = required.setdefault("nodeSelectorTerms", [])
    if not terms:
        terms.append({"matchExpressions": []})
    for term in terms:  # terms are ORed: our expressions must hold in each
        term.setdefault("matchExpressions", []).extend(copy.deepcopy(our_exprs))
    existing = spec.setdefault("tolerations", [])
    existing += [t for t in tolerations() if t not in existing]
    fill_restricted_defaults(spec)
    return _with_hash(template)


def build_workload(ws: Workspace, template: dict[str, Any], stateful: bool) -> dict[str, Any]:
    selector = {"matchLabels": {WORKSPACE_LABEL: ws.name}}
    if stateful:
        return {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": owned_metadata(ws, ws.name),
            "spec": {
                "replicas": ws.resource.count,
                "selector": selector,
                "serviceName": headless_service_name(ws.name),
                "podManagementPolicy": "Parallel",
                "template": template,
            },
        }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": owned_metadata(ws, ws.name),
        "spec": {
            "replicas": ws.resource.count,
            "selector": selector,
            # One pod per GPU node: a surge pod would have no GPUs to run on.
            "strategy": {"type": "RollingUpdate",
                         "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
            "template": template,
        },
    }


def _target_port(template: dict[str, Any]) -> int:
    for container in template.get("spec", {}).get("containers") or []:
        for port in container.get("ports") or []:
            if "containerPort" in port:
                return int(port["containerPort"])
    return HTTP_PORT


def build_service(ws: Workspace, template: dict[str, Any], multi_node: bool) -> dict[str, Any]:
    """80 → the server's port and 29500 → 29500 (torch's rendezvous), on every inference
    Service, single-node too, as KAITO's quick start shows them (`80/TCP,29500/TCP`)."""
    ports = [{"name": "http", "port": SERVICE_PORT, "targetPort": _target_port(template),
              "protocol": "TCP"},
             {"name": "torch", "port": TORCH_PORT, "targetPort": TORCH_PORT, "protocol": "TCP"}]
    lb = (ws.metadata.annotations or {}).get(ENABLE_LB_ANNOTATION, "").lower() == "true"
    spec: dict[str, Any] = {
        "type": "LoadBalancer" if lb else "ClusterIP",
        "selector": {WORKSPACE_LABEL: ws.name},
        "ports": ports,
    }
    if multi_node:
        # Only the rank-0 pod serves HTTP.
        spec["selector"]["apps.kubernetes.io/pod-index"] = "0"
    return {"apiVersion": "v1", "kind": "Service", "metadata": owned_metadata(ws, ws.name),
            "spec": spec}


def build_headless_service(ws: Workspace) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": owned_metadata(ws, headless_service_name(ws.name)),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {WORKSPACE_LABEL: ws.name},
            "ports": [{"name": "torch", "port": TORCH_PORT, "targetPort": TORCH_PORT,
                       "protocol": "TCP"}],
        },
    }


def desired_inference(
    ws: Workspace, catalog: Catalog, settings: Settings, nodes: list[str]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The Services and the workload (Deployment or StatefulSet) of an inference Workspace.
    Validation has checked that it names a known preset or gives a template."""
    inference = ws.inference
    if inference is None:
        raise ValueError(f"Workspace {ws.namespace}/{ws.name} has no inference spec")
    preset = catalog.preset(inference.preset.name) if inference.preset else None
    stateful = uses_statefulset(ws, preset)
    if preset is not None:
        sku = catalog.sku(ws.resource.instance_type)
        template = preset_template(ws, preset, sku, settings, nodes)
    elif inference.template is not None:
        template = custom_template(ws, inference.template, nodes)
    else:
        raise ValueError("inference: neither a known preset nor a template")
    services = [build_service(ws, template, stateful)]
    if stateful:
        services.append(build_headless_service(ws))
    return services, build_workload(ws, template, stateful)
