"""How the workspace controller scales: N Workspaces provisioning at once.

Runs the real `kaito-operator` command as a subprocess, creates N Workspaces at once, and
prints:
- the time until all are ResourceReady and WorkspaceReady (goal: near T + a few seconds,
  not N x T / workers),
- reconcile latency p50/p99 (from the operator's Prometheus histogram),
- the API calls per Workspace the operator made (its own client's and kopf's: every request
  from apply to ready, watches and kopf's listings included, divided by N), by verb and kind,
- the operator's peak RSS and its CPU time against that of what plays the cluster.

By default the API server is the in-process emulator and a simulated cluster (each Machine
becomes a Ready Node after T seconds, Deployments get Ready pods). With `--kubeconfig` it is
the real API server of that kubeconfig's context, reached through a counting proxy on
loopback, with simulated nodes and kubelet as a light loop in a process of its own (see
`real_cluster.py`); the cluster's own controllers and scheduler do the rest.

    python benchmarks/operator_scale.py --workspaces 200 --provision-seconds 5
    python benchmarks/operator_scale.py --workspaces 500 --kubeconfig ~/.kube/config
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from kaito_sandbox.sim.cluster import SimulatedCluster
from kaito_sandbox.sim.kube_api import KubeApiEmulator, RequestRecord

NS = "bench"
WS_PATH = f"/apis/kaito.sh/v1alpha1/namespaces/{NS}/workspaces"
#: What the workspace controller watches.
WATCHED = {"workspaces", "machines", "nodes", "pods", "services", "deployments", "statefulsets",
           "jobs"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def workspace(i: int) -> dict[str, Any]:
    return {
        "apiVersion": "kaito.sh/v1alpha1",
        "kind": "Workspace",
        "metadata": {"name": f"ws-{i:04d}", "namespace": NS},
        "resource": {"instanceType": "Standard_NC6s_v3",
                     "labelSelector": {"matchLabels": {"apps": f"bench-{i}"}}},
        "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}},
    }


def count_true(items: list[dict[str, Any]], type_: str) -> int:
    total = 0
    for item in items:
        for cond in (item.get("status") or {}).get("conditions") or []:
            total += cond["type"] == type_ and cond["status"] == "True"
    return total


def quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """Upper bound of the bucket holding quantile q (Prometheus histogram)."""
    total = buckets[-1][1]
    for bound, count in buckets:
        if count >= q * total:
            return bound
    return float("inf")


def histogram(text: str, name: str) -> list[tuple[float, float]]:
    rows: list[tuple[float, float]] = []
    for line in text.splitlines():
        if line.startswith(f"{name}_bucket"):
            bound = line.split('le="')[1].split('"')[0]
            rows.append((float("inf") if bound == "+Inf" else float(bound),
                         float(line.rsplit(" ", 1)[1])))
    return rows


def calls_by_verb_and_kind(calls: list[RequestRecord], workspaces: int) -> list[str]:
    """One line per (verb, resource) with its count per Workspace, most frequent first."""
    counts: dict[tuple[str, str], int] = {}
    for call in calls:
        resource = call.resource or "?"
        if call.subresource:
            resource += "/" + call.subresource
        key = (call.verb or call.method.lower(), resource)
        counts[key] = counts.get(key, 0) + 1
    rows = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [f"  {verb:<7} {resource:<22} {count:6d} ({count / workspaces:5.2f} per Workspace)"
            for (verb, resource), count in rows]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class Target:
    """The API server the operator runs against and what plays the rest of the cluster."""

    url: str
    requests: Callable[[], list[RequestRecord]]
    clear_requests: Callable[[], None]
    cluster_cpu: Callable[[], float]
    """CPU seconds of whatever serves the API and simulates the cluster here."""


@contextmanager
def emulated(provision_seconds: float) -> Iterator[Target]:
    with KubeApiEmulator() as api, SimulatedCluster(api.url, provision_seconds=provision_seconds,
                                                    poll=0.2):
        yield Target(api.url, lambda: api.requests, api.clear_requests,
                     lambda: sum(os.times()[:2]))


@contextmanager
def real_cluster(kubeconfig: str, provision_seconds: float) -> Iterator[Target]:
    from real_cluster import CountingProxy, upstream_login  # next to this script

    with CountingProxy(upstream_login(kubeconfig)) as proxy:
        with httpx.Client(base_url=proxy.url, timeout=30) as http:
            answer = http.post("/api/v1/namespaces", json={
                "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
            if answer.status_code not in (201, 409):
                answer.raise_for_status()
        loop = subprocess.Popen([
            sys.executable, str(Path(__file__).with_name("real_cluster.py")),
            "--server", proxy.url, "--namespace", NS,
            "--provision-seconds", str(provision_seconds)])
        try:
            yield Target(proxy.url, lambda: proxy.requests, proxy.clear_requests,
                         lambda: sum(os.times()[:2]) + cpu_seconds(loop.pid))
        finally:
            loop.terminate()
            loop.wait(30)


def wait_watching(api: Target, timeout: float) -> None:
    """Until kopf lists and watches every kind the operator watches: start-up, not the
    Workspaces' calls."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if {r.resource for r in api.requests()
                if r.user_agent.startswith("kopf") and r.verb == "watch"} >= WATCHED:
            return
        time.sleep(0.1)
    raise TimeoutError("the operator did not start watching")


