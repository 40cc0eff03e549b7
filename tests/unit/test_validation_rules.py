"""Valid objects, warnings, the bypass annotation, and update (immutability) rules."""

from __future__ import annotations

import pytest

from kaito_operator.validation import errors, summary, validate_workspace, warnings
from tests.factories import (
    DELETE,
    WorkspaceInvalid,
    inference_workspace,
    parse_workspace,
    tuning_workspace,
    with_changes,
)

INF = inference_workspace()
TUN = tuning_workspace()


def test_quick_start_workspace_is_valid(catalog):
    assert validate_workspace(INF, catalog) == []


def test_tuning_workspace_is_valid(catalog):
    assert validate_workspace(TUN, catalog) == []


def test_multi_node_preset_spreads_over_count(catalog):
    ws = with_changes(
        INF,
        {"inference.preset.name": "falcon-40b-instruct", "resource.count": 6},
    )
    assert errors(validate_workspace(ws, catalog)) == []


def test_single_node_preset_with_count_two_is_replicas(catalog):
    ws = with_changes(INF, {"resource.count": 2})
    assert validate_workspace(ws, catalog) == []


def test_bypass_annotation_turns_gpu_checks_into_warnings(catalog):
    ws = with_changes(
        INF,
        {
            "inference.preset.name": "phi-3-medium-4k-instruct",
            "metadata.annotations": {"kaito.sh/bypass-resource-checks": "True"},
        },
    )
    found = validate_workspace(ws, catalog)
    assert errors(found) == []
    (warning,) = warnings(found)
    assert warning.path == "resource.instanceType"
    assert "needs 28 GiB" in warning.message


def test_bypass_annotation_allows_unknown_instance_types(catalog):
    ws = with_changes(
        INF,
        {
            "resource.instanceType": "a2-highgpu-1g",
            "metadata.annotations": {"kaito.sh/bypass-resource-checks": "true"},
        },
    )
    found = validate_workspace(ws, catalog)
    assert errors(found) == []
    assert "not in the GPU catalog" in warnings(found)[0].message


def test_azure_instance_type_names_match_case_insensitively(catalog):
    ws = with_changes(INF, {"resource.instanceType": "standard_nc6s_v3"})
    assert validate_workspace(ws, catalog) == []


def test_template_workspace_needs_no_catalog_fit(catalog):
    ws = with_changes(
        INF,
        {"inference.preset": DELETE, "inference.template": {"spec": {"containers": [
            {"name": "server", "image": "registry.example.com/server:1"}]}}},
    )
    assert validate_workspace(ws, catalog) == []


def test_strength_defaults_to_one(catalog):
    ws = with_changes(
        INF, {"inference.adapters": [{"source": {"name": "a", "image": "r.io/a:1"}}]}
    )
    parsed = parse_workspace(ws, catalog)
    assert parsed.inference.adapters[0].strength == "1.0"


@pytest.mark.parametrize("strength", ["0", "0.0", "0.25", "1", "1.0", "1.000"])
def test_strengths_in_range_are_accepted(catalog, strength):
    adapter = {"source": {"name": "a", "image": "r.io/a:1"}, "strength": strength}
    ws = with_changes(INF, {"inference.adapters": [adapter]})
    assert validate_workspace(ws, catalog) == []


def test_parse_workspace_raises_with_every_error(catalog):
    ws = with_changes(
        INF, {"inference.preset.name": "phi-4", "resource.labelSelector.matchLabels": {}}
    )
    with pytest.raises(WorkspaceInvalid) as info:
        parse_workspace(ws, catalog)
    paths = {f.path for f in info.value.findings}
    assert paths == {"resource.labelSelector.matchLabels", "resource.instanceType"}
    assert str(info.value) == summary(info.value.findings)


UPDATE_CASES = [
    ("instance-type", INF, {"resource.instanceType": "Standard_NC24ads_A100_v4"}, "resource.instanceType"),
    ("count", INF, {"resource.count": 2}, "resource.count"),
    ("label-selector", INF, {"resource.labelSelector.matchLabels": {"apps": "other"}}, "resource.labelSelector"),
    ("inference-preset", INF, {"inference.preset.name": "phi-3.5-mini-instruct"}, "inference.preset.name"),
    ("preset-to-template", INF, {"inference.preset": DELETE, "inference.template": {"spec": {}}}, "inference"),
    ("inference-to-tuning", INF, {"inference": DELETE, "tuning": TUN["tuning"]}, "<object>"),
    ("tuning-preset", TUN, {"tuning.preset.name": "phi-3.5-mini-instruct"}, "tuning.preset.name"),
    ("tuning-method", TUN, {"tuning.method": "lora"}, "tuning.method"),
]


@pytest.mark.parametrize(
    ("base", "changes", "path"), [c[1:] for c in UPDATE_CASES], ids=[c[0] for c in UPDATE_CASES]
)
def test_immutable_fields_cannot_change(catalog, base, changes, path):
    found = errors(validate_workspace(with_changes(base, changes), catalog, old=base))
    assert path in {f.path for f in found}, [str(f) for f in found]


def test_adapters_and_annotations_may_change(catalog):
    new = with_changes(
        INF,
        {
            "inference.adapters": [{"source": {"name": "a", "image": "r.io/a:2"}}],
            "metadata.annotations": {"kaito.sh/enablelb": "True"},
        },
    )
    assert validate_workspace(new, catalog, old=INF) == []


def test_defaulted_count_equals_explicit_one_on_update(catalog):
    explicit = with_changes(INF, {"resource.count": 1})
    assert validate_workspace(explicit, catalog, old=INF) == []


def test_type_errors_do_not_hide_catalog_errors(catalog):
    ws = with_changes(
        INF,
        {
            "inference.preset.name": "phi-3-medium-4k-instruct",
            "inference.adapters": [{"source": {"name": "a", "image": "r.io/a:1"}, "strength": 1}],
        },
    )
    paths = [f.path for f in errors(validate_workspace(ws, catalog))]
    assert paths == ["inference.adapters[0].strength", "resource.instanceType"]


def test_refused_value_is_not_reported_twice(catalog):
    ws = with_changes(INF, {"resource.count": 0})
    assert [f.path for f in validate_workspace(ws, catalog)] == ["resource.count"]
