"""A throwaway OCI registry on loopback (Debian's ``docker-registry``) plus push helpers.

Tests of the adapter fetcher (and, later, of the tuning job's push) need a *real* distribution
server: its error bodies, auth challenges and digest handling are what a cluster's registry
does, and a fake would only echo our own reading of the spec.  The registry binary starts in
well under a second from a generated config, so every test module can own one.

The push helpers speak the distribution API directly (upload blob, put manifest) rather than
through ``oras``: they must also build deliberately broken content (path-traversal layers) that
a well-behaved client refuses to produce, and they stay free of oras's working-directory rules.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import socket
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

import httpx

__all__ = [
    "REGISTRY_BINARY",
    "LocalRegistry",
    "RegistryUnavailable",
    "docker_config_json",
    "tar_gz",
]

REGISTRY_BINARY = "/usr/bin/docker-registry"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_TGZ = "application/vnd.oci.image.layer.v1.tar+gzip"
UNKNOWN_CONFIG = "application/vnd.unknown.config.v1+json"
TITLE = "org.opencontainers.image.title"
UNPACK = "io.deis.oras.content.unpack"


class RegistryUnavailable(RuntimeError):
    """The registry binary (or a bcrypt tool for its htpasswd file) is missing or failed."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _htpasswd_line(user: str, password: str) -> str:
    """The registry only accepts bcrypt entries; use whichever bcrypt tool this machine has."""
    try:
        import bcrypt
    except ImportError:
        pass
    else:
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()
        return f"{user}:{hashed}\n"
    tool = shutil.which("htpasswd")
    if tool is None:
        raise RegistryUnavailable(
            "registry auth needs bcrypt: `pip install bcrypt` or `apt-get install apache2-utils`"
        )
    done = subprocess.run(
        [tool, "-nbB", "-C", "5", user, password], capture_output=True, text=True, timeout=30
    )
    if done.returncode != 0:
        raise RegistryUnavailable(f"htpasswd failed: {done.stderr.strip()}")
    return done.stdout.strip() + "\n"


def docker_config_json(host: str, user: str, password: str) -> str:
    """The body of a `kubernetes.io/dockerconfigjson` secret for one registry."""
    import base64

    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    return json.dumps({"auths": {host: {"username": user, "password": password, "auth": auth}}})


