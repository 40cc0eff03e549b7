"""Shape checks of `inference.template`, so that the pod the operator builds from it is one
the API server accepts.

The template is kept as written (the CRD preserves its fields), and the operator merges its own
labels, node affinity and tolerations into it: the parts it reads or merges into must have the
types a PodTemplateSpec has, and the names and sizes the API server checks are checked here.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from kaito_operator.validation import syntax
from kaito_operator.validation.findings import Finding, show

#: The API server's limit on the total size of an object's annotations.
MAX_ANNOTATIONS_BYTES = 256 * 1024
#: Deepest nesting of mappings and lists a template may have (a PodTemplateSpec needs ~12).
MAX_DEPTH = 64
#: Most values a template may hold (the API server stores objects of at most ~1.5 MiB).
MAX_NODES = 100_000
_CONTAINER_LISTS = ("initContainers", "containers")


def _typed(path: str, value: Any, wanted: type, noun: str) -> Finding | None:
    if isinstance(value, wanted) and not (wanted is int and isinstance(value, bool)):
        return None
    return Finding(path, f"{show(value)} is not valid: must be {noun}")


def _check_metadata(path: str, metadata: Any) -> Iterator[Finding]:
    if problem := _typed(path, metadata, Mapping, "a mapping"):
        yield problem
        return
    labels = metadata.get("labels")
    if labels is not None:
        if problem := _typed(f"{path}.labels", labels, Mapping, "a mapping"):
            yield problem
        else:
            yield from check_labels(f"{path}.labels", labels)
    annotations = metadata.get("annotations")
    if annotations is not None:
        if problem := _typed(f"{path}.annotations", annotations, Mapping, "a mapping"):
            yield problem
        else:
            yield from check_annotations(f"{path}.annotations", annotations)


def _string_entries(path: str, entries: Mapping[Any, Any]
                    ) -> Iterator[tuple[str, str] | Finding]:
    """Each entry of a labels/annotations map with a string key that is a valid label key and
    a string value; the findings for the others."""
    for key, value in entries.items():
        if not isinstance(key, str):
            yield Finding(path, f"key {show(key)} is not valid: must be a string")
            continue
        if problem := syntax.label_key(key):
            yield Finding(f"{path}[{key}]", f"{show(key)}: {problem}")
        if not isinstance(value, str):
            yield Finding(f"{path}[{key}]", f"{show(value)} is not valid: must be a string "
                          "(quote it)")
            continue
        yield key, value


def check_labels(path: str, labels: Mapping[Any, Any]) -> Iterator[Finding]:
    """Label keys and values as the API server checks them."""
    for entry in _string_entries(path, labels):
        if isinstance(entry, Finding):
            yield entry
        elif problem := syntax.label_value(entry[1]):
            yield Finding(f"{path}[{entry[0]}]", f"{show(entry[1])}: {problem}")


def check_annotations(path: str, annotations: Mapping[Any, Any]) -> Iterator[Finding]:
    """Annotation keys, string values and the total size limit."""
    size = 0
    for entry in _string_entries(path, annotations):
        if isinstance(entry, Finding):
            yield entry
        else:
            size += len(entry[0].encode()) + len(entry[1].encode())
    if size > MAX_ANNOTATIONS_BYTES:
        yield Finding(path, f"total size {size} bytes is too large: at most "
                      f"{MAX_ANNOTATIONS_BYTES} bytes")


def _check_affinity(path: str, affinity: Any) -> Iterator[Finding]:
    """The node affinity the operator extends: mappings and lists where it merges."""
    if problem := _typed(path, affinity, Mapping, "a mapping"):
        yield problem
        return
    node = affinity.get("nodeAffinity")
    if node is None:
        return
    if problem := _typed(f"{path}.nodeAffinity", node, Mapping, "a mapping"):
        yield problem
        return
    key = "requiredDuringSchedulingIgnoredDuringExecution"
    required = node.get(key)
    if required is None:
        return
    where = f"{path}.nodeAffinity.{key}"
    if problem := _typed(where, required, Mapping, "a mapping"):
        yield problem
        return
    terms = required.get("nodeSelectorTerms")
    if terms is None:
        return
    if problem := _typed(f"{where}.nodeSelectorTerms", terms, list, "a list"):
        yield problem
        return
    for i, term in enumerate(terms):
        term_path = f"{where}.nodeSelectorTerms[{i}]"
        if problem := _typed(term_path, term, Mapping, "a mapping"):
            yield problem
        elif (exprs := term.get("matchExpressions")) is not None and (
            problem := _typed(f"{term_path}.matchExpressions", exprs, list, "a list")
        ):
            yield problem


def _check_container(path: str, container: Any, names: set[str]) -> Iterator[Finding]:
    if problem := _typed(path, container, Mapping, "a mapping (a Container)"):
        yield problem
        return
    name = container.get("name")
    if name is None:
        yield Finding(f"{path}.name", "is required")
    elif problem := _typed(f"{path}.name", name, str, "a string"):
        yield problem
    elif reason := syntax.dns_label(name):
        yield Finding(f"{path}.name", f"{show(name)} is not valid: {reason}")
    elif name in names:
        yield Finding(f"{path}.name", f"{show(name)} is used by another container")
    else:
        names.add(name)
    image = container.get("image")
    if image is None:
        yield Finding(f"{path}.image", "is required")
    elif problem := _typed(f"{path}.image", image, str, "a string"):
        yield problem
    elif reason := syntax.image_reference(image):
        yield Finding(f"{path}.image", f"{show(image)} {reason}")
    ports = container.get("ports")
    if ports is None:
        return
    if problem := _typed(f"{path}.ports", ports, list, "a list"):
        yield problem
        return
    for i, port in enumerate(ports):
        port_path = f"{path}.ports[{i}]"
        if problem := _typed(port_path, port, Mapping, "a mapping"):
            yield problem
            continue
        number = port.get("containerPort")
        if number is None:
            yield Finding(f"{port_path}.containerPort", "is required")
        elif problem := _typed(f"{port_path}.containerPort", number, int, "an integer"):
            yield problem
        elif not 1 <= number <= 65535:
            yield Finding(f"{port_path}.containerPort",
                          f"{number} is not valid: must be between 1 and 65535")


def _size_problem(value: Any) -> str | None:
    """Whether mappings and lists nest deeper than `MAX_DEPTH`, or hold more than `MAX_NODES`
    values (counting shared ones each time they appear). Iterative and bounded by both limits,
    whatever the input."""
    stack = [(value, 0)]
    seen = 0
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            return f"nests deeper than {MAX_DEPTH} levels: not a pod template"
        children = list(node.values()) if isinstance(node, Mapping) else node
        seen += len(children)
        if seen > MAX_NODES:
            return f"holds more than {MAX_NODES} values: too large for a pod template"
        stack.extend((child, depth + 1) for child in children
                     if isinstance(child, Mapping | list))
    return None


def check_template_shape(path: str, template: Any) -> Iterator[Finding]:
    """Types, names and sizes of a PodTemplateSpec where the API server would refuse it."""
    if problem := _typed(path, template, Mapping, "a mapping (a PodTemplateSpec)"):
        yield problem
        return
    if too_large := _size_problem(template):
        yield Finding(path, too_large)
        return
    if "metadata" in template:
        yield from _check_metadata(f"{path}.metadata", template["metadata"])
    spec = template.get("spec")
    if spec is None:
        yield Finding(f"{path}.spec", "is required: a pod spec with at least one container")
        return
    if problem := _typed(f"{path}.spec", spec, Mapping, "a mapping (a PodSpec)"):
        yield problem
        return
    base = f"{path}.spec"
    if "affinity" in spec:
        yield from _check_affinity(f"{base}.affinity", spec["affinity"])
    tolerations = spec.get("tolerations")
    if tolerations is not None:
        if problem := _typed(f"{base}.tolerations", tolerations, list, "a list"):
            yield problem
        else:
            for i, toleration in enumerate(tolerations):
                if problem := _typed(f"{base}.tolerations[{i}]", toleration, Mapping,
                                     "a mapping"):
                    yield problem
    if spec.get("ephemeralContainers"):
        yield Finding(f"{base}.ephemeralContainers",
                      "is not allowed in a pod template (the API server refuses it)")
    containers = spec.get("containers")
    if not containers:
        yield Finding(f"{base}.containers", "is required: at least one container")
    names: set[str] = set()
    for field in _CONTAINER_LISTS:
        items = spec.get(field)
        if items is None:
            continue
        if problem := _typed(f"{base}.{field}", items, list, "a list"):
            yield problem
            continue
        for i, container in enumerate(items):
            yield from _check_container(f"{base}.{field}[{i}]", container, names)
