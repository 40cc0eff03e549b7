"""What the adapter fetcher and the adapter push share (`kaito_workload`): reference parsing,
docker-config secrets, auth challenges, the registry session and the termination log."""

from __future__ import annotations

import base64
import ipaddress
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from kaito_egress.guard import EgressGuard
from kaito_egress.limits import Deadline, MiB, TransferLimits
from kaito_workload import termination
from kaito_workload.oci import (
    DOCKER_HUB,
    RegistryError,
    RegistrySession,
    basic_authorization,
    is_loopback,
    load_auths,
    parse_challenge,
    parse_reference,
    read_docker_config,
    token_url,
)
from tuning_job.errors import PushError
from tuning_job.push import load_credentials, output_reference

ROOT = Path(__file__).resolve().parents[2]
SMALL = TransferLimits(deadline_s=30.0, max_file_bytes=MiB, max_total_bytes=MiB)


def test_the_init_container_imports_stay_light():
    """What the adapter fetcher loads: no torch, no operator, no sandbox, no requests."""
    code = ("import sys, kaito_workload.oci, kaito_workload.termination, "
            "inference_server.fetch_adapter; print(' '.join(sorted({m.split('.')[0] "
            "for m in sys.modules})))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    loaded = set(done.stdout.split())
    assert {"kaito_workload", "kaito_egress", "httpx"} <= loaded
    assert not loaded & {"torch", "transformers", "kaito_operator", "kaito_sandbox", "requests"}


# --- references -------------------------------------------------------------------------------

@pytest.mark.parametrize("ref, expected", [
    ("myacr.azurecr.io/adapter:0.0.1", ("myacr.azurecr.io", "adapter", "0.0.1")),
    ("localhost:5000/a/b", ("localhost:5000", "a/b", "latest")),
    ("ubuntu", ("registry-1.docker.io", "library/ubuntu", "latest")),
    ("org/repo:t@sha256:ab", ("registry-1.docker.io", "org/repo", "sha256:ab")),
])
def test_parse_reference(ref: str, expected: tuple[str, str, str]):
    parsed = parse_reference(ref)
    assert (parsed.host, parsed.repository, parsed.version) == expected


def test_reference_parts():
    ref = parse_reference("127.0.0.1:5000/adapters/a:v1@sha256:ab")
    assert (ref.tag, ref.digest, ref.names_registry) == ("v1", "sha256:ab", True)
    assert parse_reference("org/repo").names_registry is False


@pytest.mark.parametrize("ref", ["registry.example/", "registry.example/a//b:v1", ":v1"])
def test_invalid_reference(ref: str):
    with pytest.raises(RegistryError, match="invalid image reference"):
        parse_reference(ref)


@pytest.mark.parametrize("ref, words", [
    ("adapters/a:v1", "must be a full registry/repository:tag reference"),
    ("registry.example/", "must be a full registry/repository:tag reference"),
    ("registry.example/a:v1@sha256:ab", "(no digest)"),
])
def test_push_needs_a_registry_and_a_tag(ref: str, words: str):
    with pytest.raises(PushError, match=words.replace("(", r"\(").replace(")", r"\)")):
        output_reference(ref)
    assert output_reference("registry.example:5000/a/b:1").tag == "1"


def test_only_loopback_literals_are_loopback():
    assert is_loopback("127.0.0.1:5000") and is_loopback("[::1]:5000")
    assert not is_loopback("127.evil.example:5000") and not is_loopback("localhost:5000")


# --- docker-config secrets --------------------------------------------------------------------

def _config(path: Path, auths: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"auths": auths}))
    return path


def test_docker_config_entries(tmp_path: Path):
    encoded = base64.b64encode(b"u2:p:with:colons").decode()
    path = _config(tmp_path / "config.json", {
        "https://index.docker.io/v1/": {"username": "hub", "password": "hp"},
        "registry.example:5000": {"auth": encoded},
        "no-user.example": {"password": "x"},
    })
    assert read_docker_config(path) == {DOCKER_HUB: ("hub", "hp"),
                                        "registry.example:5000": ("u2", "p:with:colons")}


def test_auths_from_mounted_secrets(tmp_path: Path):
    _config(tmp_path / "a" / ".dockerconfigjson", {"r.example": {"username": "a", "password": "1"}})
    _config(tmp_path / "b" / ".dockerconfigjson", {"r.example": {"username": "b", "password": "2"},
                                                   "s.example": {"username": "s"}})
    _config(tmp_path / "config.json", {"t.example": {"username": "t", "password": "3"}})
    assert load_auths(tmp_path) == {"r.example": ("a", "1"), "s.example": ("s", ""),
                                    "t.example": ("t", "3")}
    assert load_auths(None) == {} and load_auths(str(tmp_path / "missing")) == {}
    assert load_credentials(tmp_path / "b" / ".dockerconfigjson", "s.example") == ("s", "")
    assert load_credentials(None, "s.example") is None


@pytest.mark.parametrize("content, words", [
    ("{not json", "unreadable docker config"),
    (json.dumps({"auths": []}), 'no "auths" object'),
    (json.dumps({"auths": {"r.example": "user:pass"}}), "the entry of r.example is not an object"),
    (json.dumps({"auths": {"r.example": {"auth": "YQ"}}}), "the auth of r.example is not base64"),
])
def test_unusable_docker_config(tmp_path: Path, content: str, words: str):
    path = tmp_path / "s" / ".dockerconfigjson"
    path.parent.mkdir()
    path.write_text(content)
    with pytest.raises(RegistryError, match=words):
        load_auths(tmp_path)
    with pytest.raises(PushError, match=words):
        load_credentials(path, "r.example")