def tar_gz(entries: Mapping[str, bytes], *, dirs: tuple[str, ...] = ()) -> bytes:
    """A reproducible tar.gz of regular files (names are used verbatim, even hostile ones)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in dirs:
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


def _descriptor(media_type: str, data: bytes, annotations: dict[str, str] | None = None) -> dict:
    desc: dict = {
        "mediaType": media_type,
        "digest": "sha256:" + hashlib.sha256(data).hexdigest(),
        "size": len(data),
    }
    if annotations:
        desc["annotations"] = annotations
    return desc


class LocalRegistry:
    """`docker-registry serve` on 127.0.0.1:<free port> with storage in a temp dir.

    With ``user``/``password`` every request needs basic auth (htpasswd), as a private ACR
    would; ``host`` is what goes in image references and in docker config files.
    """

    def __init__(
        self, *, user: str | None = None, password: str | None = None, start_timeout: float = 10.0
    ) -> None:
        self.user, self.password = user, password
        self.start_timeout = start_timeout
        self.port = 0
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._client: httpx.Client | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def start(self) -> LocalRegistry:
        if not Path(REGISTRY_BINARY).exists():
            raise RegistryUnavailable(
                f"{REGISTRY_BINARY} is missing: run `apt-get install docker-registry`"
            )
        self._tmp = tempfile.TemporaryDirectory(prefix="kaito-registry-")
        root = Path(self._tmp.name)
        self.port = _free_port()
        auth = ""
        if self.user is not None:
            (root / "htpasswd").write_text(_htpasswd_line(self.user, self.password or ""))
            auth = f"auth: {{htpasswd: {{realm: kaito-sim, path: {root / 'htpasswd'}}}}}\n"
        storage = f"{{filesystem: {{rootdirectory: '{root / 'data'}'}}, delete: {{enabled: true}}}}"
        (root / "config.yml").write_text(
            "version: 0.1\n"
            "log: {level: warn, accesslog: {disabled: true}}\n"
            f"storage: {storage}\n"
            f"http: {{addr: '{self.host}', secret: kaito-sim-secret}}\n" + auth
        )
        log = (root / "registry.log").open("wb")
        self._proc = subprocess.Popen(
            [REGISTRY_BINARY, "serve", str(root / "config.yml")], stdout=log, stderr=log
        )
        log.close()
        basic = (self.user, self.password or "") if self.user is not None else None
        self._client = httpx.Client(base_url=self.url, auth=basic, timeout=10.0)
        self._wait_ready(root / "registry.log")
        return self

    def _wait_ready(self, log: Path) -> None:
        deadline = time.monotonic() + self.start_timeout
        assert self._proc is not None and self._client is not None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            try:
                if self._client.get("/v2/").status_code in (200, 401):
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.02)
        tail = log.read_text(errors="replace")[-2000:]
        self.stop()
        raise RegistryUnavailable(f"docker-registry did not start: {tail}")

    @property
    def pid(self) -> int | None:
        """Process id of the registry server (to check that nothing is left running)."""
        return self._proc.pid if self._proc is not None else None

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.terminate()
                try:
                    self._proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait(timeout=5)
            self._proc = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> LocalRegistry:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- pushing -----------------------------------------------------------------------------

    def _split(self, ref: str) -> tuple[str, str]:
        """`[host/]repo:tag` → (repo, tag); the host, when given, must be this registry."""
        if ref.startswith(self.host + "/"):
            ref = ref[len(self.host) + 1 :]
        repo, _, tag = ref.rpartition(":")
        if not repo or "/" in tag:
            raise ValueError(f"reference needs a tag: {ref!r}")
        return repo, tag

    def push_blob(self, repo: str, data: bytes) -> str:
        """Monolithic upload (POST then PUT ?digest=), the flow every client supports."""
        assert self._client is not None, "registry not started"
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        started = self._client.post(f"/v2/{repo}/blobs/uploads/")
        started.raise_for_status()
        location = httpx.URL(started.headers["Location"]).copy_merge_params({"digest": digest})
        done = self._client.put(
            location, content=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        done.raise_for_status()
        return digest

    def push_manifest(self, ref: str, manifest: dict, blobs: list[bytes]) -> str:
        """Uploads ``blobs`` (the config and layers) then the manifest; returns its digest."""
        assert self._client is not None, "registry not started"
        repo, tag = self._split(ref)
        for blob in blobs:
            self.push_blob(repo, blob)
        body = json.dumps(manifest).encode()
        media_type = manifest.get("mediaType", OCI_MANIFEST)
        put = self._client.put(
            f"/v2/{repo}/manifests/{tag}", content=body, headers={"Content-Type": media_type}
        )
        put.raise_for_status()
        return "sha256:" + hashlib.sha256(body).hexdigest()

    def manifest_bytes(self, repo: str, reference: str) -> bytes:
        """The stored manifest, byte for byte (index descriptors need its exact size)."""
        assert self._client is not None, "registry not started"
        resp = self._client.get(
            f"/v2/{repo}/manifests/{reference}", headers={"Accept": OCI_MANIFEST}
        )
        resp.raise_for_status()
        return resp.content

    def push_layers(
        self, ref: str, layers: list[tuple[dict, bytes]], *, config: bytes = b"{}",
        config_type: str = UNKNOWN_CONFIG, artifact_type: str | None = None,
    ) -> str:
        """A manifest over given (descriptor-fields, data) layers: the building block."""
        descs = [
            {**_descriptor(fields.get("mediaType", OCI_LAYER_TAR), data), **fields}
            for fields, data in layers
        ]
        manifest: dict = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": _descriptor(config_type, config),
            "layers": descs,
        }
        if artifact_type:
            manifest["artifactType"] = artifact_type
        return self.push_manifest(ref, manifest, [config] + [data for _, data in layers])

    def push_artifact(
        self, ref: str, files: Mapping[str, bytes], *, as_directory: str | None = None
    ) -> str:
        """What `oras push ref file...` stores: one titled layer per file; or, with
        ``as_directory``, what `oras push ref dir/` stores: one tar.gz of ``dir/<file>``
        entries, titled ``dir`` and annotated for unpacking."""
        layers: list[tuple[dict, bytes]]
        if as_directory is None:
            layers = [({"annotations": {TITLE: name}}, data) for name, data in files.items()]
        else:
            blob = tar_gz(
                {f"{as_directory}/{name}": data for name, data in files.items()},
                dirs=(as_directory,),
            )
            annotations = {TITLE: as_directory, UNPACK: "true"}
            layers = [({"mediaType": OCI_LAYER_TGZ, "annotations": annotations}, blob)]
        return self.push_layers(ref, layers, artifact_type="application/vnd.kaito.adapter.v1")

    def push_image_with_data(self, ref: str, files: Mapping[str, bytes]) -> str:
        """A minimal OCI image whose filesystem holds ``/data/<file>`` (KAITO's old layout)."""
        layer = tar_gz({f"data/{name}": data for name, data in files.items()}, dirs=("data",))
        diff_id = "sha256:" + hashlib.sha256(gzip.decompress(layer)).hexdigest()
        config = json.dumps({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [diff_id]}, "config": {},
        }).encode()
        return self.push_layers(
            ref, [({"mediaType": OCI_LAYER_TGZ}, layer)], config=config, config_type=OCI_CONFIG
        )
