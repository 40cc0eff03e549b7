"""Hostile fetches against the dataset download, the adapter fetcher and the push session.

One hostile HTTP server (plain files, trickles, bombs, redirects) and one hostile OCI registry
run in-process on 127.0.0.1.  The "internet" is simulated: the egress guard is given a resolver
that maps names such as `data.example` to public-looking addresses, and a dialer that connects
those (and only those) addresses to the loopback server; anything else raises before a socket
is opened.  The guard itself runs with its real policy and loopback refused, so a redirect to
`127.0.0.1`, to `169.254.169.254` or to a name resolving to a private address is refused by the
real logic.  No test opens a connection to anything but 127.0.0.1.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import ipaddress
import json
import tarfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from inference_server import fetch_adapter
from kaito_egress.guard import EgressGuard, EgressRefused
from kaito_egress.policy import Policy
from kaito_workload.oci import is_loopback
from tuning_job import download

PUBLIC = {  # simulated DNS: name → the records it has
    "data.example": ["93.184.216.34"],
    "cdn.example": ["93.184.216.35"],
    "registry.example": ["93.184.216.36"],
    "metadata.example": ["169.254.169.254"],
    "private.example": ["10.0.0.7"],
    "mixed.example": ["93.184.216.34", "192.168.1.10"],
    "127.evil.example": ["127.0.0.1"],
    "v6metadata.example": ["fd00:ec2::254"],
}
SERVED = {"93.184.216.34", "93.184.216.35", "93.184.216.36"}  # dialled to the loopback server
ADAPTER = {"adapter_config.json": b'{"peft_type": "LORA", "r": 8}', "adapter_model.safetensors": b"w" * 5000}


class SimulatedNetwork:
    """Resolver and dialer for the guard: public-looking names reach the loopback server."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.lookups: list[str] = []
        self.dialled: list[str] = []

    def resolve(self, name: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        self.lookups.append(name)
        if name not in PUBLIC:
            raise OSError(f"simulated DNS: {name} does not exist")
        return [ipaddress.ip_address(a) for a in PUBLIC[name]]

    def dial(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> tuple[str, int]:
        self.dialled.append(str(address))
        if str(address) not in SERVED:  # only reached if the guard let a refused address through
            raise AssertionError(f"the guard let {address} through")
        return "127.0.0.1", self.port

    def guard(self, **policy: bool) -> EgressGuard:
        return EgressGuard(Policy(**policy), resolver=self.resolve, dialer=self.dial)


Route = Callable[[http.server.BaseHTTPRequestHandler], None]


@dataclass
class HostileServer:
    routes: dict[str, Route] = field(default_factory=dict)
    port: int = 0


def _send(h: http.server.BaseHTTPRequestHandler, status: int, body: bytes = b"",
          headers: dict[str, str] | None = None, length: bool = True) -> None:
    h.send_response(status)
    for key, value in (headers or {}).items():
        h.send_header(key, value)
    if length:
        h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)


def _stream(h: http.server.BaseHTTPRequestHandler, pieces: Iterator[bytes], pause: float = 0.0,
            headers: dict[str, str] | None = None) -> None:
    """A response without Content-Length (closed at the end), written piece by piece until
    the client goes away or the pieces run out."""
    h.send_response(200)
    for key, value in (headers or {}).items():
        h.send_header(key, value)
    h.send_header("Connection", "close")
    h.end_headers()
    h.close_connection = True
    try:
        for piece in pieces:
            h.wfile.write(piece)
            h.wfile.flush()
            if pause:
                time.sleep(pause)
    except OSError:
        return


@pytest.fixture(scope="module")
def server() -> Iterator[HostileServer]:
    state = HostileServer()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            path = self.path.split("?", 1)[0]
            route = state.routes.get(path)
            if route is None:
                _send(self, 404, b"not found")
            else:
                route(self)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.handle_error = lambda request, address: None  # type: ignore[method-assign]  # clients hang up on purpose
    state.port = httpd.server_port
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def net(server: HostileServer, monkeypatch: pytest.MonkeyPatch) -> SimulatedNetwork:
    """The CLIs build their guard with `EgressGuard.from_env`: here it is the simulated one,
    with the real policy (loopback and private ranges refused)."""
    sim = SimulatedNetwork(server.port)
    monkeypatch.delenv("KAITO_EGRESS_ALLOW_LOOPBACK", raising=False)
    monkeypatch.setattr(EgressGuard, "from_env", classmethod(lambda cls, **kw: sim.guard()))
    return sim


def one_line(capsys: pytest.CaptureFixture[str], tlog: Path) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    assert tlog.read_text().strip() == err
    return err


def zeros_gzip(size: int) -> bytes:
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = b"\0" * (1 << 20)
    parts = [comp.compress(block) for _ in range(size >> 20)]
    return b"".join(parts) + comp.flush()


def redirect(location: str, status: int = 302) -> Route:
    """A redirect; a non-ASCII Location goes on the wire as UTF-8, as browsers would read it."""
    wire = location.encode().decode("latin-1")
    return lambda h: _send(h, status, headers={"Location": wire})


BOMB = zeros_gzip(200 << 20)  # 200 MiB of zeros in ~200 KiB
SMALL = {"deadline_s": 20.0}

# name → (routes to install, path to fetch, extra CLI flags, words the one-line error must hold)
HTTP_CASES: dict[str, tuple[dict[str, Route], str, list[str], list[str]]] = {
    "trickle": ({"/trickle": lambda h: _stream(h, (b"x" for _ in range(100)), pause=0.25)},
                "/trickle", ["--stall-window=1", "--min-rate=100"], ["stalled"]),
    "overall deadline": ({"/slow": lambda h: _stream(h, (b"x" * 4096 for _ in range(400)), pause=0.02)},
                         "/slow", ["--deadline=1", "--min-rate=0"], ["deadline"]),
    "Content-Length 10^12": ({"/huge": lambda h: (h.send_response(200), h.send_header("Content-Length", str(10**12)),
                                                  h.end_headers())}, "/huge", [], ["declares 1000000000000 bytes"]),
    "body over the per-file cap": ({"/big": lambda h: _stream(h, (b"x" * 65536 for _ in range(64)))},
                                   "/big", ["--max-file-bytes=1000000"], ["per-file cap"]),
    "Content-Encoding gzip bomb": ({"/bomb": lambda h: _send(h, 200, BOMB, {"Content-Encoding": "gzip"})},
                                   "/bomb", [], ["expands more than 50x"]),
    "bomb under a small cap": ({"/bomb2": lambda h: _send(h, 200, BOMB, {"Content-Encoding": "gzip"})},
                               "/bomb2", ["--max-ratio=100000", "--max-file-bytes=5000000"], ["per-file cap"]),
    "broken gzip encoding": ({"/badgz": lambda h: _send(h, 200, b"\x1f\x8b\x08\x00garbage-garbage", {"Content-Encoding": "gzip"})},
                             "/badgz", [], ["corrupt gzip"]),
    "truncated gzip encoding": ({"/cutgz": lambda h: _send(h, 200, gzip.compress(b"a" * 5000)[:-12], {"Content-Encoding": "gzip"})},
                                "/cutgz", [], ["truncated"]),
    "unsupported encoding": ({"/br": lambda h: _send(h, 200, b"xx", {"Content-Encoding": "br"})},
                             "/br", [], ["unsupported Content-Encoding"]),
    "body shorter than Content-Length": ({"/short": lambda h: (h.send_response(200), h.send_header("Content-Length", "5000"),
                                                               h.send_header("Connection", "close"), h.end_headers(),
                                                               h.wfile.write(b"x" * 100))},
                                         "/short", [], ["cannot fetch", "after 1 attempt"]),
    "malformed Content-Length": ({"/badlen": lambda h: (h.send_response(200), h.send_header("Content-Length", "12abc"),
                                                        h.end_headers())}, "/badlen", [], ["cannot fetch"]),
    "redirect to the metadata IP": ({"/r-meta": redirect("http://169.254.169.254/latest/meta-data/")},
                                    "/r-meta", [], ["169.254.169.254 is a cloud metadata address"]),
    "redirect to a name of the metadata IP": ({"/r-meta-name": redirect("http://metadata.example/computeMetadata/v1/")},
                                              "/r-meta-name", [], ["metadata.example", "resolves to 169.254.169.254"]),
    "redirect to hex metadata": ({"/r-hex": redirect("http://0xa9.0xfe.0xa9.0xfe/latest")},
                                 "/r-hex", [], ["169.254.169.254"]),
    "redirect to short 169.254.43518": ({"/r-short": redirect("http://169.254.43518/")}, "/r-short", [], ["169.254.169.254"]),
    "redirect to literal loopback": ({"/r-lo": redirect("http://127.0.0.1:{port}/ok")}, "/r-lo", [], ["127.0.0.1 is a loopback address"]),
    "redirect to decimal loopback": ({"/r-dec": redirect("http://2130706433:{port}/ok")}, "/r-dec", [], ["loopback"]),
    "redirect to localhost.": ({"/r-localhost": redirect("http://localhost.:{port}/ok")}, "/r-localhost", [], ["node itself"]),
    "redirect to fullwidth localhost": ({"/r-fw": redirect("http://ｌｏｃａｌｈｏｓｔ:{port}/ok")}, "/r-fw", [], ["unparsable location", "IDNA"]),
    "redirect to a private name": ({"/r-priv": redirect("http://private.example/data")}, "/r-priv", [], ["10.0.0.7", "private range"]),
    "redirect to a mixed public/private name": ({"/r-mixed": redirect("http://mixed.example/data")}, "/r-mixed", [], ["192.168.1.10"]),
    "redirect to NAT64 metadata": ({"/r-nat64": redirect("http://[64:ff9b::a9fe:a9fe]/")}, "/r-nat64", [], ["NAT64"]),
    "redirect to IPv4-mapped loopback": ({"/r-mapped": redirect("http://[::ffff:127.0.0.1]:{port}/ok")}, "/r-mapped", [], ["IPv4-mapped"]),
    "redirect to v6 metadata by name": ({"/r-v6": redirect("http://v6metadata.example/")}, "/r-v6", [], ["fd00:ec2::254"]),
    "redirect with userinfo trick": ({"/r-user": redirect("http://data.example@127.0.0.1:{port}/ok")}, "/r-user", [], ["credentials"]),
    "redirect to file://": ({"/r-file": redirect("file:///etc/passwd")}, "/r-file", [], ["http or https"]),
    "redirect to an unparsable location": ({"/r-bad": redirect("http://[::1/x")}, "/r-bad", [], ["unparsable location"]),
    "redirect loop": ({"/loop-a": redirect("/loop-b"), "/loop-b": redirect("/loop-a")}, "/loop-a", [], ["redirect loop"]),
    "endless redirect chain": ({f"/chain/{i}": redirect(f"/chain/{i + 1}") for i in range(30)}, "/chain/0", [],
                               ["more than 10 redirects"]),
    "name resolving to loopback": ({}, "http://127.evil.example:{port}/x", [], ["resolves to 127.0.0.1"]),
}


@pytest.mark.parametrize("case", sorted(HTTP_CASES))
def test_hostile_download(case: str, server: HostileServer, net: SimulatedNetwork, tmp_path: Path,
                          tlog: Path, capsys: pytest.CaptureFixture[str]):
    routes, path, flags, words = HTTP_CASES[case]
    for route_path, route in routes.items():
        server.routes[route_path] = _format_route(route, server.port)
    url = path.format(port=server.port) if path.startswith("http") else f"http://data.example:{server.port}{path}"
    started = time.monotonic()
    rc = download.main([url, f"--output={tmp_path / 'data'}", "--retries=0", "--backoff=0", *flags])
    assert rc == 1
    err = one_line(capsys, tlog)
    assert err.startswith("download "), err
    for word in words:
        assert word in err, err
    assert time.monotonic() - started < 30
    assert not any((tmp_path / "data").iterdir()) if (tmp_path / "data").exists() else True
    assert set(net.dialled) <= SERVED


def _format_route(route: Route, port: int) -> Route:
    """Redirect routes carry `{port}` in their Location: fill it in when the route runs."""
    def run(h: http.server.BaseHTTPRequestHandler) -> None:
        original = h.send_header

        def send_header(key: str, value: str) -> None:
            original(key, value.replace("{port}", str(port)) if key == "Location" else value)

        h.send_header = send_header  # type: ignore[method-assign]
        route(h)
    return run


def test_download_through_the_guard_works(server: HostileServer, net: SimulatedNetwork, tmp_path: Path,
                                          tlog: Path):
    """The accepted path: a public name, a redirect to another public name, gzip encoding."""
    rows = b'{"prompt": "a", "completion": "b"}\n' * 200
    server.routes["/train.jsonl"] = redirect(f"http://cdn.example:{server.port}/files/train.jsonl", 307)
    server.routes["/files/train.jsonl"] = lambda h: _send(h, 200, gzip.compress(rows), {"Content-Encoding": "gzip"})
    assert download.main([f"http://data.example:{server.port}/train.jsonl",
                          f"--output={tmp_path / 'data'}", "--retries=0"]) == 0
    assert (tmp_path / "data" / "train.jsonl").read_bytes() == rows
    assert sorted(set(net.lookups)) == ["cdn.example", "data.example"]
    assert not tlog.exists()


def test_rebinding_answer_is_never_asked_for(server: HostileServer, tmp_path: Path):
    """The guard resolves once per name and dials the pinned, checked address: a resolver that
    would answer 127.0.0.1 the second time is never consulted again."""
    answers = iter([["93.184.216.34"], ["127.0.0.1"], ["127.0.0.1"]])
    sim = SimulatedNetwork(server.port)
    sim.resolve = lambda name, port: [ipaddress.ip_address(a) for a in next(answers)]  # type: ignore[method-assign]
    server.routes["/a.csv"] = lambda h: _send(h, 200, b"x,y\n1,2\n")
    guard = sim.guard()
    download.download_all([f"http://data.example:{server.port}/a.csv", f"http://data.example:{server.port}/a.csv"],
                          tmp_path / "d", retries=0, guard=guard)
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["1-a.csv", "a.csv"]
    assert sim.dialled and set(sim.dialled) == {"93.184.216.34"}
    assert next(answers) == ["127.0.0.1"]  # the second answer was never taken


def test_https_to_http_downgrade_is_refused(tmp_path: Path, server: HostileServer):
    """The https hop is answered in-process by a mock transport; the guard still resolves and
    checks each hop before the transport sees it."""
    sim = SimulatedNetwork(server.port)
    seen: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(302, headers={"Location": "http://cdn.example/plain.csv"})

    with pytest.raises(download.DownloadError, match="from https to plain http"):
        download.download_all(["https://data.example/a.csv"], tmp_path / "d", retries=0,
                              guard=sim.guard(), transport=httpx.MockTransport(handle))
    assert seen == ["https://data.example/a.csv"] and sim.lookups == ["data.example"]
    assert not any((tmp_path / "d").iterdir())


def test_total_cap_spans_files(server: HostileServer, net: SimulatedNetwork, tmp_path: Path, tlog: Path,
                               capsys: pytest.CaptureFixture[str]):
    server.routes["/part.bin"] = lambda h: _send(h, 200, b"p" * 600_000)
    base = f"http://data.example:{server.port}"
    assert download.main([f"{base}/part.bin", f"{base}/part.bin", f"--output={tmp_path / 'data'}",
                          "--retries=0", "--max-total-bytes=1000000"]) == 1
    assert "exceed the total cap" in one_line(capsys, tlog)
    assert not list((tmp_path / "data").iterdir())


@pytest.mark.parametrize("url, words", [
    ("http://[::1/x", "valid http(s) URL"),
    ("http://exa mple.com/x", "spaces"),
    ("ftp://data.example/x", "http or https"),
    ("http://user:pw@data.example/x", "credentials"),
    ("http://0251.0376.0251.0376/latest", "169.254.169.254"),
    ("http://ⓛⓞⓒⓐⓛⓗⓞⓢⓣ/x", "node itself"),
    ("http://%31%32%37.0.0.1/x", "loopback"),
    ("http://[::1%25eth0]/x", "zone"),
])
def test_unusable_urls_fail_before_any_connection(url: str, words: str, net: SimulatedNetwork,
                                                  tmp_path: Path, tlog: Path,
                                                  capsys: pytest.CaptureFixture[str]):
    assert download.main([url, f"--output={tmp_path / 'data'}", "--retries=0"]) == 1
    assert words in one_line(capsys, tlog)
    assert net.dialled == []


# ------------------------------------------------------------------------------------------
# The hostile registry: manifests and blobs served from a table, per repository.


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def tar_gz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _manifest(layers: list[dict[str, object]]) -> bytes:
    config = b"{}"
    return json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                  "digest": _digest(config), "size": len(config)},
                       "layers": layers}).encode()


