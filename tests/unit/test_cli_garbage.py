"""`kaito validate` and `kaito render` on hostile input: every case ends within a bound with the
expected exit status (2 unreadable, 1 invalid, 0 valid), a specific one-line message, and no
traceback."""

from __future__ import annotations

import codecs
import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from kaito_operator.cli.inputs import MAX_INPUT_BYTES
from kaito_operator.cli.main import main
from tests.factories import inference_workspace

ROOT = Path(__file__).resolve().parents[2]
BOUND_S = 20  # no case comes near this; it only turns a hang into a failure


class Hung(Exception):
    pass


@contextmanager
def bounded(seconds: float) -> Iterator[None]:
    """Raise `Hung` in this (the main) thread if the block runs longer than `seconds`."""

    def expire(signum, frame):
        raise Hung(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def ws_text(**changes) -> str:
    ws = inference_workspace()
    ws.update(changes)
    return yaml.safe_dump(ws, sort_keys=False)


VALID = ws_text()
LAUGHS = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(9)
)


def write(content: bytes | str) -> Callable[[Path], str]:
    def make(tmp: Path) -> str:
        path = tmp / "input.yaml"
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return str(path)

    return make


def twenty_mb(tmp: Path) -> str:
    path = tmp / "big.yaml"
    with path.open("w") as f:
        f.write("items:\n")
        line = "- {a: 1, b: [1, 2, 3]}\n"
        f.write(line * (20 * 1024 * 1024 // len(line) + 1))
    return str(path)


def many_nodes_under_the_size_limit(tmp: Path) -> str:
    path = tmp / "nodes.yaml"
    path.write_text("[" + "1," * (MAX_INPUT_BYTES // 2 - 8) + "1]")
    return str(path)


def fifo(tmp: Path) -> str:
    path = tmp / "fifo"
    os.mkfifo(path)
    return str(path)


def existing(path: str) -> Callable[[Path], str]:
    return lambda tmp: path


# (id, make the argument, exit status, fragment of the output)
CASES = [
    ("metadata-string", write(ws_text(metadata="oops")), 1, "metadata: 'oops' is not valid: must be a mapping"),
    ("metadata-list", write(ws_text(metadata=["a", "b"])), 1, "metadata: ['a', 'b'] is not valid: must be a mapping"),
    ("metadata-null", write(ws_text(metadata=None)), 1, "metadata: None is not valid: must be a mapping"),
    ("metadata-name-list", write(ws_text(metadata={"name": ["x"]})), 1, "metadata.name: ['x'] is not valid"),
    ("document-scalar", write("just a string\n"), 1, "<object>: must be a mapping, got str"),
    ("document-list", write("- a\n- b\n"), 1, "<object>: must be a mapping, got list"),
    ("documents-valid-and-scalar", write(VALID + "---\n42\n"), 1, "document 2: invalid"),
    ("documents-two-valid", write(VALID + "---\n" + VALID), 0, "workspace/workspace-phi-3: valid"),
    ("kind-a-mapping", write("kind: {a: 1}\n"), 1, "holds no Workspace"),
    ("empty-file", write(b""), 1, "holds no Workspace"),
    ("only-separators", write("---\n---\n# nothing\n"), 1, "holds no Workspace"),
    ("binary", write(bytes(range(256)) * 4), 2, "holds a NUL byte at offset 0"),
    ("invalid-utf8", write(b"name: caf\xc3\x28\n"), 2, "is not UTF-8 text: byte 0xc3 at offset 9"),
    ("latin1", write("name: \xe9t\xe9\n".encode("latin-1")), 2, "is not UTF-8 text: byte 0xe9"),
    ("utf16-with-bom", write(codecs.BOM_UTF16_LE + VALID.encode("utf-16-le")), 0, ": valid"),
    ("utf16-be-with-bom", write(codecs.BOM_UTF16_BE + VALID.encode("utf-16-be")), 0, ": valid"),
    ("utf16-without-bom", write(VALID.encode("utf-16-le")), 2, "without a byte-order mark"),
    ("utf16-odd-length", write(codecs.BOM_UTF16_LE + b"a\x00b"), 2, "is not valid UTF-16 text"),
    ("utf32-with-bom", write(codecs.BOM_UTF32_LE + VALID.encode("utf-32-le")), 2, "is UTF-32 text"),
    ("utf8-with-bom", write(codecs.BOM_UTF8 + VALID.encode()), 0, ": valid"),
    ("nul-in-text", write(VALID.replace("phi-3", "phi\x00-3", 1)), 2, "holds a NUL byte"),
    ("control-character", write("a: b\x07c\n"), 2, "control characters are not allowed"),
    ("brackets-10000", write("[" * 10_000 + "]" * 10_000), 2, "nesting depth"),
    ("mappings-10000", write("{a: " * 10_000 + "}" * 10_000), 2, "nesting is deeper than 100 levels"),
    ("block-nesting-200", write("".join("  " * i + "a:\n" for i in range(200)) + "  " * 200 + "b\n"), 2, "nesting is deeper than 100"),
    ("alias-depth", write("a: &a " + "[" * 60 + "]" * 60 + "\nb: " + "[" * 60 + "*a" + "]" * 60), 2, "nesting is deeper than 100"),
    ("billion-laughs", write(LAUGHS), 2, "more than 200000 nodes once aliases are expanded"),
    ("merge-key-bomb", write(LAUGHS.replace("a: &a [", "a: &a {x: [", 1).replace("lol]\n", "lol]}\n", 1) + "z: {<<: [*a], y: *j}\n"), 2, "more than 200000 nodes"),
    ("recursive-mapping", write("apiVersion: kaito.sh/v1alpha1\nkind: Workspace\nmetadata: &m {name: x, labels: *m}\n"), 2, "alias *m refers to a node that contains it"),
    ("recursive-sequence", write("a: &r [1, [2, *r]]\n"), 2, "alias *r refers to a node that contains it"),
    ("a-million-empty-documents", write("---\n" * 1_000_000), 2, "more than 10000 documents"),
    ("20-mb-of-nodes", twenty_mb, 2, "is 20.0 MiB, over the 4.0 MiB input limit"),
    ("4-mb-of-nodes", many_nodes_under_the_size_limit, 2, "more than 200000 nodes"),
    ("unclosed-bracket", write("a: [unclosed"), 2, "not valid YAML: did not find expected ',' or ']'"),
    ("tab-indent", write("a:\n\t- b\n"), 2, "not valid YAML: found character that cannot start any token"),
    ("python-tag", write("a: !!python/object/apply:os.system [id]\n"), 2, "could not determine a constructor"),
    ("month-13", write("a: 2024-13-45\n"), 2, "a value cannot be loaded: month must be in 1..12"),
    ("long-integer", write("a: " + "9" * 5000 + "\n"), 2, "a value cannot be loaded: Exceeds the limit"),
    ("bad-timestamp", write("a: !!timestamp nonsense\n"), 2, "a tagged value does not have the form its tag requires"),
    ("bad-binary", write("a: !!binary 'abc'\n"), 2, "not valid YAML: failed to decode base64"),
    ("unhashable-key", write("? [1, 2]\n: x\n"), 2, "found unhashable key"),
    ("undefined-alias", write("a: *nowhere\n"), 2, "found undefined alias"),
    ("huge-api-version", write(ws_text(apiVersion="v" * 1_000_000)), 1, "apiVersion:"),
    ("directory", lambda tmp: str(tmp), 2, "is a directory, not a file"),
    ("missing-file", lambda tmp: str(tmp / "nope.yaml"), 2, "cannot open: No such file or directory"),
    ("fifo-without-writer", fifo, 2, "is not a regular file (a FIFO, a device or a socket)"),
    ("dev-zero", existing("/dev/zero"), 2, "is not a regular file"),
    ("dev-null", existing("/dev/null"), 2, "is not a regular file"),
]


def run(capsys, *argv: str) -> tuple[int, str, float]:
    start = time.monotonic()
    with bounded(BOUND_S):
        code = main(list(argv))
    elapsed = time.monotonic() - start
    captured = capsys.readouterr()
    return code, captured.out + captured.err, elapsed


@pytest.mark.parametrize(("make", "code", "fragment"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_validate_garbage(capsys, tmp_path, make, code, fragment):
    status, out, elapsed = run(capsys, "validate", make(tmp_path))
    assert "Traceback" not in out
    assert status == code, out[:2000]
    assert fragment in out, out[:2000]
    assert elapsed < BOUND_S
    assert all(len(line) <= 1200 for line in out.splitlines())


@pytest.mark.parametrize(("make", "code"), [(c[1], c[2]) for c in CASES],
                         ids=[c[0] for c in CASES])
def test_render_garbage_uses_the_same_loader(capsys, tmp_path, make, code):
    status, out, _ = run(capsys, "render", make(tmp_path))
    assert "Traceback" not in out
    assert status == code, out[:2000]


def test_validate_garbage_as_json(capsys, tmp_path):
    import json

    status, out, _ = run(capsys, "validate", "-o", "json", str(tmp_path),
                         write(ws_text(metadata="x"))(tmp_path))
    assert status == 2
    report = json.loads(out)
    assert [(r["readable"], r["valid"]) for r in report] == [(False, False), (True, False)]
    assert report[0]["findings"][0]["message"] == "is a directory, not a file"


def test_unreadable_wins_over_invalid_and_every_file_is_reported(capsys, tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(VALID)
    bad = tmp_path / "bad.yaml"
    bad.write_text(ws_text(metadata=[]))
    status, out, _ = run(capsys, "validate", str(good), str(bad), str(tmp_path / "none.yaml"))
    assert status == 2
    assert [line.split(": ")[-1] for line in out.splitlines() if line.startswith(str(tmp_path))] \
        == ["valid", "invalid", "No such file or directory"]


def test_terminal_escapes_and_surrogates_in_names_are_escaped(capsys, tmp_path):
    path = tmp_path / "esc.yaml"
    path.write_text(VALID.replace("name: workspace-phi-3", 'name: "\\e[2Jx\\u202e"', 1))
    status, out, _ = run(capsys, "validate", str(path))
    assert status == 1
    assert "\x1b" not in out and "\u202e" not in out
    assert "document 1: invalid" in out and "\\x1b[2Jx\\u202e" in out


@pytest.mark.parametrize(
    ("data", "code", "fragment"),
    [
        (b"\x80\xfe\xfd", 2, "is not UTF-8 text: byte 0x80 at offset 0"),
        (b"x" * (MAX_INPUT_BYTES + 1), 2, "over the 4.0 MiB input limit"),
        (VALID.encode(), 0, "-: workspace/workspace-phi-3: valid"),
    ],
    ids=["invalid-utf8", "over-the-limit", "valid"],
)
def test_standard_input_is_bounded_and_decoded_the_same_way(capsys, monkeypatch, data, code,
                                                            fragment):
    monkeypatch.setattr(sys, "stdin", SimpleNamespace(buffer=io.BytesIO(data)))
    status, out, _ = run(capsys, "validate", "-")
    assert status == code and fragment in out and "Traceback" not in out


def test_command_in_a_process_with_an_ascii_terminal(tmp_path):
    """The real entry point, with output that cannot encode what the files hold: no
    traceback, every file reported, the process ends."""
    escaped = tmp_path / "escaped.yaml"
    escaped.write_text(VALID.replace("name: workspace-phi-3", 'name: "caf\\u00e9\\u202e"', 1))
    laughs = tmp_path / "laughs.yaml"
    laughs.write_text(LAUGHS)
    odd_name = tmp_path / "na\udcffme.yaml"  # a file name that is not valid UTF-8
    odd_name.write_text(VALID)
    env = {**os.environ, "PYTHONIOENCODING": "ascii", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "kaito_operator.cli.main", "validate", str(escaped), str(laughs),
         fifo(tmp_path), os.fsencode(odd_name)],
        capture_output=True, env=env, timeout=120, check=False,
    )
    out = proc.stdout.decode("ascii") + proc.stderr.decode("ascii")
    assert proc.returncode == 2, out
    assert "Traceback" not in out
    assert "caf\\xe9\\u202e" in out
    assert "more than 200000 nodes" in out and "is not a regular file" in out
    assert "na\\udcffme.yaml: workspace/workspace-phi-3: valid" in out


def test_alias_expansion_is_counted_without_building_it():
    from kaito_operator.cli.safe_yaml import Limits, YAMLInputError, check_shape

    # mapping, key a, [1, 2] (3 nodes), key b, *x (3 more): 9 nodes once expanded
    assert check_shape("a: &x [1, 2]\nb: *x\n") == 9
    assert check_shape(LAUGHS, Limits(max_nodes=10**12)) > 10**9
    with pytest.raises(YAMLInputError, match="more than 3 aliases"):
        check_shape("a: &x 1\nb: [*x, *x, *x, *x]\n", Limits(max_aliases=3))
    with pytest.raises(YAMLInputError, match="deeper than 3 levels"):
        check_shape("a: &x [[1]]\nb: [*x]\n", Limits(max_depth=3))
