"""Generate the CustomResourceDefinitions in `crds/` from the pydantic models.

The API server needs a *structural* OpenAPI v3 schema: every node typed, no `$ref`, no
`anyOf` of different types (except int-or-string), `metadata` only as `type: object`. Pydantic
emits JSON Schema 2020-12; `structural_schema()` rewrites it into that subset. CEL rules and
other `x-kubernetes-*` markers come from the models' `json_schema_extra`, so the models are the
single source of truth. `python -m kaito_operator.api.crd --write crds/` regenerates the files;
a unit test fails when the committed files drift from the models.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from kaito_operator.api import machine, nodeclaim, workspace

#: JSON-Schema keywords that have no place (or a different meaning) in a CRD schema.
_DROPPED = {"title", "$defs", "additionalProperties", "const", "discriminator"}
#: Keywords copied through unchanged.
_KEPT = {
    "type", "description", "format", "pattern", "enum", "default", "minimum", "maximum",
    "minLength", "maxLength", "minItems", "maxItems", "maxProperties", "required",
    "x-kubernetes-validations", "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-int-or-string", "x-kubernetes-list-type", "x-kubernetes-map-type",
}


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Inline a `$ref`, keeping sibling keys (field-level rules sit beside the ref)."""
    if "$ref" not in node:
        return node
    target = dict(defs[node["$ref"].rsplit("/", 1)[-1]])
    siblings = {k: v for k, v in node.items() if k != "$ref"}
    rules = target.get("x-kubernetes-validations", []) + siblings.pop(
        "x-kubernetes-validations", []
    )
    target.update(siblings)
    if rules:
        target["x-kubernetes-validations"] = rules
    return target


