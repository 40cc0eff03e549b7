"""The node agent: controllers, scheduler, kubelet and Service proxies in one polling loop.

It keeps the sandbox's simulated cluster moving: workload controllers create pods, the
scheduler binds them to the simulated GPU nodes, the kubelet runs them as local processes,
and each Service gets a local port. One loop, bounded work per round, loopback only.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from kaito_sandbox.controllers import sync_workloads
from kaito_sandbox.kubelet import MERGE, Kubelet
from kaito_sandbox.scheduling import choose_node
from kaito_sandbox.services import ServiceProxies, selects

log = logging.getLogger(__name__)


class NodeAgent:
    def __init__(self, server: str, root: Path, fixed_mounts: dict[str, Path],
                 poll: float = 0.3, on_services: Callable[[dict[str, int]], None] | None = None
                 ) -> None:
        self.server, self.poll = server, poll
        self.http = httpx.Client(base_url=server, timeout=10)
        self.kubelet = Kubelet(self.http, root, fixed_mounts)
        self.proxies = ServiceProxies(self._backend)
        self._services: dict[str, list[dict[str, Any]]] = {}
        self._pods: list[dict[str, Any]] = []
        self._on_services = on_services
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sandbox-agent", daemon=True)

    def start(self) -> NodeAgent:
        self.proxies.start()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        self.kubelet.stop()
        self.proxies.stop()
        self.http.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.round()
            except httpx.HTTPError as exc:
                log.debug("agent round failed: %s", exc)
            except Exception:  # noqa: BLE001 - the sandbox keeps going and says why
                log.exception("agent round failed")
            self._stop.wait(self.poll)

    def round(self) -> None:
        pods = self.http.get("/api/v1/pods").json().get("items", [])
        sync_workloads(self.http, pods)
        pods = self.http.get("/api/v1/pods").json().get("items", [])
        nodes = self.http.get("/api/v1/nodes").json().get("items", [])
        for pod in pods:
            if pod["spec"].get("nodeName") or pod["metadata"].get("deletionTimestamp"):
                continue
            node, reason = choose_node(pod, nodes, pods)
            meta = pod["metadata"]
            path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
            if node:
                self.http.patch(path, json={"spec": {"nodeName": node}}, headers=MERGE)
                pod["spec"]["nodeName"] = node
            else:
                unschedulable = [{"type": "PodScheduled", "status": "False",
                                  "reason": "Unschedulable", "message": reason}]
                if (pod.get("status") or {}).get("conditions") != unschedulable:
                    self.http.patch(f"{path}/status", headers=MERGE, json={
                        "status": {"phase": "Pending", "conditions": unschedulable}})
        self.kubelet.sync(pods)
        self._pods = pods
        self._sync_services()

    def _sync_services(self) -> None:
        services = self.http.get("/api/v1/services").json().get("items", [])
        seen = {}
        for service in services:
            meta = service["metadata"]
            if service["spec"].get("clusterIP") == "None":
                continue  # headless: nothing to forward
            key = f"{meta['namespace']}/{meta['name']}"
            self._services[key] = [service]
            seen[key] = self.proxies.ensure(key)
        for key in set(self.proxies.ports) - set(seen):
            self.proxies.close(key)
            self._services.pop(key, None)
        if self._on_services is not None:
            self._on_services(dict(seen))

    def _backend(self, key: str) -> int | None:
        """Local port of a Ready pod behind Service `key`."""
        for service in self._services.get(key, []):
            for pod in self._pods:
                run = self.kubelet.runs.get(pod["metadata"]["uid"])
                if run and run.ready and run.port and selects(service, pod):
                    return run.port
        return None