def titled(name: str, data: bytes, **extra: object) -> dict[str, object]:
    return {"mediaType": "application/octet-stream", "digest": _digest(data), "size": len(data),
            "annotations": {"org.opencontainers.image.title": name}, **extra}


def serve_artifact(server: HostileServer, repo: str, manifest: bytes, blobs: dict[str, Route] | None = None,
                   manifest_route: Route | None = None) -> str:
    server.routes["/v2/"] = lambda h: _send(h, 200, b"{}")
    server.routes[f"/v2/{repo}/manifests/v1"] = manifest_route or (lambda h: _send(
        h, 200, manifest, {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}))
    for digest, route in (blobs or {}).items():
        server.routes[f"/v2/{repo}/blobs/{digest}"] = route
    return f"registry.example:{server.port}/{repo}:v1"


def blob_route(data: bytes) -> Route:
    return lambda h: _send(h, 200, data)


def good_layers() -> tuple[list[dict[str, object]], dict[str, Route]]:
    layers = [titled(n, d) for n, d in ADAPTER.items()]
    return layers, {_digest(d): blob_route(d) for d in ADAPTER.values()}


def _registry_case(name: str, server: HostileServer) -> tuple[str, list[str], list[str]]:
    """Installs case `name` on the server; returns (reference, extra flags, expected words)."""
    repo = "evil/" + name.replace(" ", "-").lower()
    layers, blobs = good_layers()
    if name == "oversized manifest":
        route = lambda h: (h.send_response(200), h.send_header("Content-Length", str(100 << 20)), h.end_headers())  # noqa: E731
        return serve_artifact(server, repo, b"", manifest_route=route), [], ["more than the cap of 4 MiB"]
    if name == "oversized streamed manifest":
        route = lambda h: _stream(h, (b" " * 65536 for _ in range(100)))  # noqa: E731
        return serve_artifact(server, repo, b"", manifest_route=route), [], ["per-file cap of 4 MiB"]
    if name == "manifest not JSON":
        return serve_artifact(server, repo, b"<html>hi</html>"), [], ["not valid JSON"]
    if name == "manifest gzip-encoded":
        body = gzip.compress(_manifest(layers))
        route = lambda h: _send(h, 200, body, {"Content-Encoding": "gzip"})  # noqa: E731
        return serve_artifact(server, repo, b"", blobs, manifest_route=route), [], ["refusing Content-Encoding 'gzip'"]
    if name == "too many layers":
        many = [titled(f"f{i}", b"x") for i in range(300)]
        return serve_artifact(server, repo, _manifest(many)), [], ["300 layers"]
    if name == "index of an index":
        inner = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                            "manifests": [{"digest": "sha256:" + "0" * 64, "size": 10}]}).encode()
        outer = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                            "manifests": [{"digest": _digest(inner), "size": len(inner)}]}).encode()
        server.routes[f"/v2/{repo}/manifests/{_digest(inner)}"] = lambda h: _send(h, 200, inner)
        return serve_artifact(server, repo, outer), [], ["points at another index"]
    if name == "blob larger than its descriptor":
        big = b"w" * (256 << 10)
        lie = {**titled("adapter_model.safetensors", big), "size": 1024}
        route = lambda h: _stream(h, iter([big]))  # noqa: E731
        return serve_artifact(server, repo, _manifest([layers[0], lie]), {**blobs, _digest(big): route}), [], \
            ["more than the 1024 bytes it declared"]
    if name == "blob Content-Length differs from descriptor":
        data = ADAPTER["adapter_model.safetensors"]
        route = lambda h: _send(h, 200, data + b"extra")  # noqa: E731
        return serve_artifact(server, repo, _manifest(layers), {**blobs, _digest(data): route}), [], \
            ["declares 5005 bytes, the descriptor 5000"]
    if name == "descriptor of 10^12 bytes":
        huge = {**titled("adapter_model.safetensors", b"w"), "size": 10**12}
        return serve_artifact(server, repo, _manifest([layers[0], huge]), blobs), [], ["declare", "total cap"]
    if name == "blob over the per-blob cap":
        data = ADAPTER["adapter_model.safetensors"]
        return serve_artifact(server, repo, _manifest(layers), blobs), ["--max-blob-bytes=4000"], ["per-blob cap"]
    if name == "gzip bomb layer":
        bomb = zeros_gzip(100 << 20)
        layer = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": _digest(bomb), "size": len(bomb)}
        return serve_artifact(server, repo, _manifest([layer]), {_digest(bomb): blob_route(bomb)}), [], \
            ["expands more than 50x"]
    if name == "corrupt gzip layer":
        bad = b"\x1f\x8b\x08\x00" + b"\xff" * 500
        layer = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": _digest(bad), "size": len(bad)}
        return serve_artifact(server, repo, _manifest([layer]), {_digest(bad): blob_route(bad)}), [], \
            ["corrupt layer archive"]
    if name == "trickling blob":
        data = ADAPTER["adapter_model.safetensors"]
        route = lambda h: (h.send_response(200), h.send_header("Content-Length", str(len(data))), h.end_headers(),  # noqa: E731
                           [(h.wfile.write(b"w"), h.wfile.flush(), time.sleep(0.25)) for _ in range(40)])
        return serve_artifact(server, repo, _manifest(layers), {**blobs, _digest(data): route}), \
            ["--stall-window=1", "--min-rate=500"], ["stalled"]
    if name == "token realm at the metadata service":
        server.routes["/v2/"] = lambda h: _send(h, 401, headers={
            "WWW-Authenticate": 'Bearer realm="http://169.254.169.254/token",service="x"'})
        ref = f"registry.example:{server.port}/{repo}:v1"
        server.routes[f"/v2/{repo}/manifests/v1"] = server.routes["/v2/"]
        return ref, [], ["169.254.169.254 is a cloud metadata address"]
    if name == "blob redirected to a private store":
        data = ADAPTER["adapter_model.safetensors"]
        route = redirect("http://private.example/blob")
        return serve_artifact(server, repo, _manifest(layers), {**blobs, _digest(data): route}), [], ["private range"]
    if name == "blob redirected to loopback":
        data = ADAPTER["adapter_model.safetensors"]
        route = redirect(f"http://127.0.0.1:{server.port}/x")
        return serve_artifact(server, repo, _manifest(layers), {**blobs, _digest(data): route}), [], ["loopback"]
    raise KeyError(name)


