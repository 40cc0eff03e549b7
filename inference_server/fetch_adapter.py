"""Init-container entry point: pull one LoRA adapter from a registry into a local directory.

`python -m inference_server.fetch_adapter --image=REF --output=/mnt/adapter/NAME
[--docker-config-dir=/var/run/secrets/kaito/docker]`.  REF is either an OCI artifact pushed by oras
(titled layers: the files themselves, or a directory tarball) or a container image whose
filesystem holds the adapter under `/data` (KAITO's older convention).  The registry side (auth,
retries, manifests, digest-checked blobs) is `inference_server.oci_client`, the traversal-proof
extraction `inference_server.adapter_layers`; this module runs the pull and owns the CLI.

Failure is one line on stderr and in `/dev/termination-log` (what `kubectl describe pod`
shows; `kaito_workload.termination`), exit code 1; the output directory is replaced atomically,
so a restarted init container never sees a half-written adapter.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx

from inference_server.adapter_layers import (
    Bounds,
    FetchError,
    Layer,
    extract,
    is_tarball,
    safe_relpath,
    write_file,
)
from inference_server.oci_client import DEFAULT_LIMITS, RegistryClient
from kaito_egress.flags import add_limit_flags, at_most, limits_from
from kaito_egress.guard import EgressError, EgressGuard
from kaito_egress.limits import (
    Budget,
    Deadline,
    TransferLimits,
    human,
)
from kaito_workload.oci import Credentials, RegistryError, load_auths, parse_reference
from kaito_workload.termination import report_failure

__all__ = ["FetchError", "build_parser", "fetch", "main", "safe_relpath"]

TITLE = "org.opencontainers.image.title"
MAX_LAYERS = 128



@contextlib.contextmanager
def _as_fetch_error() -> Iterator[None]:
    """Registry and egress failures surface as :class:`FetchError` with their message."""
    try:
        yield
    except (RegistryError, EgressError) as err:
        raise FetchError(str(err)) from err


def _layers(manifest: dict[str, Any], limits: TransferLimits) -> list[dict[str, Any]]:
    """The manifest's layer descriptors, refused up front when they exceed the caps."""
    layers = manifest.get("layers") or manifest.get("blobs") or []
    if not isinstance(layers, list) or not all(isinstance(x, dict) for x in layers):
        raise FetchError("manifest layers are not a list of descriptors")
    if len(layers) > MAX_LAYERS:
        raise FetchError(f"manifest lists {len(layers)} layers, more than {MAX_LAYERS}")
    sizes = [x.get("size") for x in layers]
    declared = [n for n in sizes if isinstance(n, int) and n >= 0]
    if len(declared) == len(sizes):
        total = sum(declared)
        if total > limits.max_total_bytes:
            raise FetchError(f"the adapter's layers declare {total} bytes, more than the "
                             f"total cap of {human(limits.max_total_bytes)}")
    return layers


def fetch(image: str, output: Path, auths: Mapping[str, Credentials], *,
          insecure: bool = False, retries: int = 5, backoff: float = 0.5,
          transport: httpx.BaseTransport | None = None, guard: EgressGuard | None = None,
          limits: TransferLimits = DEFAULT_LIMITS) -> tuple[str, list[str]]:
    """Pulls ``image`` into ``output`` (replaced atomically); returns (digest, file names)."""
    with _as_fetch_error():
        ref = parse_reference(image)
        bounds = Bounds(limits, Deadline(limits.deadline_s, f"pulling {image}"),
                         Budget(limits.max_total_bytes, "the adapter's blobs"),
                         Budget(limits.max_total_bytes, "the adapter's decompressed layers"),
                         Budget(limits.max_total_bytes, "the adapter's unpacked files"))
        client = RegistryClient(ref.host, ref.repository, auths.get(ref.host),
                                insecure=insecure, retries=retries, backoff=backoff,
                                transport=transport, guard=guard, limits=limits,
                                deadline=bounds.deadline)
        try:
            return _pull(client, ref.version, output, bounds)
        finally:
            client.close()


def _pull(client: RegistryClient, reference: str, output: Path,
          bounds: Bounds) -> tuple[str, list[str]]:
    """Applies the layers of `reference` in a staging directory next to ``output``, checks
    that an adapter came out, then renames the stage to ``output``."""
    output.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        manifest, digest = client.manifest(reference)
        for layer in _layers(manifest, bounds.limits):
            title = str((layer.get("annotations") or {}).get(TITLE, ""))
            with tempfile.TemporaryFile() as raw:
                client.blob(layer, raw, bounds.blobs)
                blob = Layer(raw, bounds, f"layer {layer.get('digest')}")
                try:
                    if title and not is_tarball(layer, title, blob):
                        raw.seek(0)
                        write_file(stage, safe_relpath(title), raw, bounds.unpacked)
                    else:
                        extract(blob, stage, image_layer=not title, budget=bounds.unpacked)
                finally:
                    blob.close()
        if not (stage / "adapter_config.json").is_file():
            found = sorted(str(p.relative_to(stage)) for p in stage.rglob("*") if p.is_file())
            listing = ", ".join(found[:10]) or "no files"
            raise FetchError(f"no adapter_config.json in the adapter (found: {listing}); "
                             f"push the adapter directory's files")
        if output.exists():
            shutil.rmtree(output)
        stage.rename(output)
        return digest, sorted(str(p.relative_to(output)) for p in output.rglob("*"))
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def build_parser() -> argparse.ArgumentParser:
    """The flags the workspace controller's init containers pass."""
    parser = argparse.ArgumentParser(prog="fetch_adapter", description=__doc__.split("\n")[0])
    parser.add_argument("--image", required=True, help="adapter reference (artifact or image)")
    parser.add_argument("--output", required=True, help="directory to fill (replaced)")
    parser.add_argument("--docker-config-dir", help="dir of mounted dockerconfigjson secrets")
    parser.add_argument("--insecure", action="store_true", help="plain http to the registry")
    parser.add_argument("--retries", type=at_most(20), default=5, help="retries per request")
    add_limit_flags(parser, DEFAULT_LIMITS, file_flag="--max-blob-bytes", help_={
        "deadline": "seconds for the whole pull",
        "file": "cap on one blob and on one decompressed layer",
        "total": "cap on the adapter's blobs and on its unpacked files",
        "ratio": "largest decompression ratio of a gzip layer",
        "private": "allow registries on private (RFC 1918, CGNAT, ULA) addresses"})
    parser.add_argument("--termination-log", help="where the failure line goes (default: "
                        "$KAITO_TERMINATION_LOG, else /dev/termination-log)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """CLI; returns the exit code (0 ok, 1 any failure)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        if exit_.code in (0, None):
            return 0
        report_failure("fetch adapter: invalid arguments (see usage above)")
        return 1
    try:
        auths = load_auths(args.docker_config_dir)
        limits = limits_from(args)
        guard = EgressGuard.from_env(allow_private=args.allow_private)
        digest, files = fetch(args.image, Path(args.output), auths, insecure=args.insecure,
                              retries=args.retries, guard=guard, limits=limits)
    except (FetchError, RegistryError) as err:
        report_failure(f"fetch adapter {args.image}: {err}", args.termination_log)
        return 1
    except Exception as err:  # noqa: BLE001 - the pod must say why, whatever broke
        report_failure(f"fetch adapter {args.image}: unexpected {type(err).__name__}: {err}",
                       args.termination_log)
        return 1
    print(f"fetched {args.image} ({digest}) into {args.output}: {', '.join(files)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
