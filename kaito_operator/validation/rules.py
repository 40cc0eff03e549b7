"""The rules over a parsed Workspace: structure, catalog fit, policy, and updates.

The CRD's CEL rules enforce the structural ones in the API server; they are repeated here so
that `kaito validate`, the webhook and the controller give the same answer without one.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator

from kaito_operator.api.workspace import (
    MAX_NAME_LENGTH,
    DataDestination,
    DataSource,
    InferenceSpec,
    TuningSpec,
    Workspace,
)
from kaito_operator.catalog import Catalog, fit_preset, fit_tuning
from kaito_operator.catalog.models import GpuSku, ModelPreset
from kaito_operator.validation import syntax
from kaito_operator.validation.findings import Finding, show
from kaito_operator.validation.policy import DEFAULT_POLICY, Policy, check_template, check_volume
from kaito_operator.validation.template import check_labels, check_template_shape

BYPASS_ANNOTATION = "kaito.sh/bypass-resource-checks"
ENABLE_LB_ANNOTATION = "kaito.sh/enablelb"
#: Volume types the kubelet mounts read-only: no place for the tuning output.
READ_ONLY_VOLUME_TYPES = frozenset({"configMap", "secret", "downwardAPI", "projected"})
#: Most labels in `resource.labelSelector.matchLabels` (each is put on every GPU node).
MAX_MATCH_LABELS = 64


def _error(path: str, message: str) -> Finding:
    return Finding(path, message)


def _warning(path: str, message: str) -> Finding:
    return Finding(path, message, "warning")


def check_metadata(ws: Workspace) -> Iterator[Finding]:
    name = ws.metadata.name
    if not name:
        yield _error("metadata.name", "is required")
    elif problem := syntax.dns_1035_label(name, MAX_NAME_LENGTH):
        yield _error("metadata.name", f"{name!r} is not valid: {problem}")
    annotations = ws.metadata.annotations or {}
    lb = annotations.get(ENABLE_LB_ANNOTATION)
    if lb is not None and lb not in ("True", "False", "true", "false"):
        yield _error(
            f"metadata.annotations[{ENABLE_LB_ANNOTATION}]",
            f"{lb!r} is not valid: must be \"True\" or \"False\"",
        )


def check_resource(ws: Workspace) -> Iterator[Finding]:
    selector = ws.resource.label_selector
    labels = selector.match_labels or {}
    if not labels:
        yield _error(
            "resource.labelSelector.matchLabels",
            "is required: the labels are put on the GPU nodes and select them",
        )
    if len(labels) > MAX_MATCH_LABELS:
        yield _error("resource.labelSelector.matchLabels",
                     f"has {len(labels)} labels: at most {MAX_MATCH_LABELS} allowed")
    yield from check_labels("resource.labelSelector.matchLabels", labels)
    for i, expr in enumerate(selector.match_expressions or []):
        path = f"resource.labelSelector.matchExpressions[{i}]"
        if problem := syntax.label_key(expr.key):
            yield _error(f"{path}.key", f"{show(expr.key)}: {problem}")
        values = expr.values or []
        if expr.operator in ("In", "NotIn") and not values:
            yield _error(f"{path}.values", f"is required with operator {expr.operator}")
        if expr.operator in ("Exists", "DoesNotExist") and values:
            yield _error(f"{path}.values", f"must be empty with operator {expr.operator}")
        for j, value in enumerate(values):
            if problem := syntax.label_value(value):
                yield _error(f"{path}.values[{j}]", f"{show(value)}: {problem}")
    instance_type = ws.resource.instance_type
    if problem := syntax.label_value(instance_type):
        yield _error("resource.instanceType",
                     f"{show(instance_type)} is not valid: it labels the nodes, so {problem}")
    seen: set[str] = set()
    for i, node in enumerate(ws.resource.preferred_nodes or []):
        path = f"resource.preferredNodes[{i}]"
        if problem := syntax.dns_subdomain(node):
            yield _error(path, f"{node!r} is not a node name: {problem}")
        if node in seen:
            yield _error(path, f"{node!r} is listed twice")
        seen.add(node)


def _sku(ws: Workspace, catalog: Catalog, bypass: bool) -> tuple[GpuSku | None, list[Finding]]:
    """Look the instance type up; unknown Azure GPU sizes are allowed with a warning."""
    name = ws.resource.instance_type
    sku = catalog.sku(name)
    if sku is not None:
        return sku, []
    path = "resource.instanceType"
    if name.startswith("Standard_N") or bypass:
        return None, [_warning(path, f"{name} is not in the GPU catalog; GPU checks skipped")]
    close = difflib.get_close_matches(name, list(catalog.skus), n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else " (`kaito skus` lists them)"
    return None, [_error(path, f"{name} is not a known GPU instance type{hint}")]


def _preset(path: str, name: str, catalog: Catalog) -> tuple[ModelPreset | None, list[Finding]]:
    preset = catalog.preset(name)
    if preset is not None:
        return preset, []
    close = difflib.get_close_matches(name, list(catalog.presets), n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else " (`kaito presets` lists them)"
    return None, [_error(path, f"{name!r} is not a known preset{hint}")]


def check_inference(
    ws: Workspace, spec: InferenceSpec, catalog: Catalog, policy: Policy
) -> Iterator[Finding]:
    if (spec.preset is None) == (spec.template is None):
        yield _error("inference", "exactly one of preset or template must be set")
    if spec.template is not None:
        yield from check_template_shape("inference.template", spec.template)
        yield from check_template("inference.template", spec.template, policy)
    if spec.template is not None and spec.adapters:
        yield _error("inference.adapters", "adapters need a preset, not a template")
    names: set[str] = set()
    for i, adapter in enumerate(spec.adapters or []):
        path = f"inference.adapters[{i}].source"
        if adapter.source.name in names:
            yield _error(f"{path}.name", f"{adapter.source.name!r} is used by another adapter")
        names.add(adapter.source.name)
        if problem := syntax.image_reference(adapter.source.image):
            yield _error(f"{path}.image", f"{adapter.source.image!r} {problem}")
        yield from _secret_names(f"{path}.imagePullSecrets", adapter.source.image_pull_secrets)
    bypass = _bypass(ws)
    sku, found = _sku(ws, catalog, bypass)
    yield from found
    if spec.preset is None:
        return
    preset, found = _preset("inference.preset.name", spec.preset.name, catalog)
    yield from found
    options = spec.preset.preset_options
    if spec.preset.access_mode == "private" and not (options and options.image):
        yield _error("inference.preset.presetOptions.image", "is required for a private preset")
    if options and options.image and (problem := syntax.image_reference(options.image)):
        yield _error("inference.preset.presetOptions.image", f"{options.image!r} {problem}")
    if options:
        yield from _secret_names("inference.preset.presetOptions.imagePullSecrets",
                                 options.image_pull_secrets)
    if preset is None or sku is None:
        return
    fit = fit_preset(preset, sku, ws.resource.count)
    if not fit.ok:
        yield Finding("resource.instanceType", fit.reason, "warning" if bypass else "error")


def check_tuning(
    ws: Workspace, spec: TuningSpec, catalog: Catalog, policy: Policy
) -> Iterator[Finding]:
    if ws.resource.count != 1:
        yield _error("resource.count", f"{ws.resource.count} is not valid: tuning needs count 1")
    yield from _check_input(spec.input)
    yield from _check_output(spec.output)
    if spec.input.volume_source is not None:
        yield from check_volume("tuning.input.volumeSource", spec.input.volume_source, policy,
                                named=False)
    if spec.output.volume_source is not None:
        yield from check_volume("tuning.output.volumeSource", spec.output.volume_source, policy,
                                named=False)
        for kind in sorted(READ_ONLY_VOLUME_TYPES & spec.output.volume_source.keys()):
            yield _error(f"tuning.output.volumeSource.{kind}",
                         f"{kind} volumes are read-only: the adapter cannot be written there "
                         "(use persistentVolumeClaim, azureFile, nfs, csi or emptyDir)")
    if spec.config is not None and (problem := syntax.dns_subdomain(spec.config)):
        yield _error("tuning.config", f"{spec.config!r} is not a ConfigMap name: {problem}")
    bypass = _bypass(ws)
    sku, found = _sku(ws, catalog, bypass)
    yield from found
    preset, found = _preset("tuning.preset.name", spec.preset.name, catalog)
    yield from found
    if preset is None:
        return
    if not preset.tuning.supported:
        yield _error("tuning.preset.name", f"preset {preset.name} does not support tuning")
        return
    if spec.method not in preset.tuning_methods:
        yield _error(
            "tuning.method",
            f"{spec.method!r} is not supported by {preset.name}: "
            f"use one of {', '.join(preset.tuning_methods)}",
        )
        return
    if sku is not None and not (fit := fit_tuning(preset, sku, spec.method)).ok:
        yield Finding("resource.instanceType", fit.reason, "warning" if bypass else "error")


def _check_input(source: DataSource) -> Iterator[Finding]:
    given = [
        name
        for name, value in (
            ("urls", source.urls),
            ("image", source.image),
            ("volumeSource", source.volume_source),
        )
        if value is not None
    ]
    if len(given) != 1:
        got = f"got {', '.join(given)}" if given else "got none"
        yield _error("tuning.input", f"exactly one of urls, image or volumeSource: {got}")
    for i, url in enumerate(source.urls or []):
        if problem := syntax.download_url(url):
            yield _error(f"tuning.input.urls[{i}]", f"{url!r} {problem}")
    if source.image is not None and (problem := syntax.image_reference(source.image)):
        yield _error("tuning.input.image", f"{source.image!r} {problem}")
    yield from _secret_names("tuning.input.imagePullSecrets", source.image_pull_secrets)


def _check_output(dest: DataDestination) -> Iterator[Finding]:
    if (dest.image is None) == (dest.volume_source is None):
        yield _error("tuning.output", "exactly one of image or volumeSource must be set")
    if dest.image is not None:
        if problem := syntax.push_reference(dest.image):
            yield _error("tuning.output.image", f"{dest.image!r} {problem}")
        if not dest.image_push_secret:
            yield _error(
                "tuning.output.imagePushSecret",
                "is required with output.image: a docker-registry Secret that can push there",
            )
    if dest.image_push_secret and (problem := syntax.dns_subdomain(dest.image_push_secret)):
        yield _error(
            "tuning.output.imagePushSecret", f"{dest.image_push_secret!r}: {problem}"
        )


def _secret_names(path: str, names: list[str] | None) -> Iterator[Finding]:
    for i, name in enumerate(names or []):
        if problem := syntax.dns_subdomain(name):
            yield _error(f"{path}[{i}]", f"{name!r} is not a Secret name: {problem}")


def _bypass(ws: Workspace) -> bool:
    value = (ws.metadata.annotations or {}).get(BYPASS_ANNOTATION, "")
    return value.lower() == "true"


def check_workspace(
    ws: Workspace, catalog: Catalog, policy: Policy = DEFAULT_POLICY
) -> Iterator[Finding]:
    yield from check_metadata(ws)
    yield from check_resource(ws)
    if (ws.inference is None) == (ws.tuning is None):
        yield _error("<object>", "exactly one of inference or tuning must be set")
    if ws.inference is not None:
        yield from check_inference(ws, ws.inference, catalog, policy)
    if ws.tuning is not None:
        yield from check_tuning(ws, ws.tuning, catalog, policy)


def check_update(old: Workspace, new: Workspace) -> Iterator[Finding]:
    """Fields that cannot change after creation (the CRD's transition rules)."""
    if (old.inference is None) != (new.inference is None):
        yield _error("<object>", "cannot switch a Workspace between inference and tuning")
    immutable = [
        ("resource.instanceType", old.resource.instance_type, new.resource.instance_type),
        ("resource.count", old.resource.count, new.resource.count),
        (
            "resource.labelSelector",
            old.resource.label_selector.model_dump(exclude_none=True),
            new.resource.label_selector.model_dump(exclude_none=True),
        ),
    ]
    if old.inference is not None and new.inference is not None:
        if (old.inference.preset is None) != (new.inference.preset is None):
            yield _error("inference", "cannot switch between preset and template")
        elif old.inference.preset and new.inference.preset:
            immutable.append(
                ("inference.preset.name", old.inference.preset.name, new.inference.preset.name)
            )
    if old.tuning is not None and new.tuning is not None:
        immutable.append(("tuning.preset.name", old.tuning.preset.name, new.tuning.preset.name))
        immutable.append(("tuning.method", old.tuning.method, new.tuning.method))
    for path, before, after in immutable:
        if before != after:
            yield _error(path, f"is immutable: cannot change {before!r} to {after!r}")