REGISTRY_CASES = [
    "oversized manifest", "oversized streamed manifest", "manifest not JSON", "manifest gzip-encoded",
    "too many layers", "index of an index", "blob larger than its descriptor",
    "blob Content-Length differs from descriptor", "descriptor of 10^12 bytes", "blob over the per-blob cap",
    "gzip bomb layer", "corrupt gzip layer", "trickling blob", "token realm at the metadata service",
    "blob redirected to a private store", "blob redirected to loopback",
]


@pytest.mark.parametrize("case", REGISTRY_CASES)
def test_hostile_registry(case: str, server: HostileServer, net: SimulatedNetwork, tmp_path: Path,
                          tlog: Path, capsys: pytest.CaptureFixture[str]):
    ref, flags, words = _registry_case(case, server)
    out = tmp_path / "adapters" / "a"
    started = time.monotonic()
    rc = fetch_adapter.main([f"--image={ref}", f"--output={out}", "--retries=0", "--insecure", *flags])
    assert rc == 1
    err = one_line(capsys, tlog)
    assert err.startswith(f"fetch adapter {ref}: "), err
    assert "unexpected" not in err, err
    for word in words:
        assert word in err, err
    assert time.monotonic() - started < 30
    assert not out.exists() and list((tmp_path / "adapters").iterdir()) == []
    assert set(net.dialled) <= SERVED