def delete_workspaces(http: httpx.Client, timeout: float) -> None:
    """Delete the benchmark's Workspaces (a real cluster keeps them) and wait until they go:
    the operator's finalizer deletes their Machines, the light loop their Nodes."""
    http.delete(WS_PATH)
    deadline = time.monotonic() + timeout
    while http.get(WS_PATH).json()["items"] and time.monotonic() < deadline:
        time.sleep(1.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--workspaces", type=int, default=200)
    parser.add_argument("--provision-seconds", type=float, default=5.0)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--kubeconfig", default=None,
                        help="run against this kubeconfig's API server instead of the emulator")
    args = parser.parse_args()

    target = (real_cluster(args.kubeconfig, args.provision_seconds) if args.kubeconfig
              else emulated(args.provision_seconds))
    with target as api, tempfile.TemporaryDirectory() as tmp:
        kubeconfig = Path(tmp) / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "bench",
            "clusters": [{"name": "bench", "cluster": {"server": api.url}}],
            "users": [{"name": "u", "user": {"token": "t"}}],
            "contexts": [{"name": "bench", "context": {"cluster": "bench", "user": "u"}}],
        }))
        metrics_port = free_port()
        env = dict(os.environ, KUBECONFIG=str(kubeconfig), KAITO_REQUEUE_SECONDS="10",
                   KAITO_LOG_LEVEL="WARNING")
        command = Path(sys.executable).parent / "kaito-operator"
        operator = subprocess.Popen(
            [str(command), "-n", NS, "--liveness", "", "--metrics-port", str(metrics_port)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )
        try:
            with httpx.Client(base_url=api.url, timeout=30) as http:
                wait_watching(api, args.timeout)
                api.clear_requests()
                start = time.monotonic()
                for i in range(args.workspaces):
                    http.post(WS_PATH, json=workspace(i)).raise_for_status()
                created = time.monotonic() - start
                resource_ready = ready = None
                while time.monotonic() - start < args.timeout:
                    items = http.get(WS_PATH).json()["items"]
                    now = time.monotonic() - start
                    if resource_ready is None and count_true(items, "ResourceReady") == len(items):
                        resource_ready = now
                    if count_true(items, "WorkspaceReady") == args.workspaces:
                        ready = now
                        break
                    time.sleep(0.25)
                calls = [r for r in api.requests()
                         if (r.user_agent or "").startswith(("kaito-operator", "kopf"))]
                metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
                rss = peak_rss_mib(operator.pid)
                operator_cpu = cpu_seconds(operator.pid)
                own_cpu = api.cluster_cpu()
                if args.kubeconfig:
                    delete_workspaces(http, args.timeout)
        finally:
            operator.terminate()
            operator.wait(30)

    buckets = histogram(metrics, "kaito_workspace_reconcile_duration_seconds")
    print(f"workspaces:                  {args.workspaces}")
    print(f"provisioning per node (T):   {args.provision_seconds:.1f} s")
    print(f"created all in:              {created:.2f} s")
    print(f"all ResourceReady after:     {resource_ready if resource_ready is None else f'{resource_ready:.2f} s'}")
    print(f"all WorkspaceReady after:    {ready if ready is None else f'{ready:.2f} s'}")
    print(f"serial estimate N x T:       {args.workspaces * args.provision_seconds:.0f} s")
    print(f"reconcile passes:            {int(buckets[-1][1]) if buckets else 0}")
    print(f"reconcile latency p50 / p99: <= {quantile(buckets, 0.5)} s / <= {quantile(buckets, 0.99)} s")
    print(f"operator API calls:          {len(calls)} ({len(calls) / args.workspaces:.1f} per Workspace)")
    print("\n".join(calls_by_verb_and_kind(calls, args.workspaces)))
    print(f"operator peak RSS:           {rss:.0f} MiB")
    cluster = "benchmark + simulated nodes" if args.kubeconfig else "emulator + simulated cluster"
    print(f"CPU: operator {operator_cpu:.1f} s, {cluster} {own_cpu:.1f} s")
    return 0 if ready is not None else 1


if __name__ == "__main__":
    raise SystemExit(main())
