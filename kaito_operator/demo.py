"""`make demo`: the product's main flow, as far as it runs locally today.

1. the catalog, and the example Workspaces checked the way the admission webhook will;
2. the real workspace controller reconciling the quick-start Workspace against a simulated
   cluster (an API emulator on loopback whose GPU nodes and pods are simulated), with the
   columns `kubectl get workspace` shows turning True.
The local sandbox (DESIGN §8: gpu-provisioner against a simulated Azure, a real inference
server answering /chat) grows out of this.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

from kaito_operator.cli.main import main as kaito

ROOT = Path(__file__).resolve().parents[1]

_INVALID = {
    "apiVersion": "kaito.sh/v1alpha1",
    "kind": "Workspace",
    "metadata": {"name": "workspace-phi-3-medium"},
    "resource": {
        "instanceType": "Standard_NC6s_v3",
        "labelSelector": {"matchLabels": {"apps": "phi-3"}},
    },
    "inference": {
        "preset": {"name": "phi-3-medium-4k-instruct"},
        "adapters": [{"source": {"name": "a1", "image": "myregistry.azurecr.io/a1:1"},
                      "strength": 1.5}],
    },
}


def _step(title: str, command: str) -> None:
    print(f"\n=== {title}\n$ {command}", flush=True)


def run() -> int:
    os.chdir(ROOT)
    print("KAITO in Python: local demo (no cluster or cloud is touched).")
    _step("Model presets and what they need", "kaito presets")
    kaito(["presets"])
    _step("What runs on one V100 (Standard_NC6s_v3)", "kaito presets --fits Standard_NC6s_v3")
    kaito(["presets", "--fits", "Standard_NC6s_v3"])
    examples = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "examples").rglob("*.yaml"))
    _step(
        "The example Workspaces, checked as the admission webhook will",
        "kaito validate examples/*/*.yaml",
    )
    if kaito(["validate", *examples]) != 0:
        print("demo failed: an example is invalid", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(dir=ROOT) as tmp:
        bad = Path(tmp).relative_to(ROOT) / "workspace-phi-3-medium.yaml"
        bad.write_text(yaml.safe_dump(_INVALID, sort_keys=False))
        _step(
            "An invalid Workspace and what its author is told",
            f"kaito validate {bad}",
        )
        if kaito(["validate", str(bad)]) != 1:
            print("demo failed: the invalid Workspace was accepted", file=sys.stderr)
            return 1
    if controller_flow() != 0:
        return 1
    print(
        "\nNext: `helm install` the charts and `kubectl apply -f "
        "examples/inference/kaito_workspace_phi_3_mini.yaml` on a cluster (see README.md)."
    )
    return 0


def controller_flow(timeout: float = 60.0) -> int:
    """The quick-start Workspace reconciled by the real controller on a simulated cluster."""
    import httpx

    from kaito_operator.api.crd import workspace_crd
    from kaito_operator.catalog import load_catalog
    from kaito_operator.cli.columns import columns_table, json_path
    from kaito_operator.settings import Settings
    from kaito_operator.sim.cluster import SimulatedCluster
    from kaito_operator.sim.kube_api import KubeApiEmulator
    from kaito_operator.workspace.operator import OperatorThread
    from kaito_operator.workspace.runtime import WorkspaceRuntime

    logging.getLogger("kopf").setLevel(logging.ERROR)
    catalog = load_catalog()
    example = ROOT / "examples/inference/kaito_workspace_phi_3_mini.yaml"
    workspace = yaml.safe_load(example.read_text())
    name = workspace["metadata"]["name"]
    path = "/apis/kaito.sh/v1alpha1/namespaces/default/workspaces"
    print(
        "\n=== The workspace controller on a SIMULATED cluster\n"
        "The Kubernetes API is an emulator on loopback; GPU nodes join 3 s after their Machine "
        "is created and pods are reported Running by a simulator (no GPU, no cloud).",
        flush=True,
    )

    def gpus(sku: str) -> int:
        found = catalog.sku(sku)
        return found.gpu_count if found else 1

    with KubeApiEmulator() as api, SimulatedCluster(
        api.url, provision_seconds=3.0, gpus_of=gpus
    ), OperatorThread(
        WorkspaceRuntime(catalog, Settings(requeue_seconds=1.0)), api.url, ["default"]
    ), httpx.Client(base_url=api.url, timeout=10) as http:
        _step("Apply the quick-start Workspace", f"kubectl apply -f {example.relative_to(ROOT)}")
        http.post(path, json=workspace).raise_for_status()
        print(f"workspace.kaito.sh/{name} created")
        _step("Watch it", f"kubectl get workspace {name} -w")
        deadline, shown = time.monotonic() + timeout, []
        while time.monotonic() < deadline:
            live = http.get(f"{path}/{name}").json()
            header, row = columns_table(workspace_crd(), [live]).splitlines()
            if not shown:
                print(header)
            if row.split()[2:-1] != (shown[-1].split()[2:-1] if shown else None):
                print(row, flush=True)
                shown.append(row)
            if json_path(live, '.status.conditions[?(@.type=="WorkspaceReady")].status') == "True":
                break
            time.sleep(0.5)
        else:
            print("demo failed: the Workspace did not become ready", file=sys.stderr)
            return 1
        _step("What the controller created", "kubectl get machines,deployments,services")
        machines = http.get("/apis/karpenter.sh/v1alpha5/machines").json()["items"]
        deploys = http.get("/apis/apps/v1/namespaces/default/deployments").json()["items"]
        services = http.get("/api/v1/namespaces/default/services").json()["items"]
        for kind, items in (("machine", machines), ("deployment", deploys),
                            ("service", services)):
            for item in items:
                print(f"{kind}/{item['metadata']['name']}")
        _step("Events", f"kubectl get events --field-selector involvedObject.name={name}")
        events = http.get("/api/v1/namespaces/default/events").json()["items"]
        events.sort(key=lambda e: int(e["metadata"]["resourceVersion"]))
        for event in events:
            if event["involvedObject"]["name"] == name:
                print(f"{event['type']:<8} {event['reason']:<22} {event['message']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run())