def test_registry_through_the_guard_works(server: HostileServer, net: SimulatedNetwork, tmp_path: Path,
                                          tlog: Path):
    layers, blobs = good_layers()
    ref = serve_artifact(server, "good/adapter", _manifest(layers), blobs)
    assert fetch_adapter.main([f"--image={ref}", f"--output={tmp_path / 'a'}", "--retries=0", "--insecure"]) == 0
    assert {p.name: p.read_bytes() for p in (tmp_path / "a").iterdir()} == ADAPTER
    assert net.lookups == ["registry.example"]  # one lookup for the whole pull


def test_loopback_lookalike_registry_is_neither_plain_http_nor_reached(net: SimulatedNetwork, tmp_path: Path,
                                                                       tlog: Path, capsys: pytest.CaptureFixture[str]):
    assert not is_loopback("127.evil.example:5000")
    ref = "127.evil.example:5000/a/b:v1"
    assert fetch_adapter.main([f"--image={ref}", f"--output={tmp_path / 'a'}", "--retries=0"]) == 1
    err = one_line(capsys, tlog)
    assert "which resolves to 127.0.0.1: 127.0.0.1 is a loopback address" in err and "https://" not in err
    assert net.dialled == []


def test_credentials_never_go_over_plain_http(net: SimulatedNetwork, tmp_path: Path, tlog: Path,
                                              capsys: pytest.CaptureFixture[str]):
    secrets = tmp_path / "secrets" / "s"
    secrets.mkdir(parents=True)
    (secrets / ".dockerconfigjson").write_text(json.dumps(
        {"auths": {"registry.example:8080": {"username": "u", "password": "p"}}}))
    assert fetch_adapter.main(["--image=registry.example:8080/a/b:v1", f"--output={tmp_path / 'a'}",
                               "--insecure", f"--docker-config-dir={secrets.parent}"]) == 1
    assert "credentials over plain http" in one_line(capsys, tlog)
    assert net.dialled == []


