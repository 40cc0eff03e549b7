"""What `operator_scale.py --kubeconfig` needs to run against a real API server.

- `upstream_login(kubeconfig)`: the API server and credentials of the kubeconfig's context.
- `CountingProxy`: a reverse proxy on loopback that holds those credentials, forwards every
  request (watches streamed) and records each one as the emulator's request log does (method,
  path, RBAC verb, resource, user agent), so the benchmark counts the operator's API calls the
  same way on both. The operator and the loop below talk to the proxy without credentials.
- `main()` (run as `python benchmarks/real_cluster.py --server URL ...`, a process of its own,
  so its CPU is not the operator's): the simulated nodes and kubelet, a light loop. Each
  Workspace Machine becomes a Ready Node (GPU capacity, the Machine's labels and taints) after
  `--provision-seconds`, with the Machine's status written as the gpu-provisioner would; the
  Nodes' Leases are renewed so the node lifecycle controller keeps them Ready; pods the
  scheduler bound to those Nodes are reported Running and Ready (the kubelet's part; the
  Deployment controller and scheduler are the cluster's own). Nodes whose Machine is gone are
  deleted. Every Node it makes carries `kaito.sh/simulated-node=true`.

Needs the CRDs installed (`kubectl apply -f crds/`) and rights to create Nodes, Leases and pod
status; nothing in the test suite runs this (no cluster there).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import tempfile
import threading
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp
import aiohttp.web
import httpx
import kopf

from kaito_sandbox.sim.routing import RequestRecord, parse_target, verb_of

SIMULATED = "kaito.sh/simulated-node"
WORKSPACE_LABEL = "kaito.sh/workspace"
LEASES = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"
MERGE = {"Content-Type": "application/merge-patch+json"}
#: Headers the proxy does not pass on: it authenticates itself, hop-by-hop headers, and the
#: encoding of bodies its client has already decoded.
DROPPED = {"authorization", "host", "connection", "transfer-encoding", "content-length",
           "content-encoding"}


def upstream_login(kubeconfig: str) -> kopf.ConnectionInfo:
    """The kubeconfig's current context as kopf logs in with it."""
    os.environ["KUBECONFIG"] = kubeconfig
    info = kopf.login_with_kubeconfig(settings=kopf.OperatorSettings())
    if info is None:
        raise SystemExit(f"no usable context in {kubeconfig}")
    return info


def _file(data: str | bytes | None, directory: str, name: str) -> str | None:
    if data is None:
        return None
    path = os.path.join(directory, name)
    with open(path, "wb") as out:
        out.write(data.encode() if isinstance(data, str) else data)
    return path


def _ssl(info: kopf.ConnectionInfo, directory: str) -> ssl.SSLContext | bool:
    if not info.server.startswith("https"):
        return False
    if info.insecure:
        return False
    context = ssl.create_default_context(cafile=str(info.ca_path) if info.ca_path else None)
    if info.ca_data:
        ca = info.ca_data
        context.load_verify_locations(cadata=ca.decode() if isinstance(ca, bytes) else ca)
    cert = info.certificate_path or _file(info.certificate_data, directory, "client.crt")
    key = info.private_key_path or _file(info.private_key_data, directory, "client.key")
    if cert:
        context.load_cert_chain(str(cert), str(key) if key else None)
    return context


