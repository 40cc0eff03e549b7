"""The CRDs in crds/: generated from the models, structural, with the contract's columns and
rules, and behaving like the API server would on real objects."""

from __future__ import annotations

from pathlib import Path

import pytest

from kaito_operator.api.crd import CRDS, machine_crd, main, nodeclaim_crd, render, workspace_crd
from tests.factories import (
    DELETE,
    example_workspaces,
    inference_workspace,
    tuning_workspace,
    with_changes,
)
from tests.support.crd_check import admit

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("filename", sorted(CRDS))
def test_committed_crds_match_the_models(filename):
    committed = (ROOT / "crds" / filename).read_text()
    assert committed == render(CRDS[filename]()), (
        f"crds/{filename} is out of date: run `make crds`"
    )


def _nodes(schema, path="openAPIV3Schema"):
    yield path, schema
    for name, sub in (schema.get("properties") or {}).items():
        yield from _nodes(sub, f"{path}.{name}")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _nodes(schema["additionalProperties"], f"{path}.*")
    if "items" in schema:
        yield from _nodes(schema["items"], f"{path}[]")


@pytest.mark.parametrize("build", [workspace_crd, machine_crd, nodeclaim_crd],
                         ids=["workspace", "machine", "nodeclaim"])
def test_schema_is_structural(build):
    """The rules of a structural schema (apiextensions.k8s.io/v1 refuses anything else)."""
    version = build()["spec"]["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]
    forbidden = {"$ref", "anyOf", "allOf", "oneOf", "not", "$defs", "definitions", "nullable",
                 "title", "const"}
    for path, node in _nodes(schema):
        assert not forbidden & node.keys(), f"{path} uses {forbidden & node.keys()}"
        if node.get("x-kubernetes-int-or-string"):
            continue
        assert node.get("type") in {"object", "array", "string", "integer", "number", "boolean"}, path
        if "properties" in node:
            assert node["type"] == "object" and "additionalProperties" not in node, path
        if node["type"] == "array":
            assert "items" in node, path
    assert schema["properties"]["metadata"] == {"type": "object"}
    assert version["subresources"] == {"status": {}}


def test_workspace_printer_columns_are_the_contract():
    version = workspace_crd()["spec"]["versions"][0]
    columns = version["additionalPrinterColumns"]
    default_view = ["NAME"] + [c["name"].upper() for c in columns if not c.get("priority")]
    wide_view = ["NAME"] + [c["name"].upper() for c in columns]
    assert default_view == [
        "NAME", "INSTANCE", "RESOURCEREADY", "INFERENCEREADY", "WORKSPACEREADY", "AGE"
    ]
    assert "JOBSTARTED" in wide_view and "JOBSTARTED" not in default_view
    by_name = {c["name"]: c for c in columns}
    assert by_name["Instance"]["jsonPath"] == ".resource.instanceType"
    assert by_name["WorkspaceReady"]["jsonPath"] == (
        '.status.conditions[?(@.type=="WorkspaceReady")].status'
    )


def test_workspace_names():
    spec = workspace_crd()["spec"]
    assert spec["names"]["shortNames"] == ["wk", "wks"]
    assert spec["scope"] == "Namespaced"
    assert workspace_crd()["metadata"]["name"] == "workspaces.kaito.sh"
    assert machine_crd()["spec"]["scope"] == "Cluster"
    assert machine_crd()["metadata"]["name"] == "machines.karpenter.sh"
    assert nodeclaim_crd()["spec"]["scope"] == "Cluster"
    assert nodeclaim_crd()["metadata"]["name"] == "nodeclaims.karpenter.sh"
    assert nodeclaim_crd()["spec"]["versions"][0]["name"] == "v1"


def test_nodeclaim_printer_columns():
    """As Karpenter's: Type, Node, Ready and Age by default; NodePool and NodeClass wide."""
    columns = nodeclaim_crd()["spec"]["versions"][0]["additionalPrinterColumns"]
    default_view = [c["name"] for c in columns if not c.get("priority")]
    assert default_view == ["Type", "Capacity", "Zone", "Node", "Ready", "Age"]
    by_name = {c["name"]: c for c in columns}
    assert by_name["Type"]["jsonPath"] == ".metadata.labels.node\\.kubernetes\\.io/instance-type"
    assert by_name["NodePool"]["jsonPath"] == ".metadata.labels.karpenter\\.sh/nodepool"
    assert by_name["NodeClass"]["jsonPath"] == ".spec.nodeClassRef.name"
    assert by_name["NodePool"]["priority"] == by_name["NodeClass"]["priority"] == 1
    assert by_name["Ready"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'


def test_write_only_selected_crds(tmp_path):
    """`make crds` writes the workspace chart's pair only (the NodeClaim CRD goes with the
    gpu-provisioner chart)."""
    assert main(["--write", str(tmp_path), "--only", "kaito.sh_workspaces.yaml",
                 "--only", "karpenter.sh_machines.yaml"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "kaito.sh_workspaces.yaml", "karpenter.sh_machines.yaml"]
    assert main(["--write", str(tmp_path / "all")]) == 0
    assert sorted(p.name for p in (tmp_path / "all").iterdir()) == sorted(CRDS)


def _rules_at(schema, *path):
    node = schema
    for name in path:
        node = node["properties"][name]
    return [r["rule"] for r in node.get("x-kubernetes-validations", [])]


def test_cel_rule_text_for_each_contract_rule():
    schema = workspace_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert "has(self.inference) != has(self.tuning)" in _rules_at(schema)
    assert any("oldSelf.inference" in r and "oldSelf.tuning" in r for r in _rules_at(schema))
    assert "has(self.preset) != has(self.template)" in _rules_at(schema, "inference")
    assert "has(self.preset) == has(oldSelf.preset)" in _rules_at(schema, "inference")
    for path in (
        ("resource", "instanceType"),
        ("resource", "count"),
        ("resource", "labelSelector"),
        ("inference", "preset", "name"),
        ("tuning", "preset", "name"),
        ("tuning", "method"),
    ):
        assert "self == oldSelf" in _rules_at(schema, *path), path


WS_SCHEMA = workspace_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
INF = inference_workspace()
TUN = tuning_workspace()


@pytest.mark.parametrize("obj", list(example_workspaces()))
def test_api_server_admits_the_examples(obj):
    assert admit(WS_SCHEMA, obj) == []


@pytest.mark.parametrize(
    ("obj", "words"),
    [
        (with_changes(INF, {"inference": DELETE}), "exactly one of inference or tuning"),
        (with_changes(TUN, {"inference": INF["inference"]}), "exactly one of inference or tuning"),
        (with_changes(INF, {"inference.template": {}}), "exactly one of preset or template"),
        (with_changes(TUN, {"resource.count": 2}), "count must be 1 for tuning"),
        (with_changes(TUN, {"tuning.input.image": "r.io/d:1"}), "exactly one of urls, image"),
        (with_changes(TUN, {"tuning.input.urls": ["ftp://x/y"]}), "every URL must be http(s)"),
        (with_changes(TUN, {"tuning.output.imagePushSecret": DELETE}), "needs imagePushSecret"),
        (with_changes(TUN, {"tuning.output.volumeSource": {"emptyDir": {}}}), "exactly one of image or volumeSource"),
        (
            with_changes(INF, {"inference.adapters": [
                {"source": {"name": "a", "image": "r.io/a:1"}},
                {"source": {"name": "a", "image": "r.io/a:2"}},
            ]}),
            "adapter names must be unique",
        ),
        (with_changes(INF, {"inference.adapters": [{"source": {"name": "a", "image": "r.io/a:1"}, "strength": "2"}]}), "does not match"),
        (with_changes(INF, {"resource.count": 0}), "less than the minimum"),
        (with_changes(INF, {"resource.count": 65}), "greater than the maximum of 64"),
        (with_changes(INF, {"resource.count": "2"}), "is not of type 'integer'"),
        (with_changes(INF, {"inference.adapters": [{"source": {"name": "a" * 56, "image": "r.io/a:1"}}]}), "is too long"),
        (with_changes(INF, {"metadata.name": "w" * 53}), "metadata.name: at most 52 characters"),
        (with_changes(INF, {"resource.instanceTypo": "x"}), "Additional properties"),
        (with_changes(INF, {"resource.labelSelector": DELETE}), "'labelSelector' is a required property"),
    ],
)
def test_api_server_refuses_invalid_objects(obj, words):
    reasons = admit(WS_SCHEMA, obj)
    assert any(words in r for r in reasons), reasons


@pytest.mark.parametrize(
    ("old", "changes", "words"),
    [
        (INF, {"resource.instanceType": "Standard_NC24ads_A100_v4"}, "resource.instanceType is immutable"),
        (INF, {"resource.count": 3}, "resource.count is immutable"),
        (INF, {"resource.labelSelector.matchLabels.apps": "x"}, "resource.labelSelector is immutable"),
        (INF, {"inference.preset.name": "phi-4"}, "preset.name is immutable"),
        (INF, {"inference.preset": DELETE, "inference.template": {"spec": {}}}, "cannot switch between preset and template"),
        (INF, {"inference": DELETE, "tuning": TUN["tuning"]}, "cannot switch a Workspace between inference and tuning"),
        (TUN, {"tuning.method": "lora"}, "tuning.method is immutable"),
    ],
)
def test_api_server_refuses_changes_to_immutable_fields(old, changes, words):
    reasons = admit(WS_SCHEMA, with_changes(old, changes), old=old)
    assert any(words in r for r in reasons), reasons


def test_api_server_allows_adapter_changes():
    new = with_changes(INF, {"inference.adapters": [{"source": {"name": "a", "image": "r.io/a:1"}}]})
    assert admit(WS_SCHEMA, new, old=INF) == []


def test_defaults_are_applied_like_the_api_server():
    from tests.support.crd_check import apply_defaults

    obj = apply_defaults(WS_SCHEMA, with_changes(INF, {"resource.instanceType": DELETE}))
    assert obj["resource"]["count"] == 1
    assert obj["resource"]["instanceType"] == "Standard_NC12s_v3"
