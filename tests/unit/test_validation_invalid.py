"""Table of invalid Workspaces: each names the field at fault and the reason."""

from __future__ import annotations

import pytest

from kaito_operator.validation import errors, validate_workspace
from tests.factories import DELETE, inference_workspace, tuning_workspace, with_changes

INF = inference_workspace()
TUN = tuning_workspace()
ADAPTER = {"source": {"name": "a1", "image": "myregistry.azurecr.io/adapters/a1:1"}}

# (id, base object, changes, expected field path, expected words in the message)
CASES = [
    # --- shape of the object
    ("wrong-api-version", INF, {"apiVersion": "kaito.sh/v1beta1"}, "apiVersion", "must be kaito.sh/v1alpha1"),
    ("wrong-kind", INF, {"kind": "Deployment"}, "kind", "must be Workspace"),
    ("missing-name", INF, {"metadata.name": DELETE}, "metadata.name", "is required"),
    ("name-uppercase", INF, {"metadata.name": "Phi3"}, "metadata.name", "'Phi3' is not valid"),
    ("name-starts-with-digit", INF, {"metadata.name": "3phi"}, "metadata.name", "must start with a lower-case letter"),
    ("name-too-long-for-child-names", INF, {"metadata.name": "a" * 53}, "metadata.name", "at most 52"),
    ("unknown-top-level-field", INF, {"spec": {"resource": {}}}, "spec", "unknown field"),
    ("unknown-nested-field", INF, {"resource.instancetype": "x"}, "resource.instancetype", "unknown field"),
    ("missing-resource", INF, {"resource": DELETE}, "resource", "is required"),
    ("neither-inference-nor-tuning", INF, {"inference": DELETE}, "<object>", "exactly one of inference or tuning"),
    ("both-inference-and-tuning", TUN, {"inference": {"preset": {"name": "phi-3-mini-4k-instruct"}}}, "<object>", "exactly one of inference or tuning"),
    # --- resource
    ("missing-label-selector", INF, {"resource.labelSelector": DELETE}, "resource.labelSelector", "is required"),
    ("empty-match-labels", INF, {"resource.labelSelector.matchLabels": {}}, "resource.labelSelector.matchLabels", "is required"),
    ("bad-label-value", INF, {"resource.labelSelector.matchLabels": {"apps": "phi 3"}}, "resource.labelSelector.matchLabels[apps]", "label value"),
    ("bad-label-key", INF, {"resource.labelSelector.matchLabels": {"-apps": "x"}}, "resource.labelSelector.matchLabels[-apps]", "label key"),
    ("count-zero", INF, {"resource.count": 0}, "resource.count", "must be at least 1"),
    ("count-negative", INF, {"resource.count": -2}, "resource.count", "must be at least 1"),
    ("count-as-string", INF, {"resource.count": "two"}, "resource.count", "must be an integer"),
    ("instance-type-unknown-non-azure-gpu", INF, {"resource.instanceType": "m5.large"}, "resource.instanceType", "not a known GPU instance type"),
    ("instance-type-azure-cpu-size", INF, {"resource.instanceType": "Standard_D4s_v3"}, "resource.instanceType", "not a known GPU instance type"),
    ("instance-type-empty", INF, {"resource.instanceType": ""}, "resource.instanceType", "must not be empty"),
    ("preferred-node-bad-name", INF, {"resource.preferredNodes": ["Node_1"]}, "resource.preferredNodes[0]", "not a node name"),
    ("preferred-node-duplicate", INF, {"resource.preferredNodes": ["n1", "n1"]}, "resource.preferredNodes[1]", "listed twice"),
    # --- inference: preset and GPU fit
    ("preset-unknown", INF, {"inference.preset.name": "phi-5"}, "inference.preset.name", "not a known preset"),
    ("preset-name-bad-syntax", INF, {"inference.preset.name": "Phi_3"}, "inference.preset.name", "must be a preset name"),
    ("preset-and-template", INF, {"inference.template": {"spec": {"containers": []}}}, "inference", "exactly one of preset or template"),
    ("neither-preset-nor-template", INF, {"inference.preset": DELETE}, "inference", "exactly one of preset or template"),
    ("gpu-memory-total-short", INF, {"inference.preset.name": "phi-3-medium-4k-instruct"}, "resource.instanceType", "Standard_NC6s_v3 has 1 GPU with 16 GiB; preset phi-3-medium-4k-instruct needs 28 GiB of GPU memory in total"),
    ("gpu-memory-short-llama", INF, {"inference.preset.name": "llama-3.1-8b-instruct"}, "resource.instanceType", "needs 22 GiB"),
    ("single-node-preset-no-spread", INF, {"inference.preset.name": "phi-4", "resource.count": 3}, "resource.instanceType", "needs 40 GiB"),
    ("multi-node-preset-too-few-nodes", INF, {"inference.preset.name": "falcon-40b-instruct", "resource.count": 2}, "resource.instanceType", "2 x Standard_NC6s_v3 have 2 GPUs"),
    ("fractional-a10-too-small", INF, {"resource.instanceType": "Standard_NV6ads_A10_v5"}, "resource.instanceType", "needs 9 GiB"),
    ("private-preset-without-image", INF, {"inference.preset.accessMode": "private"}, "inference.preset.presetOptions.image", "required for a private preset"),
    ("access-mode-unknown", INF, {"inference.preset.accessMode": "secret"}, "inference.preset.accessMode", "is not one of"),
    # --- inference: adapters
    ("adapter-strength-float", INF, {"inference.adapters": [dict(ADAPTER, strength=0.5)]}, "inference.adapters[0].strength", "must be a string (quote it)"),
    ("adapter-strength-above-one", INF, {"inference.adapters": [dict(ADAPTER, strength="1.5")]}, "inference.adapters[0].strength", "between 0 and 1"),
    ("adapter-strength-negative", INF, {"inference.adapters": [dict(ADAPTER, strength="-0.1")]}, "inference.adapters[0].strength", "between 0 and 1"),
    ("adapter-strength-not-number", INF, {"inference.adapters": [dict(ADAPTER, strength="high")]}, "inference.adapters[0].strength", "between 0 and 1"),
    ("adapter-duplicate-names", INF, {"inference.adapters": [ADAPTER, ADAPTER]}, "inference.adapters[1].source.name", "used by another adapter"),
    ("adapter-too-many", INF, {"inference.adapters": [{"source": {"name": f"a{i}", "image": "r.io/a:1"}} for i in range(11)]}, "inference.adapters", "at most 10"),
    ("adapter-name-uppercase", INF, {"inference.adapters": [{"source": {"name": "A1", "image": "r.io/a:1"}}]}, "inference.adapters[0].source.name", "DNS-1123 label"),
    ("adapter-missing-image", INF, {"inference.adapters": [{"source": {"name": "a1"}}]}, "inference.adapters[0].source.image", "is required"),
    ("adapter-bad-image", INF, {"inference.adapters": [{"source": {"name": "a1", "image": "UPPER/Case:1"}}]}, "inference.adapters[0].source.image", "image reference"),
    ("adapter-bad-pull-secret", INF, {"inference.adapters": [{"source": {"name": "a1", "image": "r.io/a:1", "imagePullSecrets": ["Bad_Secret"]}}]}, "inference.adapters[0].source.imagePullSecrets[0]", "not a Secret name"),
    ("adapters-with-template", INF, {"inference.preset": DELETE, "inference.template": {"spec": {}}, "inference.adapters": [ADAPTER]}, "inference.adapters", "adapters need a preset"),
    ("enablelb-bad-value", INF, {"metadata.annotations": {"kaito.sh/enablelb": "yes"}}, "metadata.annotations[kaito.sh/enablelb]", 'must be "True" or "False"'),
    # --- tuning
    ("tuning-count-two", TUN, {"resource.count": 2}, "resource.count", "tuning needs count 1"),
    ("tuning-method-unknown", TUN, {"tuning.method": "full"}, "tuning.method", "is not one of"),
    ("tuning-preset-unsupported", TUN, {"tuning.preset.name": "llama-3.1-8b-instruct"}, "tuning.preset.name", "does not support tuning"),
    ("tuning-preset-unknown", TUN, {"tuning.preset.name": "gpt-5"}, "tuning.preset.name", "not a known preset"),
    ("tuning-missing-input", TUN, {"tuning.input": DELETE}, "tuning.input", "is required"),
    ("tuning-two-inputs", TUN, {"tuning.input.image": "r.io/data:1"}, "tuning.input", "exactly one of urls, image or volumeSource: got urls, image"),
    ("tuning-no-input-source", TUN, {"tuning.input": {"name": "data"}}, "tuning.input", "got none"),
    ("tuning-empty-url-list", TUN, {"tuning.input.urls": []}, "tuning.input.urls", "at least 1"),
    ("tuning-url-ftp", TUN, {"tuning.input.urls": ["ftp://example.com/d.parquet"]}, "tuning.input.urls[0]", "http or https"),
    ("tuning-url-loopback", TUN, {"tuning.input.urls": ["http://127.0.0.1:8080/d.parquet"]}, "tuning.input.urls[0]", "loopback"),
    ("tuning-url-localhost", TUN, {"tuning.input.urls": ["http://localhost/d.parquet"]}, "tuning.input.urls[0]", "node itself"),
    ("tuning-url-metadata", TUN, {"tuning.input.urls": ["http://169.254.169.254/latest/meta-data"]}, "tuning.input.urls[0]", "link-local or cloud metadata"),
    ("tuning-url-decimal-loopback", TUN, {"tuning.input.urls": ["http://2130706433/d"]}, "tuning.input.urls[0]", "loopback"),
    ("tuning-url-ipv6-loopback", TUN, {"tuning.input.urls": ["http://[::1]/d"]}, "tuning.input.urls[0]", "loopback"),
    ("tuning-output-both", TUN, {"tuning.output.volumeSource": {"emptyDir": {}}}, "tuning.output", "exactly one of image or volumeSource"),
    ("tuning-output-none", TUN, {"tuning.output": {}}, "tuning.output", "exactly one of image or volumeSource"),
    ("tuning-output-no-push-secret", TUN, {"tuning.output.imagePushSecret": DELETE}, "tuning.output.imagePushSecret", "is required with output.image"),
    ("tuning-output-no-registry", TUN, {"tuning.output.image": "adapters/a:1"}, "tuning.output.image", "must name the registry host"),
    ("tuning-output-no-tag", TUN, {"tuning.output.image": "myregistry.azurecr.io/adapters/a"}, "tuning.output.image", "must carry a tag"),
    ("tuning-output-digest", TUN, {"tuning.output.image": "myregistry.azurecr.io/a@sha256:" + "a" * 64}, "tuning.output.image", "cannot carry a digest"),
    ("tuning-config-bad-name", TUN, {"tuning.config": "My Config"}, "tuning.config", "not a ConfigMap name"),
    ("tuning-qlora-gpu-too-small", TUN, {"resource.instanceType": "Standard_NV6ads_A10_v5"}, "resource.instanceType", "qlora tuning of phi-3-mini-4k-instruct needs"),
    ("tuning-template-not-allowed", TUN, {"tuning.template": {"spec": {}}}, "tuning.template", "unknown field"),
]