class CountingProxy:
    """Loopback proxy to the upstream API server; `requests` is what clients asked."""

    def __init__(self, info: kopf.ConnectionInfo) -> None:
        self._info = info
        self._log: list[RequestRecord] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="counting-proxy", daemon=True)
        self.url = ""

    @property
    def requests(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._log)

    def clear_requests(self) -> None:
        with self._lock:
            self._log.clear()

    def __enter__(self) -> CountingProxy:
        self._thread.start()
        if not self._ready.wait(30):
            raise TimeoutError("the counting proxy did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop, self._stopping = asyncio.get_running_loop(), asyncio.Event()
        headers = {}
        if self._info.token:
            headers["Authorization"] = f"Bearer {self._info.token}"
        auth = (aiohttp.BasicAuth(self._info.username, self._info.password or "")
                if self._info.username else None)
        with tempfile.TemporaryDirectory() as tmp:
            connector = aiohttp.TCPConnector(ssl=_ssl(self._info, tmp), limit=0)
            async with aiohttp.ClientSession(headers=headers, auth=auth, connector=connector,
                                             timeout=aiohttp.ClientTimeout(total=None)) as up:
                runner = aiohttp.web.ServerRunner(
                    aiohttp.web.Server(lambda request: self._forward(up, request)))
                await runner.setup()
                site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
                await site.start()
                self.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
                self._ready.set()
                await self._stopping.wait()
                await runner.cleanup()

    async def _forward(self, up: aiohttp.ClientSession,
                       request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        params = dict(request.query)
        record = RequestRecord(method=request.method, path=request.path, query=params,
                               user_agent=request.headers.get("User-Agent", ""))
        target = parse_target(request.path)
        if target is not None:
            record.verb = verb_of(request.method, target, params)
            record.group, record.version = target.group, target.version
            record.resource, record.subresource = target.plural, target.subresource
            record.namespace, record.name = target.namespace, target.name
        headers = {k: v for k, v in request.headers.items() if k.lower() not in DROPPED}
        async with up.request(request.method, self._info.server.rstrip("/") + request.path_qs,
                              headers=headers, data=await request.read()) as answer:
            record.status = answer.status
            with self._lock:
                self._log.append(record)
            response = aiohttp.web.StreamResponse(status=answer.status, headers={
                k: v for k, v in answer.headers.items() if k.lower() not in DROPPED})
            await response.prepare(request)
            async for chunk in answer.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response


# --- the simulated nodes and kubelet ------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _micro_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class NodesAndKubelet:
    """One round at a time: Machines to Nodes, Leases renewed, bound pods reported Ready."""

    def __init__(self, http: httpx.Client, namespace: str, provision_seconds: float) -> None:
        self.http, self.namespace, self.provision_seconds = http, namespace, provision_seconds
        self._seen: dict[str, float] = {}
        self._renewed = 0.0

    def round(self) -> None:
        machines = self.http.get("/apis/karpenter.sh/v1alpha5/machines",
                                 params={"labelSelector": WORKSPACE_LABEL}).json()["items"]
        for machine in machines:
            name = machine["metadata"]["name"]
            if (machine.get("status") or {}).get("nodeName"):
                continue
            if time.monotonic() - self._seen.setdefault(name, time.monotonic()) >= \
                    self.provision_seconds:
                self._join(machine)
        names = {m["metadata"]["name"] for m in machines}
        nodes = self.http.get("/api/v1/nodes", params={"labelSelector": SIMULATED}).json()["items"]
        ours = set()
        for node in nodes:
            node_name = node["metadata"]["name"]
            if node["metadata"]["labels"].get("kaito.sh/machine") not in names:
                self.http.delete(f"/api/v1/nodes/{node_name}")
                self.http.delete(f"{LEASES}/{node_name}")
            else:
                ours.add(node_name)
        if time.monotonic() - self._renewed > 10.0:
            for node_name in ours:
                self._renew(node_name)
            self._renewed = time.monotonic()
        self._kubelet(ours)

    def _join(self, machine: dict[str, Any]) -> None:
        name = machine["metadata"]["name"]
        sku = next((r["values"][0] for r in machine["spec"].get("requirements", [])
                    if r["key"] == "node.kubernetes.io/instance-type"), "unknown")
        node_name = f"sim-{name}"
        labels = dict(machine["metadata"].get("labels") or {})
        labels.update({"node.kubernetes.io/instance-type": sku, "kubernetes.io/hostname": node_name,
                       "kaito.sh/machine": name, SIMULATED: "true"})
        capacity = {"cpu": "8", "memory": "64Gi", "pods": "110", "nvidia.com/gpu": "1"}
        self.http.post("/api/v1/nodes", json={
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": node_name, "labels": labels},
            "spec": {"taints": machine["spec"].get("taints", []),
                     "providerID": f"simulated:///{name}"},
            "status": {"capacity": capacity, "allocatable": capacity, "conditions": [
                {"type": "Ready", "status": "True", "reason": "KubeletReady",
                 "lastHeartbeatTime": _now(), "lastTransitionTime": _now()}]},
        })
        self._renew(node_name)
        conditions = [{"type": t, "status": "True", "lastTransitionTime": _now()}
                      for t in ("MachineLaunched", "MachineRegistered", "MachineInitialized",
                                "Ready")]
        self.http.patch(f"/apis/karpenter.sh/v1alpha5/machines/{name}/status", headers=MERGE,
                        json={"status": {"nodeName": node_name,
                                         "providerID": f"simulated:///{name}",
                                         "capacity": capacity, "allocatable": capacity,
                                         "conditions": conditions}})

    def _renew(self, node_name: str) -> None:
        spec = {"holderIdentity": node_name, "leaseDurationSeconds": 40,
                "renewTime": _micro_now()}
        answer = self.http.patch(f"{LEASES}/{node_name}", headers=MERGE, json={"spec": spec})
        if answer.status_code == 404:
            self.http.post(LEASES, json={"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                                         "metadata": {"name": node_name}, "spec": spec})

    def _kubelet(self, nodes: set[str]) -> None:
        pods = self.http.get(f"/api/v1/namespaces/{self.namespace}/pods").json()["items"]
        for pod in pods:
            status = pod.get("status") or {}
            if pod["spec"].get("nodeName") not in nodes or status.get("phase") == "Running":
                continue
            containers = [{"name": c["name"], "ready": True, "restartCount": 0,
                           "image": c.get("image", ""), "imageID": "",
                           "state": {"running": {"startedAt": _now()}}}
                          for c in pod["spec"].get("containers") or []]
            self.http.patch(
                f"/api/v1/namespaces/{self.namespace}/pods/{pod['metadata']['name']}/status",
                headers=MERGE, json={"status": {
                    "phase": "Running", "startTime": _now(), "containerStatuses": containers,
                    "conditions": [{"type": t, "status": "True", "lastTransitionTime": _now()}
                                   for t in ("PodScheduled", "Initialized", "ContainersReady",
                                             "Ready")]}})


def main() -> int:
    parser = argparse.ArgumentParser(description="simulated nodes and kubelet (a light loop)")
    parser.add_argument("--server", required=True, help="the counting proxy's URL")
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--provision-seconds", type=float, default=5.0)
    parser.add_argument("--poll", type=float, default=0.5)
    args = parser.parse_args()
    with httpx.Client(base_url=args.server, timeout=30.0,
                      headers={"User-Agent": "simulated-nodes"}) as http:
        loop = NodesAndKubelet(http, args.namespace, args.provision_seconds)
        while True:
            try:
                loop.round()
            except httpx.HTTPError as exc:
                print(f"simulated nodes: {exc}; next round")
            time.sleep(args.poll)


if __name__ == "__main__":
    raise SystemExit(main())