def _strip_optional(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """`anyOf: [X, null]` (an optional field) becomes X plus the field-level keys."""
    variants = node.get("anyOf")
    if not variants:
        return node
    non_null = [v for v in variants if v.get("type") != "null"]
    if len(non_null) != 1 or len(non_null) == len(variants):
        return node
    merged = _resolve(dict(non_null[0]), defs)
    for key, value in node.items():
        if key == "anyOf":
            continue
        if key == "x-kubernetes-validations":
            merged[key] = merged.get(key, []) + value
        else:
            merged[key] = value
    if merged.get("default", ...) is None:
        del merged["default"]
    return merged


def structural_schema(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Rewrite one pydantic JSON-Schema node into a structural OpenAPI v3 node."""
    node = _strip_optional(_resolve(node, defs), defs)
    out: dict[str, Any]
    if node.get("x-kubernetes-int-or-string"):
        out = {"x-kubernetes-int-or-string": True}
        if "description" in node:
            out["description"] = node["description"]
        return out
    if node.get("x-kubernetes-preserve-unknown-fields"):
        out = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        if "description" in node:
            out["description"] = node["description"]
        return out
    if "anyOf" in node:
        raise ValueError(f"not structural: anyOf of several types: {node['anyOf']}")
    out = {}
    for key, value in node.items():
        if key in _KEPT:
            out[key] = value
        elif key == "const":
            out["enum"] = [value]
        elif key not in _DROPPED and key not in {"properties", "items"}:
            raise ValueError(f"unsupported JSON-Schema keyword {key!r} in {node}")
    if "default" in out and isinstance(out["default"], list | dict):
        del out["default"]  # the API server would apply them to every object; keep it lean
    if "properties" in node:
        out["type"] = "object"
        out["properties"] = {
            name: structural_schema(sub, defs) for name, sub in node["properties"].items()
        }
    elif node.get("type") == "object":
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            out["additionalProperties"] = structural_schema(extra, defs)
        else:
            out["x-kubernetes-preserve-unknown-fields"] = True
    if "items" in node:
        out["items"] = structural_schema(node["items"], defs)
    if "type" not in out:
        raise ValueError(f"not structural: untyped node {node}")
    return {key: out[key] for key in sorted(out, key=_key_order)}


_FIRST = ("description", "type")


def _key_order(key: str) -> tuple[int, str]:
    """Description and type first, nested schemas last, as CRD readers expect."""
    if key in _FIRST:
        return (_FIRST.index(key), "")
    if key in ("properties", "items", "additionalProperties"):
        return (3, key)
    return (2, key)


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The structural schema of a top-level resource model."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.get("$defs", {})
    schema = structural_schema(raw, defs)
    props = schema["properties"]
    props["apiVersion"] = {"type": "string", "description": "API version of the object."}
    props["kind"] = {"type": "string", "description": "Kind of the object."}
    props["metadata"] = {"type": "object"}
    schema.pop("required", None)
    required = [
        name for name in (raw.get("required") or []) if name not in ("apiVersion", "kind")
    ]
    if required:
        schema["required"] = required
    return schema


def _condition_column(type_: str, priority: int = 0) -> dict[str, Any]:
    column: dict[str, Any] = {
        "name": type_,
        "type": "string",
        "jsonPath": f'.status.conditions[?(@.type=="{type_}")].status',
    }
    if priority:
        column["priority"] = priority
    return column


def workspace_crd() -> dict[str, Any]:
    """The Workspace CRD: short names, printer columns of docs/design.md §2, status subresource."""
    columns = [
        {"name": "Instance", "type": "string", "jsonPath": ".resource.instanceType"},
        _condition_column("ResourceReady"),
        _condition_column("InferenceReady"),
        _condition_column("JobStarted", priority=1),
        _condition_column("WorkspaceReady"),
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    return _crd(
        group=workspace.API_GROUP,
        version=workspace.API_VERSION,
        kind=workspace.KIND,
        plural="workspaces",
        scope="Namespaced",
        short_names=["wk", "wks"],
        categories=["kaito"],
        columns=columns,
        schema=model_schema(workspace.Workspace),
    )


def machine_crd() -> dict[str, Any]:
    """The Machine CRD as Karpenter v1alpha5 defines it (cluster-scoped)."""
    label = machine.INSTANCE_TYPE_LABEL.replace(".", "\\.")
    columns = [
        {"name": "Type", "type": "string", "jsonPath": f".metadata.labels.{label}"},
        {
            "name": "Zone",
            "type": "string",
            "jsonPath": ".metadata.labels.topology\\.kubernetes\\.io/zone",
        },
        {"name": "Node", "type": "string", "jsonPath": ".status.nodeName"},
        _condition_column("Ready"),
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        {
            "name": "Capacity",
            "type": "string",
            "jsonPath": ".metadata.labels.karpenter\\.sh/capacity-type",
            "priority": 1,
        },
        {
            "name": "Template",
            "type": "string",
            "jsonPath": ".spec.machineTemplateRef.name",
            "priority": 1,
        },
    ]
    return _crd(
        group=machine.API_GROUP,
        version=machine.API_VERSION,
        kind=machine.KIND,
        plural="machines",
        scope="Cluster",
        short_names=[],
        categories=["karpenter"],
        columns=columns,
        schema=model_schema(machine.Machine),
    )


def nodeclaim_crd() -> dict[str, Any]:
    """The NodeClaim CRD (`karpenter.sh/v1`, cluster-scoped), with the printer columns of
    Karpenter's own CRD, so `kubectl get nodeclaims` reads the same whichever CRD is installed."""

    def label(key: str) -> str:
        return ".metadata.labels." + key.replace(".", "\\.")

    columns = [
        {"name": "Type", "type": "string", "jsonPath": label(nodeclaim.INSTANCE_TYPE_LABEL)},
        {"name": "Capacity", "type": "string", "jsonPath": label("karpenter.sh/capacity-type")},
        {"name": "Zone", "type": "string", "jsonPath": label("topology.kubernetes.io/zone")},
        {"name": "Node", "type": "string", "jsonPath": ".status.nodeName"},
        _condition_column(nodeclaim.READY),
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        {"name": "ImageID", "type": "string", "jsonPath": ".status.imageID", "priority": 1},
        {"name": "ID", "type": "string", "jsonPath": ".status.providerID", "priority": 1},
        {
            "name": "NodePool",
            "type": "string",
            "jsonPath": label(nodeclaim.NODEPOOL_LABEL),
            "priority": 1,
        },
        {
            "name": "NodeClass",
            "type": "string",
            "jsonPath": ".spec.nodeClassRef.name",
            "priority": 1,
        },
        _condition_column("Drifted", priority=1),
    ]
    return _crd(
        group=nodeclaim.API_GROUP,
        version=nodeclaim.API_VERSION,
        kind=nodeclaim.KIND,
        plural="nodeclaims",
        scope="Cluster",
        short_names=[],
        categories=["karpenter"],
        columns=columns,
        schema=model_schema(nodeclaim.NodeClaim),
    )


def _crd(
    *,
    group: str,
    version: str,
    kind: str,
    plural: str,
    scope: str,
    short_names: list[str],
    categories: list[str],
    columns: list[dict[str, Any]],
    schema: dict[str, Any],
) -> dict[str, Any]:
    names: dict[str, Any] = {
        "kind": kind,
        "listKind": f"{kind}List",
        "plural": plural,
        "singular": kind.lower(),
        "categories": categories,
    }
    if short_names:
        names["shortNames"] = short_names
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "names": names,
            "scope": scope,
            "versions": [
                {
                    "name": version,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


CRDS = {
    "kaito.sh_workspaces.yaml": workspace_crd,
    "karpenter.sh_machines.yaml": machine_crd,
    "karpenter.sh_nodeclaims.yaml": nodeclaim_crd,
}

_HEADER = "# Generated by `python -m kaito_operator.api.crd --write crds/`; do not edit.\n"


class _Dumper(yaml.SafeDumper):
    """Writes shared sub-schemas out in full: CRD tooling does not expect YAML anchors."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def render(crd: dict[str, Any]) -> str:
    """YAML text of a CRD, as committed under `crds/`."""
    body = yaml.dump(crd, Dumper=_Dumper, sort_keys=False, width=100)
    return _HEADER + "---\n" + body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", metavar="DIR", type=Path, help="write the CRD files here")
    parser.add_argument(
        "--only",
        metavar="FILE",
        action="append",
        choices=sorted(CRDS),
        help="only this CRD file (repeatable); default: all of them",
    )
    args = parser.parse_args(argv)
    for filename, build in CRDS.items():
        if args.only and filename not in args.only:
            continue
        text = render(build())
        if args.write:
            args.write.mkdir(parents=True, exist_ok=True)
            (args.write / filename).write_text(text)
            print(f"wrote {args.write / filename}")
        else:
            sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
