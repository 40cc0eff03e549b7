"""The adapter init container (`python -m inference_server.fetch_adapter`) against a real
registry (Debian's docker-registry on loopback): what a pod would pull, byte for byte, and the
one-line failures a user sees in `kubectl describe pod`."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from inference_server.fetch_adapter import FetchError, fetch, main
from kaito_sandbox.sim.registry import (
    OCI_LAYER_TGZ,
    LocalRegistry,
    RegistryUnavailable,
    docker_config_json,
    tar_gz,
)

ROOT = Path(__file__).resolve().parents[2]
USER, PASSWORD = "kaito", "s3cret-pull"
ADAPTER = {
    "adapter_config.json": json.dumps({"peft_type": "LORA", "r": 8}).encode(),
    "adapter_model.safetensors": os.urandom(300_000),
}


def _start(**kwargs: str) -> LocalRegistry:
    try:
        return LocalRegistry(**kwargs).start()
    except RegistryUnavailable as err:  # a missing binary must fail CI loudly, not skip
        pytest.fail(f"{err} (the Makefile's setup installs it: apt-get install docker-registry)")


@pytest.fixture(autouse=True)
def loopback_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The registries here listen on 127.0.0.1, which the egress guard refuses by default."""
    monkeypatch.setenv("KAITO_EGRESS_ALLOW_LOOPBACK", "1")


@pytest.fixture(scope="module")
def registry() -> Iterator[LocalRegistry]:
    reg = _start()
    yield reg
    reg.stop()


@pytest.fixture(scope="module")
def private() -> Iterator[LocalRegistry]:
    reg = _start(user=USER, password=PASSWORD)
    yield reg
    reg.stop()




def run(ref: str, out: Path, *extra: str) -> int:
    return main([f"--image={ref}", f"--output={out}", "--retries=0", *extra])


def files_in(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def failure(capsys: pytest.CaptureFixture[str], tlog: Path) -> str:
    """The single stderr line, which must also be the termination message."""
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert tlog.read_text().strip() == err
    return err


def test_artifact_pull_is_byte_identical(registry: LocalRegistry, tmp_path: Path, tlog: Path):
    registry.push_artifact(f"{registry.host}/adapters/plain:v1", ADAPTER)
    assert run(f"{registry.host}/adapters/plain:v1", tmp_path / "out") == 0
    assert files_in(tmp_path / "out") == ADAPTER
    assert not tlog.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging leftovers


def test_pull_replaces_a_previous_attempt(registry: LocalRegistry, tmp_path: Path, tlog: Path):
    registry.push_artifact(f"{registry.host}/adapters/again:v1", ADAPTER)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "stale.bin").write_bytes(b"old")
    assert run(f"{registry.host}/adapters/again:v1", tmp_path / "out") == 0
    assert files_in(tmp_path / "out") == ADAPTER


def test_image_with_data_dir(registry: LocalRegistry, tmp_path: Path, tlog: Path):
    registry.push_image_with_data(f"{registry.host}/adapters/image:v1", ADAPTER)
    assert run(f"{registry.host}/adapters/image:v1", tmp_path / "out") == 0
    assert files_in(tmp_path / "out") == ADAPTER


def test_image_layers_apply_in_order_with_whiteouts(registry: LocalRegistry, tmp_path: Path,
                                                    tlog: Path):
    base = tar_gz({"etc/passwd": b"x", "data/old.bin": b"old", "data/keep/a": b"a",
                   **{f"data/{k}": v for k, v in ADAPTER.items()}})
    top = tar_gz({"data/.wh.old.bin": b"", "data/keep/.wh..wh..opq": b"", "data/keep/b": b"b",
                  "data/adapter_config.json": b'{"r": 4}'})
    registry.push_layers(f"{registry.host}/adapters/layers:v1",
                         [({"mediaType": OCI_LAYER_TGZ}, base), ({"mediaType": OCI_LAYER_TGZ}, top)])
    assert run(f"{registry.host}/adapters/layers:v1", tmp_path / "out") == 0
    assert files_in(tmp_path / "out") == {"adapter_config.json": b'{"r": 4}', "keep/b": b"b",
                                          "adapter_model.safetensors": ADAPTER["adapter_model.safetensors"]}


