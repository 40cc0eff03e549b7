"""The sandbox's background process: everything `kaito sandbox up` starts, stopped together.

Simulated (there is no other way on one machine without a cloud): the Kubernetes API
(emulator), the Azure agent-pools endpoint, AKS joining a GPU node when a pool succeeds, and
the kubelet (pods run as local processes on CPU). Real: the `kaito-operator` and
`kaito-gpu-provisioner` processes, the inference server, the adapter fetcher, the tuning job
and an OCI registry (Debian's docker-registry, when installed).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from kaito_operator.catalog import load_catalog, presets_dir
from kaito_sandbox.agent import NodeAgent
from kaito_sandbox.kubelet import free_port
from kaito_sandbox.model import pick_model
from kaito_sandbox.state import write_state

log = logging.getLogger("kaito.sandbox")

SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
CLUSTER = {"ARM_SUBSCRIPTION_ID": SUBSCRIPTION, "ARM_RESOURCE_GROUP": "sandbox-rg",
           "AZURE_CLUSTER_NAME": "sandbox", "LOCATION": "eastus"}
ARM_TOKEN = "sandbox-simulated-token"
#: The node agent's round: each costs API reads; on 2 cores a faster one slows the pods' torch.
AGENT_POLL_SECONDS = 1.0


def _kubeconfig(root: Path, server: str) -> Path:
    path = root / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "kaito-sandbox",
        "clusters": [{"name": "kaito-sandbox", "cluster": {"server": server}}],
        "users": [{"name": "sandbox", "user": {"token": "sandbox"}}],
        "contexts": [{"name": "kaito-sandbox",
                      "context": {"cluster": "kaito-sandbox", "user": "sandbox"}}],
    }))
    return path


def _operator(
    root: Path, name: str, args: list[str], env: dict[str, str]
) -> subprocess.Popen[bytes]:
    command = Path(sys.executable).parent / name
    with open(root / f"{name}.log", "ab") as out:
        return subprocess.Popen([str(command), *args], env={**os.environ, **env}, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def model_progress(state: dict[str, Any], root: Path) -> Callable[[str], None]:
    """Each line of preparing the model becomes the phase in state.json (`up` prints it)."""
    def show(line: str) -> None:
        log.info("preparing the model: %s", line)
        state["phase"] = f"preparing the model: {line}"
        write_state(state, root)

    return show


def run(root: Path) -> int:
    from kaito_sandbox.sim.aks import SimulatedAks
    from kaito_sandbox.sim.arm import ArmSimulator
    from kaito_sandbox.sim.kube_api import KubeApiEmulator

    root.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    catalog = load_catalog()
    state: dict[str, Any] = {"pid": os.getpid(), "phase": "starting"}
    write_state(state, root)
    stack: list[Any] = []
    try:
        api = KubeApiEmulator().start()
        stack.append(api)
        kubeconfig = _kubeconfig(root, api.url)
        arm = ArmSimulator(token=ARM_TOKEN, lro_seconds=2.0, lro_polls=None).start()
        stack.append(arm)

        def gpus(sku: str) -> int:
            found = catalog.sku(sku)
            return found.gpu_count if found else 1

        aks = SimulatedAks(api.url, arm, gpus, apply_pool_labels=False).start()
        stack.append(aks)
        registry = None
        if Path("/usr/bin/docker-registry").exists():
            from kaito_sandbox.sim.registry import LocalRegistry

            registry = LocalRegistry().start()
            stack.append(registry)
        state["phase"] = "preparing the model"
        write_state(state, root)
        chosen = pick_model(root, progress=model_progress(state, root))
        model = chosen.path
        operators = [
            _operator(root, "kaito-operator",
                      ["--liveness", "", "--metrics-port", str(free_port())],
                      {"KUBECONFIG": str(kubeconfig), "KAITO_REQUEUE_SECONDS": "2",
                       "KAITO_MAX_BATCH_SIZE": "4"}),
            _operator(root, "kaito-gpu-provisioner",
                      ["--liveness", "", "--metrics-port", str(free_port())],
                      {**CLUSTER, "KUBECONFIG": str(kubeconfig), "ARM_ENDPOINT": arm.base_url,
                       "ARM_CA_BUNDLE": str(arm.ca_path),
                       "KAITO_SIMULATED_ARM_TOKEN": ARM_TOKEN,
                       "PROVISIONER_POLL_INTERVAL": "1", "PROVISIONER_GC_GRACE_PERIOD": "60"}),
        ]

        def services(ports: dict[str, int]) -> None:
            if state.get("services") != ports:
                state["services"] = ports
                write_state(state, root)

        agent = NodeAgent(api.url, root, {"/workspace/weights": model,
                                          "/workspace/presets": presets_dir()},
                          poll=AGENT_POLL_SECONDS, on_services=services).start()
        state.update(phase="running", api=api.url, kubeconfig=str(kubeconfig),
                     arm=arm.base_url, registry=registry.host if registry else None,
                     model=str(model), model_note=chosen.note, model_kind=chosen.kind,
                     operators=[p.pid for p in operators], services={}, pools=0,
                     children=[p.pid for p in operators] + ([registry.pid] if registry else []))
        write_state(state, root)
        log.info("sandbox running: API %s, ARM %s", api.url, arm.base_url)
        while not stop.wait(0.5):
            pools = len(arm.pools())
            if pools != state["pools"]:
                state["pools"] = pools  # agent pools in the simulated subscription
                write_state(state, root)
            for proc in operators:
                if proc.poll() is not None:
                    command = proc.args[0]  # type: ignore[index]  # the argv list given to Popen
                    log.error("%s exited with %s; see its log", command, proc.returncode)
                    stop.set()
        agent.stop()
        for proc in operators:
            proc.terminate()
        for proc in operators:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        return 0
    finally:
        for item in reversed(stack):
            try:
                item.stop()
            except Exception:  # noqa: BLE001 - keep stopping the rest
                log.exception("stopping %s failed", item)
        write_state({"pid": os.getpid(), "phase": "stopped"}, root)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kaito_sandbox.daemon")
    parser.add_argument("--dir", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("kopf", "httpx", "aiohttp.access", "azure"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return run(args.dir)


if __name__ == "__main__":
    raise SystemExit(main())
