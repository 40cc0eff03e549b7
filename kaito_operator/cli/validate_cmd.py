"""`kaito validate FILE...`: the webhook's checks, offline.

Exit status: 0 when every Workspace is valid, 1 when one is invalid (or a file holds none),
2 when a file cannot be read or parsed (missing, not a regular file, over the size limit, not
UTF-8/UTF-16 text, not YAML, or over the YAML nesting/alias limits). Each problem with a file
is one line; nothing the files hold can make the command print a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from typing import Any, TextIO

from kaito_operator.catalog import Catalog
from kaito_operator.cli.inputs import InputError, read_text
from kaito_operator.cli.safe_yaml import YAMLInputError, load_documents
from kaito_operator.validation import Finding, errors, validate_workspace

MAX_SHOWN = 1000  # characters of one finding's message in the report
_NAME_MAX = 253


@dataclass
class FileCheck:
    """What one input file gave: an `error` when it could not be read or parsed, otherwise
    its documents and the findings of each Workspace (other kinds are skipped)."""

    name: str
    error: str | None = None
    documents: list[Any] = field(default_factory=list)
    results: list[tuple[str, list[Finding]]] = field(default_factory=list)

    @property
    def invalid(self) -> bool:
        return any(errors(found) for _, found in self.results)


def read_documents(name: str) -> list[Any]:
    """The YAML documents of file `name` ("-": standard input); `InputError` when the file
    cannot be read, decoded or parsed within the limits."""
    text = read_text(name)
    try:
        return load_documents(text)
    except YAMLInputError as exc:
        raise InputError(str(exc)) from None


def printable(text: str, limit: int = MAX_SHOWN) -> str:
    """`text` cut to `limit` characters, with control and unpaired surrogate characters
    escaped so that no input can move the terminal's cursor or break the output encoding."""
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def emit(text: str, stream: TextIO) -> None:
    """Write `text`, escaping what the stream's encoding cannot represent (an ASCII terminal,
    a file name that is not valid UTF-8) instead of failing."""
    encoding = getattr(stream, "encoding", None) or "utf-8"
    stream.write(text.encode(encoding, "backslashreplace").decode(encoding))


def _label(doc: Any, index: int) -> str:
    metadata = doc.get("metadata") if isinstance(doc, dict) else None
    name = metadata.get("name") if isinstance(metadata, dict) else None
    if isinstance(name, str) and 0 < len(name) <= _NAME_MAX and name.isprintable():
        return f"workspace/{name}"
    return f"document {index + 1}"


def _is_other_kind(doc: Any) -> bool:
    return isinstance(doc, dict) and doc.get("kind") not in (None, "Workspace")


def check_documents(docs: list[Any], catalog: Catalog) -> list[tuple[str, list[Finding]]]:
    """Findings for each Workspace among `docs`; documents of other kinds are skipped, and a
    document that is not a mapping is reported as invalid."""
    results = []
    for index, doc in enumerate(docs):
        if _is_other_kind(doc):
            continue
        results.append((_label(doc, index), validate_workspace(doc, catalog)))
    if not results:
        results.append(("file", [Finding("<file>", "holds no Workspace")]))
    return results


def check_file(name: str, catalog: Catalog) -> FileCheck:
    """Read, parse and validate one input."""
    try:
        docs = read_documents(name)
    except InputError as exc:
        return FileCheck(name, error=str(exc))
    return FileCheck(name, documents=docs, results=check_documents(docs, catalog))


def exit_status(checks: list[FileCheck]) -> int:
    if any(c.error is not None for c in checks):
        return 2
    return 1 if any(c.invalid for c in checks) else 0


def _finding_json(finding: Finding) -> dict[str, str]:
    return {"path": finding.path, "message": finding.message[:MAX_SHOWN],
            "severity": finding.severity}


def _json_report(checks: list[FileCheck]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for check in checks:
        if check.error is not None:
            out.append({"file": check.name, "object": "file", "valid": False,
                        "readable": False,
                        "findings": [_finding_json(Finding("<file>", check.error))]})
            continue
        out += [{"file": check.name, "object": label, "valid": not errors(found),
                 "readable": True, "findings": [_finding_json(f) for f in found]}
                for label, found in check.results]
    return out


def _text_report(checks: list[FileCheck]) -> list[str]:
    lines = []
    for check in checks:
        name = printable(check.name)
        if check.error is not None:
            lines.append(f"{name}: unreadable: {printable(check.error)}")
            continue
        for label, found in check.results:
            status = "invalid" if errors(found) else "valid"
            lines.append(f"{name}: {label}: {status}")
            lines += [f"  {finding.severity}: {printable(str(finding))}" for finding in found]
    return lines


def validate_command(args: argparse.Namespace, catalog: Catalog) -> int:
    checks = [check_file(name, catalog) for name in args.files]
    if args.output == "json":
        emit(json.dumps(_json_report(checks), indent=2) + "\n", sys.stdout)
    else:
        emit("".join(line + "\n" for line in _text_report(checks)), sys.stdout)
    return exit_status(checks)