def test_directory_tarball_artifact(registry: LocalRegistry, tmp_path: Path, tlog: Path):
    registry.push_artifact(f"{registry.host}/adapters/dir:v1", ADAPTER, as_directory="adapter")
    assert run(f"{registry.host}/adapters/dir:v1", tmp_path / "out") == 0
    assert files_in(tmp_path / "out") == ADAPTER


def test_oras_py_pushed_directory(registry: LocalRegistry, tmp_path: Path, tlog: Path,
                                  monkeypatch: pytest.MonkeyPatch):
    """What the tuning job will do: `oras` (the Python client) pushes the adapter directory."""
    import oras.client

    src = tmp_path / "src" / "my-adapter"
    src.mkdir(parents=True)
    for name, data in ADAPTER.items():
        (src / name).write_bytes(data)
    monkeypatch.chdir(src.parent)  # oras-py only pushes paths below the working directory
    oras.client.OrasClient(insecure=True).push(
        target=f"{registry.host}/adapters/orasdir:v1", files=["my-adapter"], quiet=True)
    assert run(f"{registry.host}/adapters/orasdir:v1", tmp_path / "out") == 0
    assert files_in(tmp_path / "out") == ADAPTER


def test_index_resolves_to_linux_amd64(registry: LocalRegistry, tmp_path: Path, tlog: Path):
    arm = registry.push_artifact(f"{registry.host}/adapters/multi:arm", {"adapter_config.json": b"arm"})
    amd = registry.push_artifact(f"{registry.host}/adapters/multi:amd", ADAPTER)
    desc = [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d, "size": 0,
             "platform": {"os": "linux", "architecture": a}} for d, a in ((arm, "arm64"), (amd, "amd64"))]
    for entry in desc:
        entry["size"] = len(registry.manifest_bytes("adapters/multi", entry["digest"]))
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": desc}
    registry.push_manifest(f"{registry.host}/adapters/multi:v1", index, [])
    assert run(f"{registry.host}/adapters/multi:v1", tmp_path / "out") == 0
    assert files_in(tmp_path / "out") == ADAPTER


def _secrets(tmp_path: Path, host: str, user: str, password: str) -> Path:
    root = tmp_path / "docker-secrets"
    (root / "other").mkdir(parents=True)
    (root / "other" / ".dockerconfigjson").write_text(docker_config_json("ghcr.io", "x", "y"))
    (root / "acr-pull").mkdir()
    (root / "acr-pull" / ".dockerconfigjson").write_text(docker_config_json(host, user, password))
    return root


def test_private_registry_with_pull_secret(private: LocalRegistry, tmp_path: Path, tlog: Path):
    private.push_artifact(f"{private.host}/adapters/secret:v1", ADAPTER)
    secrets = _secrets(tmp_path, private.host, USER, PASSWORD)
    assert run(f"{private.host}/adapters/secret:v1", tmp_path / "out",
               f"--docker-config-dir={secrets}") == 0
    assert files_in(tmp_path / "out") == ADAPTER


@pytest.mark.parametrize("password, expected", [("wrong", "rejected"), (None, "no pull secret")])
def test_private_registry_bad_credentials(private: LocalRegistry, tmp_path: Path, tlog: Path,
                                          capsys: pytest.CaptureFixture[str], password: str | None,
                                          expected: str):
    private.push_artifact(f"{private.host}/adapters/denied:v1", ADAPTER)
    extra = []
    if password:
        extra = [f"--docker-config-dir={_secrets(tmp_path, private.host, USER, password)}"]
    assert run(f"{private.host}/adapters/denied:v1", tmp_path / "out", *extra) == 1
    err = failure(capsys, tlog)
    assert "denied" in err and expected in err and private.host in err
    assert not (tmp_path / "out").exists()