def test_push_session_is_guarded(server: HostileServer, tmp_path: Path):
    """oras-py's requests session: a redirect to the metadata service and a name resolving to a
    private address are refused (and the refusal is one oras does not retry)."""
    import requests

    from kaito_egress.requests_adapter import RequestsEgressRefused, guard_session

    sim = SimulatedNetwork(server.port)
    server.routes["/ok"] = lambda h: _send(h, 200, b"fine")
    server.routes["/to-meta"] = redirect("http://metadata.example/latest")
    session = guard_session(requests.Session(), sim.guard())
    assert session.get(f"http://data.example:{server.port}/ok", timeout=10).text == "fine"
    with pytest.raises(RequestsEgressRefused, match="resolves to 169.254.169.254"):
        session.get(f"http://data.example:{server.port}/to-meta", timeout=10)
    with pytest.raises(requests.exceptions.SSLError, match="private range"):
        session.get("http://private.example/x", timeout=10)
    with pytest.raises(EgressRefused, match="loopback"):
        session.get(f"http://127.0.0.1:{server.port}/ok", timeout=10)
    assert set(sim.dialled) == {"93.184.216.34"}


@pytest.mark.parametrize("host, insecure, words", [
    ("registry.example:8080", True, "credentials over plain http"),
    ("127.evil.example:5000", False, "which resolves to 127.0.0.1"),
    ("0x7f.1:5000", False, "127.0.0.1 is a loopback address"),
    ("metadata.example", False, "169.254.169.254"),
])
def test_push_preflight_is_guarded(server: HostileServer, host: str, insecure: bool, words: str):
    from tuning_job.push import PushError, preflight

    sim = SimulatedNetwork(server.port)
    with pytest.raises(PushError, match=words):
        preflight(host, "adapters/x", ("user", "secret"), insecure=insecure, retries=0, guard=sim.guard())
    assert sim.dialled == []


def test_credentials_are_dropped_when_a_redirect_leaves_the_origin(server: HostileServer):
    """A registry redirecting a blob to storage elsewhere (answered in-process) must not see
    the pull secret forwarded there."""
    from kaito_egress.http import guarded_client, open_stream

    sim = SimulatedNetwork(server.port)
    seen: list[tuple[str, str | None]] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.host, request.headers.get("authorization")))
        if request.url.host == "registry.example":
            return httpx.Response(307, headers={"Location": "https://cdn.example/blob?sig=1"})
        return httpx.Response(200, content=b"blob")

    guard = sim.guard()
    with guarded_client(guard, transport=httpx.MockTransport(handle)) as client:
        resp = open_stream(client, guard, "https://registry.example/v2/a/blobs/x",
                           headers={"Authorization": "Bearer secret"})
        resp.close()
    assert seen == [("registry.example", "Bearer secret"), ("cdn.example", None)]
    assert sim.lookups == ["registry.example", "cdn.example"] and sim.dialled == []