@pytest.mark.parametrize(
    ("base", "changes", "path", "words"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_invalid_workspace_names_field_and_reason(catalog, base, changes, path, words):
    found = errors(validate_workspace(with_changes(base, changes), catalog))
    assert found, "expected at least one error"
    at_path = [f for f in found if f.path == path]
    assert at_path, f"no error at {path}; got {[str(f) for f in found]}"
    if words is not None:
        assert any(words in f.message for f in at_path), [str(f) for f in at_path]


def test_table_is_large_and_distinct():
    assert len(CASES) >= 40
    assert len({case[0] for case in CASES}) == len(CASES)


def test_typo_in_instance_type_suggests_the_known_name(catalog):
    ws = with_changes(INF, {"resource.instanceType": "Standard_NC6s_v4"})
    # An unknown Standard_N* size is allowed (new Azure sizes appear often) with a warning.
    found = validate_workspace(ws, catalog)
    assert not errors(found)
    assert [f.severity for f in found] == ["warning"]
    assert "not in the GPU catalog" in found[0].message


def test_preset_typo_suggests_close_names(catalog):
    ws = with_changes(INF, {"inference.preset.name": "phi-3-mini-4k-instuct"})
    (found,) = errors(validate_workspace(ws, catalog))
    assert "did you mean phi-3-mini-4k-instruct" in found.message


def test_every_error_renders_path_then_message(catalog):
    ws = with_changes(INF, {"inference.preset.name": "phi-3-medium-4k-instruct"})
    (found,) = errors(validate_workspace(ws, catalog))
    assert str(found) == (
        "resource.instanceType: Standard_NC6s_v3 has 1 GPU with 16 GiB; "
        "preset phi-3-medium-4k-instruct needs 28 GiB of GPU memory in total"
    )


@pytest.mark.parametrize("bad", [None, [], "text", 42])
def test_non_mapping_documents_are_errors_not_crashes(catalog, bad):
    (found,) = validate_workspace(bad, catalog)
    assert found.path == "<object>"
    assert "must be a mapping" in found.message
