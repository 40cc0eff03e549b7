"""`kaito validate FILE...`: the webhook's checks, offline."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from kaito_operator.catalog import Catalog
from kaito_operator.validation import Finding, errors, validate_workspace


def _documents(path: Path) -> list[Any]:
    text = sys.stdin.read() if str(path) == "-" else path.read_text()
    return [doc for doc in yaml.safe_load_all(text) if doc is not None]


def _label(doc: Any, index: int) -> str:
    name = doc.get("metadata", {}).get("name") if isinstance(doc, dict) else None
    return f"workspace/{name}" if name else f"document {index + 1}"


def check_file(path: Path, catalog: Catalog) -> list[tuple[str, list[Finding]]]:
    """Findings for each Workspace in the file; other kinds are skipped."""
    try:
        docs = _documents(path)
    except OSError as exc:
        return [("file", [Finding("<file>", f"cannot read: {exc.strerror}")])]
    except yaml.YAMLError as exc:
        return [("file", [Finding("<file>", f"not valid YAML: {exc}")])]
    results = []
    for index, doc in enumerate(docs):
        if isinstance(doc, dict) and doc.get("kind") not in (None, "Workspace"):
            continue
        results.append((_label(doc, index), validate_workspace(doc, catalog)))
    if not results:
        results.append(("file", [Finding("<file>", "holds no Workspace")]))
    return results


def validate_command(args: argparse.Namespace, catalog: Catalog) -> int:
    failed = False
    report = []
    for name in args.files:
        for label, found in check_file(Path(name), catalog):
            failed = failed or bool(errors(found))
            report.append((name, label, found))
    if args.output == "json":
        out = [
            {
                "file": file,
                "object": label,
                "valid": not errors(found),
                "findings": [
                    {"path": f.path, "message": f.message, "severity": f.severity}
                    for f in found
                ],
            }
            for file, label, found in report
        ]
        json.dump(out, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for file, label, found in report:
            status = "invalid" if errors(found) else "valid"
            sys.stdout.write(f"{file}: {label}: {status}\n")
            for finding in found:
                sys.stdout.write(f"  {finding.severity}: {finding}\n")
    return 1 if failed else 0