def test_missing_tag(registry: LocalRegistry, tmp_path: Path, tlog: Path,
                     capsys: pytest.CaptureFixture[str]):
    registry.push_artifact(f"{registry.host}/adapters/tags:v1", ADAPTER)
    assert run(f"{registry.host}/adapters/tags:nope", tmp_path / "out") == 1
    assert "adapters/tags:nope not found" in failure(capsys, tlog)


def test_artifact_without_adapter_config(registry: LocalRegistry, tmp_path: Path, tlog: Path,
                                         capsys: pytest.CaptureFixture[str]):
    registry.push_artifact(f"{registry.host}/adapters/weights-only:v1",
                           {"adapter_model.safetensors": b"w"})
    assert run(f"{registry.host}/adapters/weights-only:v1", tmp_path / "out") == 1
    err = failure(capsys, tlog)
    assert "no adapter_config.json" in err and "adapter_model.safetensors" in err
    assert not (tmp_path / "out").exists()


MALICIOUS: dict[str, Callable[[LocalRegistry, str], object]] = {
    "image ../": lambda r, ref: r.push_image_with_data(ref, {"../../escape": b"x", **ADAPTER}),
    "image absolute": lambda r, ref: r.push_layers(ref, [({"mediaType": OCI_LAYER_TGZ}, tar_gz(
        {"/tmp/escape": b"x", **{f"data/{k}": v for k, v in ADAPTER.items()}}))]),
    "title ../": lambda r, ref: r.push_artifact(ref, {"../escape": b"x", **ADAPTER}),
    "title absolute": lambda r, ref: r.push_artifact(ref, {"/tmp/escape": b"x", **ADAPTER}),
    "dir tarball ../": lambda r, ref: r.push_artifact(ref, {"../../escape": b"x", **ADAPTER},
                                                      as_directory="adapter"),
}


@pytest.mark.parametrize("case", sorted(MALICIOUS))
def test_path_traversal_is_refused(registry: LocalRegistry, tmp_path: Path, tlog: Path,
                                   capsys: pytest.CaptureFixture[str], case: str):
    ref = f"{registry.host}/adapters/evil:{case.replace(' ', '-').replace('../', 'dotdot')}"
    MALICIOUS[case](registry, ref)
    out = tmp_path / "deep" / "out"
    assert run(ref, out) == 1
    assert "unsafe path" in failure(capsys, tlog)
    assert not out.exists() and not list(tmp_path.rglob("escape"))


def _proxy(registry: LocalRegistry, hook: Callable[[httpx.Request], httpx.Response | None],
           ) -> httpx.MockTransport:
    """Forwards to the real registry unless ``hook`` answers first (auth/fault injection)."""
    upstream = httpx.Client(timeout=10.0)

    def handle(request: httpx.Request) -> httpx.Response:
        answered = hook(request)
        if answered is not None:
            return answered
        headers = {k: v for k, v in request.headers.items() if k.lower() != "authorization"}
        resp = upstream.send(httpx.Request(request.method, request.url, headers=headers))
        keep = {k: v for k, v in resp.headers.items()
                if k.lower() not in ("content-length", "transfer-encoding", "content-encoding")}
        return httpx.Response(resp.status_code, headers=keep, content=resp.content)

    return httpx.MockTransport(handle)