# --- challenges -------------------------------------------------------------------------------

def test_challenge_with_commas_in_quoted_values():
    scheme, fields = parse_challenge(
        'Bearer realm="https://auth.example/token",Service=registry.example,'
        'scope="repository:a/b:pull,push"')
    assert scheme == "bearer"
    assert fields == {"realm": "https://auth.example/token", "service": "registry.example",
                      "scope": "repository:a/b:pull,push"}
    assert parse_challenge('Basic realm="Registry Realm"') == ("basic", {"realm": "Registry Realm"})
    assert parse_challenge("") == ("", {})


def test_basic_authorization_and_token_url():
    assert basic_authorization(("u", "p")) == httpx.BasicAuth("u", "p")._auth_header
    url = httpx.URL(token_url("r.example", "https://auth.example/token",
                              {"service": "r", "scope": "repository:a:pull,push"}))
    assert url.host == "auth.example" and url.path == "/token"
    assert url.params == httpx.QueryParams({"service": "r", "scope": "repository:a:pull,push"})
    with pytest.raises(RegistryError, match="unusable token realm"):
        token_url("r.example", "https://[::1", {})


# --- the session ------------------------------------------------------------------------------

def _guard() -> EgressGuard:
    return EgressGuard(resolver=lambda name, port: [ipaddress.ip_address("93.184.216.34")])


def _session(handler, creds=None, **kwargs) -> RegistrySession:  # noqa: ANN001
    return RegistrySession("registry.example", creds, insecure=False, limits=SMALL,
                           deadline=Deadline(30.0, "test"), secret="pull secret",
                           backoff=0.0, guard=_guard(),
                           transport=httpx.MockTransport(handler), **kwargs)


def test_session_retries_429_and_5xx_then_returns_the_last_answer():
    statuses = iter([429, 503, 200])
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(next(statuses), headers={"Retry-After": "0"}, content=b"{}")

    session = _session(handler)
    assert session.root == "https://registry.example/v2/"
    resp = session.send(session.root, {})
    assert resp.status_code == 200 and seen == [session.root] * 3
    assert session.read_small(resp, 10, "doc") == b"{}"
    resp = _session(lambda r: httpx.Response(502), retries=1).send(session.root, {})
    assert resp.status_code == 502


def test_session_errors_are_registry_errors():
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("down", request=request)

    with pytest.raises(RegistryError, match="cannot reach registry registry.example: down"):
        _session(down, retries=1).send("https://registry.example/v2/", {})
    big = _session(lambda r: httpx.Response(200, content=b"x" * 100))
    with pytest.raises(RegistryError, match="declares 100 bytes, more than the cap"):
        big.read_small(big.send(big.root, {}), 10, "doc")
    gz = _session(lambda r: httpx.Response(200, headers={"Content-Encoding": "gzip"}))
    with pytest.raises(RegistryError, match="refusing Content-Encoding 'gzip'"):
        gz.read_small(gz.send(gz.root, {}), 10, "doc")
    with pytest.raises(RegistryError, match="registry registry.example: .* metadata address"):
        _session(lambda r: httpx.Response(200)).send("https://169.254.169.254/v2/", {})


def test_credentials_never_go_over_plain_http():
    with pytest.raises(RegistryError, match="refusing to send the push secret's credentials "
                                            "over plain http to registry.example"):
        RegistrySession("registry.example", ("u", "p"), insecure=True, limits=SMALL,
                        deadline=Deadline(30.0, "test"), secret="push secret", guard=_guard())
    loopback = RegistrySession("127.0.0.1:5000", None, insecure=False, limits=SMALL,
                               deadline=Deadline(30.0, "test"), secret="pull secret",
                               guard=_guard())
    assert loopback.root == "http://127.0.0.1:5000/v2/"
    loopback.close()


# --- the termination log ----------------------------------------------------------------------

def test_failure_is_one_line_on_stderr_and_in_the_log(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]):
    log = tmp_path / "log"
    line = termination.report_failure("fetch failed:\n  registry\tdown ", str(log))
    assert line == "fetch failed: registry down"
    assert capsys.readouterr().err == line + "\n"
    assert log.read_text() == line + "\n"


def test_log_path_explicit_then_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]):
    monkeypatch.setenv(termination.PATH_ENV, str(tmp_path / "env-log"))
    assert termination.termination_log("x") == "x"
    termination.report_failure("from the environment")
    assert (tmp_path / "env-log").read_text() == "from the environment\n"
    monkeypatch.delenv(termination.PATH_ENV)
    assert termination.termination_log() == termination.DEFAULT_PATH
    termination.report_failure("unwritable", str(tmp_path / "missing-dir" / "log"))
    assert capsys.readouterr().err.splitlines() == ["from the environment", "unwritable"]


def test_default_path_is_only_written_inside_a_pod(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(termination.PATH_ENV, raising=False)
    if Path(termination.DEFAULT_PATH).exists():
        pytest.skip("this machine has a /dev/termination-log")
    termination.report_failure("outside a pod")
    assert not Path(termination.DEFAULT_PATH).exists()


def test_log_is_bounded_to_what_the_kubelet_reads(tmp_path: Path):
    log = tmp_path / "log"
    line = termination.report_failure("é" * 5000, str(log))
    assert len(line) == 5000
    data = log.read_bytes()
    assert len(data) <= termination.MAX_BYTES
    assert data.decode().endswith("é…\n")
    assert termination.file_content("short") == b"short\n"
    exact = "x" * (termination.MAX_BYTES - 1)
    assert termination.file_content(exact) == (exact + "\n").encode()
