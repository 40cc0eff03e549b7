"""How the workspace controller scales: N Workspaces provisioning at once.

Runs the API emulator and a simulated cluster (each Machine becomes a Ready Node after T
seconds) in this process and the real `kaito-operator` command as a subprocess, creates N
Workspaces at once, and prints:
- the time until all are ResourceReady and WorkspaceReady (goal: near T + a few seconds,
  not N x T / workers),
- reconcile latency p50/p99 (from the operator's Prometheus histogram),
- API calls per Workspace made by the operator,
- the operator's peak RSS.

    python benchmarks/operator_scale.py --workspaces 200 --provision-seconds 5
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

from kaito_sandbox.sim.cluster import SimulatedCluster
from kaito_sandbox.sim.kube_api import KubeApiEmulator

NS = "bench"
WS_PATH = f"/apis/kaito.sh/v1alpha1/namespaces/{NS}/workspaces"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def workspace(i: int) -> dict:
    return {
        "apiVersion": "kaito.sh/v1alpha1",
        "kind": "Workspace",
        "metadata": {"name": f"ws-{i:04d}", "namespace": NS},
        "resource": {"instanceType": "Standard_NC6s_v3",
                     "labelSelector": {"matchLabels": {"apps": f"bench-{i}"}}},
        "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}},
    }


def count_true(items: list[dict], type_: str) -> int:
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
    rows = []
    for line in text.splitlines():
        if line.startswith(f"{name}_bucket"):
            bound = line.split('le="')[1].split('"')[0]
            rows.append((float("inf") if bound == "+Inf" else float(bound),
                         float(line.rsplit(" ", 1)[1])))
    return rows


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspaces", type=int, default=200)
    parser.add_argument("--provision-seconds", type=float, default=5.0)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()

    with KubeApiEmulator() as api, tempfile.TemporaryDirectory() as tmp:
        kubeconfig = Path(tmp) / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "emu",
            "clusters": [{"name": "emu", "cluster": {"server": api.url}}],
            "users": [{"name": "u", "user": {"token": "t"}}],
            "contexts": [{"name": "emu", "context": {"cluster": "emu", "user": "u"}}],
        }))
        metrics_port = free_port()
        env = dict(os.environ, KUBECONFIG=str(kubeconfig), KAITO_REQUEUE_SECONDS="10",
                   KAITO_LOG_LEVEL="WARNING")
        command = Path(sys.executable).parent / "kaito-operator"
        operator = subprocess.Popen(
            [str(command), "-n", NS, "--liveness", "", "--metrics-port", str(metrics_port)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )
        sim = SimulatedCluster(api.url, provision_seconds=args.provision_seconds, poll=0.2)
        try:
            with httpx.Client(base_url=api.url, timeout=30) as http, sim:
                time.sleep(2.0)  # let the operator start watching
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
                calls = [r for r in api.requests
                         if (r.user_agent or "").startswith(("kaito-operator", "kopf"))]
                metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
                rss = peak_rss_mib(operator.pid)
                operator_cpu = cpu_seconds(operator.pid)
                own_cpu = sum(os.times()[:2])
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
    print(f"operator peak RSS:           {rss:.0f} MiB")
    print(f"CPU: operator {operator_cpu:.1f} s, emulator + simulated cluster {own_cpu:.1f} s "
          f"(2 cores shared)")
    return 0 if ready is not None else 1


if __name__ == "__main__":
    raise SystemExit(main())
