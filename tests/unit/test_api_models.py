"""The typed models round-trip real objects without loss and expose what the code reads."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kaito_operator.api import Machine, Workspace
from kaito_operator.api.crd import model_schema

ROOT = Path(__file__).resolve().parents[2]

#: The quick-start object as KAITO's documentation writes it, plus what the API server and the
#: controller add (defaults, metadata, status) and the optional KAITO preset fields.
KAITO_STYLE = """
apiVersion: kaito.sh/v1alpha1
kind: Workspace
metadata:
  name: workspace-phi-3-mini
  namespace: default
  uid: 0f7c3c1e-4f4e-4a55-9a3c-6c1b7b5c6d11
  resourceVersion: "1234"
  generation: 1
  creationTimestamp: "2024-06-01T10:00:00Z"
  finalizers: [workspace.finalizer.kaito.sh]
  annotations: {kaito.sh/enablelb: "False"}
  managedFields: [{manager: kubectl, operation: Update}]
resource:
  count: 1
  instanceType: Standard_NC6s_v3
  labelSelector:
    matchLabels: {apps: phi-3}
  preferredNodes: [aks-gpu-1234]
inference:
  preset:
    name: phi-3-mini-4k-instruct
    accessMode: private
    presetOptions:
      image: myregistry.azurecr.io/kaito-phi-3-mini-4k-instruct:0.0.1
      imagePullSecrets: [acr-pull]
  adapters:
  - source: {name: adapter-1, image: myregistry.azurecr.io/adapter-1:0.0.1}
    strength: "0.5"
status:
  workerNodes: [aks-gpu-1234]
  conditions:
  - type: WorkspaceReady
    status: "True"
    reason: WorkspaceReady
    message: inference is ready
    lastTransitionTime: "2024-06-01T10:05:00Z"
    observedGeneration: 1
"""

MACHINE = """
apiVersion: karpenter.sh/v1alpha5
kind: Machine
metadata:
  name: ws3f1c2a9b0
  labels:
    kaito.sh/workspace: workspace-phi-3-mini
    kaito.sh/workspacenamespace: default
    apps: phi-3
  finalizers: [karpenter.sh/termination]
spec:
  machineTemplateRef: {name: ws3f1c2a9b0}
  requirements:
  - {key: node.kubernetes.io/instance-type, operator: In, values: [Standard_NC6s_v3]}
  - {key: karpenter.sh/provisioner-name, operator: In, values: [default]}
  - {key: kubernetes.io/os, operator: In, values: [linux]}
  resources:
    requests: {storage: 70Gi}
  taints:
  - {key: sku, value: gpu, effect: NoSchedule}
status:
  providerID: azure:///subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/aks-ws3f1c2a9b0-123/virtualMachines/0
  nodeName: aks-ws3f1c2a9b0-12345678-vmss000000
  capacity: {nvidia.com/gpu: "1", cpu: "6", memory: 112Gi}
  allocatable: {nvidia.com/gpu: 1}
  conditions:
  - {type: MachineLaunched, status: "True", lastTransitionTime: "2024-06-01T10:01:00Z"}
  - {type: Ready, status: "False", severity: Warning, reason: NodeNotReady, message: waiting}
"""


def _example_docs():
    for path in sorted((ROOT / "examples").rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            yield pytest.param(doc, id=path.name)


@pytest.mark.parametrize("doc", [*_example_docs(), pytest.param(yaml.safe_load(KAITO_STYLE), id="kaito-style")])
def test_workspace_round_trips_without_loss(doc):
    assert Workspace.model_validate(doc).to_dict() == doc


def test_machine_round_trips_without_loss():
    doc = yaml.safe_load(MACHINE)
    assert Machine.model_validate(doc).to_dict() == doc


def test_machine_accessors():
    machine = Machine.model_validate(yaml.safe_load(MACHINE))
    assert machine.instance_type == "Standard_NC6s_v3"
    assert machine.condition("MachineLaunched").status == "True"
    assert machine.condition("Ready").reason == "NodeNotReady"
    assert machine.condition("MachineRegistered") is None
    assert machine.status.provider_id.startswith("azure:///")


def test_workspace_defaults_match_the_design():
    ws = Workspace.model_validate(
        {"resource": {"labelSelector": {"matchLabels": {"a": "b"}}},
         "inference": {"preset": {"name": "phi-4"}}}
    )
    assert ws.resource.instance_type == "Standard_NC12s_v3"
    assert ws.resource.count == 1
    assert ws.namespace == "default"


def test_every_model_field_is_in_the_crd_schema():
    """Walk the models and the generated schema together: no field may be missing or extra."""
    schema = model_schema(Workspace)

    def walk(model, node, path):
        fields = {f.alias or name for name, f in model.model_fields.items()}
        props = set(node["properties"]) - ({"apiVersion", "kind", "metadata"} if not path else set())
        assert props == fields - ({"apiVersion", "kind", "metadata"} if not path else set()), path
        for name, field in model.model_fields.items():
            sub_model = _model_of(field.annotation)
            if sub_model is not None and (field.alias or name) != "metadata":
                sub_node = node["properties"][field.alias or name]
                walk(sub_model, sub_node.get("items", sub_node), f"{path}.{field.alias or name}")

    walk(Workspace, schema, "")


def _model_of(annotation):
    from typing import get_args

    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("resource.count", "2"),
        ("resource.count", True),
        ("resource.count", 2.0),
        ("resource.count", 65),
        ("resource.instanceType", 7),
        ("inference.preset.name", "phi-4\n"),
        ("metadata.labels", {"team": 1}),
    ],
)
def test_models_are_strict_like_the_api_server(path, value):
    from pydantic import ValidationError

    from tests.factories import inference_workspace, with_changes

    with pytest.raises(ValidationError):
        Workspace.model_validate(with_changes(inference_workspace(), {path: value}))


def test_adapter_names_fit_their_init_container_name():
    from pydantic import ValidationError

    from kaito_operator.api.workspace import MAX_ADAPTER_NAME, AdapterSource

    assert len("adapter-") + MAX_ADAPTER_NAME == 63
    AdapterSource(name="a" * MAX_ADAPTER_NAME, image="r.io/a:1")
    with pytest.raises(ValidationError):
        AdapterSource(name="a" * (MAX_ADAPTER_NAME + 1), image="r.io/a:1")
    with pytest.raises(ValidationError):
        AdapterSource(name="a1\n", image="r.io/a:1")
