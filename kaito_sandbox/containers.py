"""What a pod's container becomes on this machine: a local process (pure translation).

The sandbox can run only the product's own images, whose entry points are Python modules
(`python -m inference_server`, `python -m inference_server.fetch_adapter`,
`python -m tuning_job`). Paths inside the container are mapped to folders of the pod on this
disk, the HTTP port to a free loopback port, and the listen address to 127.0.0.1, so nothing
is reachable from outside the machine.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Modules the sandbox knows how to run (the product's images).
RUNNABLE = ("inference_server", "tuning_job")


class NotRunnable(Exception):
    """The container needs an image the sandbox cannot run (shown as the pod's reason)."""


@dataclass(frozen=True)
class LocalCommand:
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    port: int | None = None
    """Loopback port the process serves HTTP on, if it is a server."""
    mounts: dict[str, Path] = field(default_factory=dict)
    links: dict[Path, Path] = field(default_factory=dict)
    """Symbolic links (link → target) to create before the process starts: see
    `parent_folders`."""


def _module(container: dict[str, Any]) -> str | None:
    command = list(container.get("command") or [])
    if len(command) >= 3 and command[0] in ("python", "python3") and command[1] == "-m":
        return command[2]
    return None


def mount_map(pod_dir: Path, container: dict[str, Any], volumes: dict[str, Path],
              fixed: dict[str, Path]) -> dict[str, Path]:
    """Container path → local path: the pod's volumes, then fixed paths of the image
    (the weights, the presets folder)."""
    mounts = dict(fixed)
    for mount in container.get("volumeMounts") or []:
        local = volumes.get(mount["name"])
        if local is not None:
            mounts[mount["mountPath"]] = local
    mounts.setdefault("/dev/termination-log", pod_dir / f"{container['name']}.termination-log")
    return mounts


def map_path(value: str, mounts: dict[str, Path]) -> str:
    """A container path (longest mount first) as its local path; other values unchanged."""
    for container_path in sorted(mounts, key=len, reverse=True):
        if value == container_path or value.startswith(container_path.rstrip("/") + "/"):
            return str(mounts[container_path]) + value[len(container_path):]
    return value


def parent_folders(values: list[str], mounts: dict[str, Path], pod_dir: Path,
                   container: str) -> tuple[dict[str, Path], dict[Path, Path]]:
    """Container folders that exist only as the parent of mounts, when a value names one
    (`--docker-config-dir=/var/run/secrets/kaito/docker`, each Secret mounted in a subfolder):
    a local folder of links to those mounts stands in for it. Returns (extra mounts, links)."""
    extra: dict[str, Path] = {}
    links: dict[Path, Path] = {}
    for value in values:
        path = value.rstrip("/")
        if not path.startswith("/") or map_path(path, mounts) != path:
            continue  # not a path, or already inside a mount
        below = {m: local for m, local in mounts.items() if m.startswith(path + "/")}
        if not below:
            continue
        folder = pod_dir / "parents" / container / path.lstrip("/")
        extra[path] = folder
        for mount_path, local in below.items():
            links[folder / mount_path[len(path) + 1:]] = local
    return extra, links


def _value(arg: str) -> str:
    return arg.partition("=")[2] if arg.startswith("--") and "=" in arg else arg


def rewrite(arg: str, mounts: dict[str, Path]) -> str:
    """`--flag=/container/path` and bare paths become local paths."""
    if arg.startswith("--") and "=" in arg:
        flag, _, value = arg.partition("=")
        return f"{flag}={map_path(value, mounts)}"
    return map_path(arg, mounts)


def local_command(
    container: dict[str, Any],
    pod_dir: Path,
    volumes: dict[str, Path],
    fixed: dict[str, Path],
    port: int | None,
    env_values: dict[str, str],
) -> LocalCommand:
    module = _module(container)
    if module is None or module.split(".")[0] not in RUNNABLE:
        raise NotRunnable(
            f"image {container.get('image')} cannot run in the sandbox: only the product's "
            "own images (python -m inference_server / tuning_job) run here"
        )
    mounts = mount_map(pod_dir, container, volumes, fixed)
    raw_args = list(container.get("args") or [])
    extra, links = parent_folders([*map(_value, raw_args), *env_values.values()], mounts,
                                  pod_dir, container["name"])
    mounts.update(extra)
    args = [rewrite(a, mounts) for a in raw_args]
    if module == "inference_server" and port is not None:
        args = [a for a in args if not a.startswith(("--port=", "--host="))]
        args += [f"--port={port}", "--host=127.0.0.1"]
    env = {k: rewrite(v, mounts) for k, v in env_values.items()}
    env["KAITO_TERMINATION_LOG"] = str(mounts["/dev/termination-log"])
    # Everything the sandbox serves (registry, data) is on 127.0.0.1: let the egress guard
    # of the fetchers reach literal loopback addresses, which it refuses in a cluster.
    env["KAITO_EGRESS_ALLOW_LOOPBACK"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return LocalCommand(
        argv=[sys.executable, "-m", module, *args],
        env=env,
        cwd=pod_dir,
        port=port if module == "inference_server" else None,
        mounts=mounts,
        links=links,
    )
