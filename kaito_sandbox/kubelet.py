"""A kubelet for the sandbox: pods scheduled on the simulated GPU nodes run as local
processes, and their status is reported from those processes.

Init containers run one after another, then the main container; an HTTP readiness probe
decides Ready; a crash is reported as CrashLoopBackOff with the exit code and the
termination message (or the last log lines) and restarted with back-off, unless the pod's
restartPolicy is Never (Jobs), which ends it Failed.

Volumes are folders: a pod's own under its folder, a `persistentVolumeClaim` the same folder
`<root>/claims/<namespace>/<claim>` for every pod that mounts the claim (the sandbox's stand-in
for the bound volume: fill it to give a tuning Job its input), a `hostPath` the path itself
(the simulated node is this machine).
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from kaito_sandbox.containers import LocalCommand, NotRunnable, local_command

MERGE = {"Content-Type": "application/merge-patch+json"}
BACKOFF_START, BACKOFF_MAX = 2.0, 30.0


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PodRun:
    """One pod's processes on this machine."""

    pod: dict[str, Any]
    directory: Path
    port: int | None
    containers: list[tuple[bool, dict[str, Any]]]
    """(is init container, spec) in run order."""
    stage: int = 0
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    started: str = field(default_factory=_now)
    ready: bool = False
    last_exit: dict[str, Any] | None = None
    phase: str = "Pending"
    unrunnable: str | None = None

    @property
    def current(self) -> dict[str, Any]:
        return self.containers[min(self.stage, len(self.containers) - 1)][1]


