"""The sandbox's background process: everything `kaito sandbox up` starts, stopped together.

Simulated (there is no other way on one machine without a cloud): the Kubernetes API
(emulator), the Azure agent-pools endpoint, AKS joining a GPU node when a pool succeeds, and
the kubelet (pods run as local processes on CPU). Real: the `kaito-operator` and
`kaito-gpu-provisioner` processes, the inference server, the adapter fetcher, the tuning job
and an OCI registry (Debian's docker-registry, when installed).

`--provisioner` picks the node-provisioning mode (kaito_sandbox/provisioning.py): `machine`
and `nodeclaim` run the gpu-provisioner for that kind; `none` runs no gpu-provisioner, no
simulated Azure, and joins Ready GPU nodes at start (kaito_sandbox/byo_nodes.py).
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

import httpx
import yaml

from kaito_operator.catalog import load_catalog, presets_dir
from kaito_sandbox import provisioning
from kaito_sandbox.agent import NodeAgent
from kaito_sandbox.byo_nodes import DEFAULT_INSTANCE_TYPE, ByoNodes, join_nodes, offer, parse_label
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


def _provisioner(
    root: Path, arm: Any, kubeconfig: Path, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    return _operator(root, "kaito-gpu-provisioner",
                     ["--liveness", "", "--metrics-port", str(free_port())],
                     {**CLUSTER, "KUBECONFIG": str(kubeconfig), "ARM_ENDPOINT": arm.base_url,
                      "ARM_CA_BUNDLE": str(arm.ca_path),
                      "KAITO_SIMULATED_ARM_TOKEN": ARM_TOKEN,
                      "PROVISIONER_POLL_INTERVAL": "1", "PROVISIONER_GC_GRACE_PERIOD": "60",
                      **env})


def run(root: Path, mode: str = provisioning.DEFAULT, byo: ByoNodes | None = None) -> int:
    """The sandbox until SIGTERM; `byo` is what `none` mode offers (default: the quick
    start's one Standard_NC6s_v3 node labelled apps=phi-3)."""
    from kaito_sandbox.sim.aks import SimulatedAks
    from kaito_sandbox.sim.arm import ArmSimulator
    from kaito_sandbox.sim.kube_api import KubeApiEmulator

    root.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    catalog = load_catalog()
    provisioner_env = provisioning.provisioner_env(mode)
    state: dict[str, Any] = {"pid": os.getpid(), "phase": "starting", "provisioner": mode}
    write_state(state, root)
    stack: list[Any] = []
    try:
        api = KubeApiEmulator().start()
        stack.append(api)
        kubeconfig = _kubeconfig(root, api.url)
        arm = None
        if provisioner_env is not None:
            arm = ArmSimulator(token=ARM_TOKEN, lro_seconds=2.0, lro_polls=None).start()
            stack.append(arm)

            def gpus(sku: str) -> int:
                found = catalog.sku(sku)
                return found.gpu_count if found else 1

            stack.append(SimulatedAks(api.url, arm, gpus, apply_pool_labels=False).start())
        offered: list[str] = []
        if mode == provisioning.NONE:
            byo = byo or offer(catalog)
            with httpx.Client(base_url=api.url, timeout=10) as http:
                offered = join_nodes(http, byo)
            log.info("GPU nodes offered (node provisioning none): %s", ", ".join(offered))
            state.update(nodes=offered, byo_nodes=byo.describe())
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
                       "KAITO_MAX_BATCH_SIZE": "4", **provisioning.operator_env(mode)}),
        ]
        if arm is not None and provisioner_env is not None:
            operators.append(_provisioner(root, arm, kubeconfig, provisioner_env))

        def services(ports: dict[str, int]) -> None:
            if state.get("services") != ports:
                state["services"] = ports
                write_state(state, root)

        agent = NodeAgent(api.url, root, {"/workspace/weights": model,
                                          "/workspace/presets": presets_dir()},
                          poll=AGENT_POLL_SECONDS, on_services=services).start()
        state.update(phase="running", api=api.url, kubeconfig=str(kubeconfig),
                     arm=arm.base_url if arm else None,
                     registry=registry.host if registry else None,
                     model=str(model), model_note=chosen.note, model_kind=chosen.kind,
                     operators=[p.pid for p in operators], services={}, pools=0,
                     children=[p.pid for p in operators] + ([registry.pid] if registry else []))
        write_state(state, root)
        log.info("sandbox running (node provisioning %s): API %s, ARM %s", mode, api.url,
                 arm.base_url if arm else "-")
        while not stop.wait(0.5):
            pools = len(arm.pools()) if arm else 0
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
    parser.add_argument("--provisioner", choices=provisioning.MODES, default=provisioning.DEFAULT)
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--node-instance-type", default=DEFAULT_INSTANCE_TYPE)
    parser.add_argument("--node-label", action="append", type=parse_label)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("kopf", "httpx", "aiohttp.access", "azure"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    byo = None
    if args.provisioner == provisioning.NONE:
        labels = dict(args.node_label) if args.node_label else None
        byo = offer(load_catalog(), args.nodes, args.node_instance_type, labels)
    return run(args.dir, args.provisioner, byo)


if __name__ == "__main__":
    raise SystemExit(main())