def test_bearer_token_flow(registry: LocalRegistry, tmp_path: Path):
    """The distribution spec's token dance (ACR, GHCR, Docker Hub): 401 → realm → retry."""
    ref = f"{registry.host}/adapters/bearer:v1"
    registry.push_artifact(ref, ADAPTER)
    realm, seen = f"http://{registry.host}/token", []

    def hook(request: httpx.Request) -> httpx.Response | None:
        if request.url.path == "/token":
            seen.append(dict(request.url.params))
            ok = request.headers.get("authorization") == httpx.BasicAuth(USER, PASSWORD)._auth_header
            return httpx.Response(200, json={"token": "tok"}) if ok else httpx.Response(401)
        if request.headers.get("authorization") != "Bearer tok":
            challenge = f'Bearer realm="{realm}",service="sim",scope="repository:adapters/bearer:pull"'
            return httpx.Response(401, headers={"WWW-Authenticate": challenge})
        return None

    fetch(ref, tmp_path / "out", {registry.host: (USER, PASSWORD)}, transport=_proxy(registry, hook))
    assert files_in(tmp_path / "out") == ADAPTER
    assert seen == [{"service": "sim", "scope": "repository:adapters/bearer:pull"}]
    with pytest.raises(FetchError, match="token service .* rejected the credentials"):
        fetch(ref, tmp_path / "out2", {registry.host: (USER, "bad")}, transport=_proxy(registry, hook))


def test_retries_transient_errors_then_gives_up(registry: LocalRegistry, tmp_path: Path):
    ref = f"{registry.host}/adapters/flaky:v1"
    registry.push_artifact(ref, ADAPTER)
    calls = {"n": 0}

    def flaky(request: httpx.Request) -> httpx.Response | None:
        calls["n"] += 1
        if calls["n"] % 3 == 1:
            raise httpx.ConnectError("boom", request=request)
        return httpx.Response(503) if calls["n"] % 3 == 2 else None

    fetch(ref, tmp_path / "out", {}, backoff=0.0, transport=_proxy(registry, flaky))
    assert files_in(tmp_path / "out") == ADAPTER
    with pytest.raises(FetchError, match="cannot reach registry"):
        fetch(ref, tmp_path / "out2", {}, retries=2, backoff=0.0, transport=_proxy(
            registry, lambda r: (_ for _ in ()).throw(httpx.ConnectError("down", request=r))))


def test_blob_digest_is_verified(registry: LocalRegistry, tmp_path: Path):
    ref = f"{registry.host}/adapters/tampered:v1"
    registry.push_artifact(ref, ADAPTER)
    weights = "sha256:" + hashlib.sha256(ADAPTER["adapter_model.safetensors"]).hexdigest()

    def tamper(request: httpx.Request) -> httpx.Response | None:
        if request.url.path.endswith(weights):
            return httpx.Response(200, content=b"\0" * len(ADAPTER["adapter_model.safetensors"]))
        return None

    with pytest.raises(FetchError, match="failed verification"):
        fetch(ref, tmp_path / "out", {}, transport=_proxy(registry, tamper))
    assert not (tmp_path / "out").exists()


def test_termination_log_option_and_unreachable_registry(tmp_path: Path, tlog: Path,
                                                         capsys: pytest.CaptureFixture[str]):
    explicit = tmp_path / "explicit-log"
    assert run("127.0.0.1:9/adapters/x:v1", tmp_path / "out", f"--termination-log={explicit}") == 1
    err = capsys.readouterr().err.strip()
    assert "cannot reach registry 127.0.0.1:9" in err
    assert explicit.read_text().strip() == err and not tlog.exists()


def test_module_entry_point(registry: LocalRegistry, tmp_path: Path):
    """The init container's exact command line, in a fresh interpreter."""
    registry.push_artifact(f"{registry.host}/adapters/cli:v1", ADAPTER)
    env = {**os.environ, "KAITO_TERMINATION_LOG": str(tmp_path / "log")}
    ok = subprocess.run([sys.executable, "-m", "inference_server.fetch_adapter",
                         f"--image={registry.host}/adapters/cli:v1", f"--output={tmp_path / 'a'}"],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert files_in(tmp_path / "a") == ADAPTER
    bad = subprocess.run([sys.executable, "-m", "inference_server.fetch_adapter", "--output=x"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and (tmp_path / "log").exists()