class Kubelet:
    """Runs the pods bound to `nodes()` of the simulated cluster."""

    def __init__(self, http: httpx.Client, root: Path, fixed_mounts: dict[str, Path]) -> None:
        self.http, self.root, self.fixed = http, root, fixed_mounts
        self.runs: dict[str, PodRun] = {}

    # --- lifecycle -----------------------------------------------------------------------
    def sync(self, pods: list[dict[str, Any]]) -> None:
        alive = set()
        for pod in pods:
            uid = pod["metadata"]["uid"]
            if not pod["spec"].get("nodeName") or pod["metadata"].get("deletionTimestamp"):
                continue
            alive.add(uid)
            run = self.runs.get(uid) or self._admit(pod)
            self._step(run)
            self._report(run, pod)
        for uid in set(self.runs) - alive:
            self._kill(self.runs.pop(uid))

    def stop(self) -> None:
        for run in self.runs.values():
            self._kill(run)
        self.runs.clear()

    def _admit(self, pod: dict[str, Any]) -> PodRun:
        meta = pod["metadata"]
        directory = self.root / "pods" / f"{meta['namespace']}_{meta['name']}_{meta['uid'][:8]}"
        directory.mkdir(parents=True, exist_ok=True)
        containers = [(True, c) for c in pod["spec"].get("initContainers") or []]
        containers += [(False, c) for c in pod["spec"].get("containers") or []]
        serves = any(p.get("containerPort") for c in pod["spec"].get("containers") or []
                     for p in c.get("ports") or [])
        run = PodRun(pod=pod, directory=directory, port=free_port() if serves else None,
                     containers=containers)
        self.runs[meta["uid"]] = run
        return run

    # --- running -------------------------------------------------------------------------
    def _volumes(self, run: PodRun) -> dict[str, Path]:
        ns = run.pod["metadata"]["namespace"]
        out = {}
        for volume in run.pod["spec"].get("volumes") or []:
            if "hostPath" in volume:
                # The simulated node is this machine: its paths are the node's paths.
                out[volume["name"]] = Path(volume["hostPath"]["path"])
                continue
            claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
            if claim:
                path = self.root / "claims" / ns / claim
            else:
                path = run.directory / "volumes" / volume["name"]
            path.mkdir(parents=True, exist_ok=True)
            out[volume["name"]] = path
            if "configMap" in volume:
                data = self.http.get(f"/api/v1/namespaces/{ns}/configmaps/"
                                     f"{volume['configMap']['name']}").json().get("data") or {}
                for key, value in data.items():
                    (path / key).write_text(value)
            elif "secret" in volume:
                data = self.http.get(f"/api/v1/namespaces/{ns}/secrets/"
                                     f"{volume['secret']['secretName']}").json().get("data") or {}
                items = {i["key"]: i["path"] for i in volume["secret"].get("items") or []}
                for key, value in data.items():
                    if items and key not in items:
                        continue
                    (path / items.get(key, key)).write_bytes(base64.b64decode(value))
        return out

    def _env(self, run: PodRun, container: dict[str, Any]) -> dict[str, str]:
        ns, meta = run.pod["metadata"]["namespace"], run.pod["metadata"]
        env: dict[str, str] = {}
        for var in container.get("env") or []:
            if "value" in var:
                env[var["name"]] = str(var["value"])
            ref = var.get("valueFrom") or {}
            if "secretKeyRef" in ref:
                key = ref["secretKeyRef"]
                secret = self.http.get(f"/api/v1/namespaces/{ns}/secrets/{key['name']}").json()
                if key["key"] in (secret.get("data") or {}):
                    env[var["name"]] = base64.b64decode(secret["data"][key["key"]]).decode()
            if "fieldRef" in ref:
                path = ref["fieldRef"]["fieldPath"]
                if path.startswith("metadata.labels['"):
                    env[var["name"]] = (meta.get("labels") or {}).get(path[17:-2], "")
                elif path in ("metadata.name", "metadata.namespace"):
                    env[var["name"]] = meta[path.split(".")[1]]
        return env

    def _start(self, run: PodRun) -> None:
        container = run.current
        try:
            command: LocalCommand = local_command(
                container, run.directory, self._volumes(run), self.fixed, run.port,
                self._env(run, container))
        except NotRunnable as exc:
            run.unrunnable = str(exc)
            return
        for link, target in command.links.items():
            link.parent.mkdir(parents=True, exist_ok=True)
            if link.is_symlink():
                link.unlink()
            link.symlink_to(target, target_is_directory=True)
        log = open(run.directory / f"{container['name']}.log", "ab")  # noqa: SIM115
        run.proc = subprocess.Popen(
            command.argv, env={**os.environ, **command.env}, cwd=command.cwd, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        run.ready = False

    def _step(self, run: PodRun) -> None:
        if run.unrunnable or run.phase in ("Succeeded", "Failed"):
            return
        if run.proc is None:
            if time.monotonic() >= run.next_start:
                self._start(run)
            return
        code = run.proc.poll()
        if code is None:
            if not run.containers[run.stage][0]:
                run.ready = self._probe(run)
            return
        run.proc, run.ready = None, False
        run.last_exit = self._exit_record(run, code)
        is_init = run.containers[run.stage][0]
        if code == 0 and (is_init or run.pod["spec"].get("restartPolicy") in ("Never",
                                                                               "OnFailure")):
            run.stage += 1
            if run.stage >= len(run.containers):
                run.phase = "Succeeded"
            return
        if run.pod["spec"].get("restartPolicy") == "Never":
            run.phase = "Failed"
            return
        run.restarts += 1
        run.next_start = time.monotonic() + min(BACKOFF_START * 2 ** (run.restarts - 1),
                                                BACKOFF_MAX)

    def _exit_record(self, run: PodRun, code: int) -> dict[str, Any]:
        name = run.current["name"]
        message = ""
        termination = run.directory / f"{name}.termination-log"
        if termination.exists():
            message = termination.read_text().strip()
        if not message and code != 0:
            log = (run.directory / f"{name}.log").read_text(errors="replace").splitlines()
            message = "\n".join(log[-5:])
        return {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
                "message": message[-1024:], "finishedAt": _now()}

    def _probe(self, run: PodRun) -> bool:
        probe = run.current.get("readinessProbe") or {}
        get = probe.get("httpGet")
        if not get or run.port is None:
            return True
        try:
            response = httpx.get(f"http://127.0.0.1:{run.port}{get.get('path', '/')}",
                                 timeout=0.5)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    @staticmethod
    def _kill(run: PodRun) -> None:
        if run.proc is not None and run.proc.poll() is None:
            try:
                os.killpg(run.proc.pid, signal.SIGTERM)
                run.proc.wait(10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(run.proc.pid, signal.SIGKILL)
                run.proc.wait(5)

    # --- status --------------------------------------------------------------------------
    def status_of(self, run: PodRun) -> dict[str, Any]:
        statuses: dict[str, list[dict[str, Any]]] = {"init": [], "main": []}
        for index, (is_init, container) in enumerate(run.containers):
            entry: dict[str, Any] = {"name": container["name"], "image": container.get("image"),
                                     "restartCount": run.restarts if index == run.stage else 0,
                                     "ready": False}
            if index < run.stage:
                entry["state"] = {"terminated": {"exitCode": 0, "reason": "Completed"}}
            elif index > run.stage:
                entry["state"] = {"waiting": {"reason": "PodInitializing"}}
            elif run.unrunnable:
                entry["state"] = {"waiting": {"reason": "ErrImagePull",
                                              "message": run.unrunnable}}
            elif run.phase in ("Succeeded", "Failed"):
                entry["state"] = {"terminated": run.last_exit or {}}
            elif run.proc is not None:
                entry["state"] = {"running": {"startedAt": run.started}}
                entry["ready"] = run.ready
            else:
                entry["state"] = {"waiting": {"reason": "CrashLoopBackOff" if run.restarts else
                                              "ContainerCreating",
                                              "message": "back-off restarting failed container"
                                              if run.restarts else ""}}
            if run.last_exit and index == run.stage and run.restarts:
                entry["lastState"] = {"terminated": run.last_exit}
            statuses["init" if is_init else "main"].append(entry)
        done = run.phase in ("Succeeded", "Failed")
        running_main = run.stage >= len(statuses["init"]) and not done
        phase = run.phase if done else ("Running" if running_main else "Pending")
        ready = running_main and all(s["ready"] for s in statuses["main"])
        return {
            "phase": phase,
            "startTime": run.started,
            "hostIP": "127.0.0.1",
            "podIP": "127.0.0.1",
            "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Initialized", "status": "True" if running_main or done else "False"},
                {"type": "Ready", "status": "True" if ready else "False"},
            ],
            "initContainerStatuses": statuses["init"],
            "containerStatuses": statuses["main"],
        }

    def _report(self, run: PodRun, pod: dict[str, Any]) -> None:
        status = self.status_of(run)
        live = pod.get("status") or {}
        if any(live.get(k) != v for k, v in status.items()):
            meta = pod["metadata"]
            self.http.patch(f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status",
                            json={"status": status}, headers=MERGE)
