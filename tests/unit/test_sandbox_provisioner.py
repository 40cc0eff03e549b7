"""`kaito sandbox up --provisioner machine|nodeclaim|none`: the flags, what the daemon is told,
the refusal to start a second sandbox of another mode, and the pre-joined GPU nodes of `none`
(the quick start's Workspace qualifies on them and its pod schedules there)."""

from __future__ import annotations

import subprocess
from types import SimpleNamespace

import pytest
import yaml

from kaito_operator.api.workspace import Workspace
from kaito_operator.catalog import load_catalog
from kaito_operator.cli import main as cli_main
from kaito_operator.settings import Settings
from kaito_operator.workspace.nodes import choose_nodes
from kaito_operator.workspace.workload import desired_inference
from kaito_sandbox import cli, daemon, provisioning
from kaito_sandbox.byo_nodes import ByoNodes, offer, parse_label
from kaito_sandbox.scheduling import choose_node
from kaito_sandbox.sim.aks import SimulatedAks
from kaito_sandbox.sim.arm_faults import PoolEvent
from kaito_sandbox.up_options import daemon_options
from tests.unit.test_cli import run

QUICK_START = "examples/inference/kaito_workspace_phi_3_mini.yaml"


def _up_args(*argv: str):
    return cli_main.build_parser().parse_args(["sandbox", "up", *argv])


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


def test_up_defaults_to_machine_and_tells_the_daemon(catalog):
    args = _up_args()
    assert args.provisioner == "machine"
    assert daemon_options(args, catalog) == ["--provisioner", "machine"]
    assert daemon_options(_up_args("--provisioner", "nodeclaim"), catalog) == [
        "--provisioner", "nodeclaim"]


def test_none_offers_the_quick_start_node_by_default(catalog):
    assert daemon_options(_up_args("--provisioner", "none"), catalog) == [
        "--provisioner", "none", "--nodes", "1", "--node-instance-type", "Standard_NC6s_v3",
        "--node-label", "apps=phi-3"]
    chosen = daemon_options(_up_args("--provisioner", "none", "--nodes", "2",
                                     "--node-instance-type", "standard_nc12s_v3",
                                     "--node-label", "apps=llama", "--node-label", "team=ml"),
                            catalog)
    assert chosen == ["--provisioner", "none", "--nodes", "2", "--node-instance-type",
                      "Standard_NC12s_v3", "--node-label", "apps=llama",
                      "--node-label", "team=ml"]


def test_an_unknown_mode_is_refused_by_argparse(capsys):
    with pytest.raises(SystemExit) as exit_:
        _up_args("--provisioner", "karpenter")
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'karpenter'" in err and "nodeclaim" in err.rpartition("choose from")[2]


@pytest.mark.parametrize(("label", "says"), [
    ("apps", "'apps' is not KEY=VALUE"),
    ("bad key=x", "'bad key' is not a valid label key"),
    ("a/=b", "'a/' is not a valid label key"),
    ("=v", "'' is not a valid label key"),
    ("apps=" + "x" * 64, "is not a valid label value (63 characters at most"),
    ("apps=-x", "'-x' is not a valid label value"),
])
def test_a_bad_node_label_is_refused_by_argparse(capsys, label, says):
    with pytest.raises(SystemExit) as exit_:
        _up_args("--provisioner", "none", "--node-label", label)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "argument --node-label: " in err and says in err


def test_good_labels_parse():
    assert parse_label("apps=phi-3") == ("apps", "phi-3")
    assert parse_label("kaito.sh/team=ml_1") == ("kaito.sh/team", "ml_1")
    assert parse_label("empty=") == ("empty", "")


@pytest.mark.parametrize(("argv", "says"), [
    (["--provisioner", "none", "--nodes", "0"], "--nodes must be 1 to 8, not 0"),
    (["--provisioner", "none", "--nodes", "9"], "--nodes must be 1 to 8, not 9"),
    (["--provisioner", "none", "--node-instance-type", "Standard_D4s_v3"],
     "'Standard_D4s_v3' is not an Azure GPU VM size the catalog knows (the sandbox simulates "
     "AKS): `kaito skus --cloud azure` lists them"),
    (["--provisioner", "none", "--node-instance-type", "g5.xlarge"],
     "'g5.xlarge' is not an Azure GPU VM size"),
    (["--nodes", "2"], "--nodes: only with --provisioner none (not machine)"),
    (["--provisioner", "nodeclaim", "--node-label", "a=b", "--node-instance-type", "x"],
     "--node-instance-type, --node-label: only with --provisioner none (not nodeclaim)"),
])
def test_bad_node_options_are_an_error_before_anything_starts(capsys, monkeypatch, argv, says):
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: pytest.fail("daemon started"))
    code, _, err = run(capsys, "sandbox", "up", *argv)
    assert code == 2
    assert says in err


def test_a_second_up_with_another_mode_says_so(capsys, monkeypatch):
    running = {"pid": 1, "phase": "running", "provisioner": "machine", "api": "http://x"}
    monkeypatch.setattr(cli, "running_state", lambda: running)
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: pytest.fail("daemon started"))
    code, _, err = run(capsys, "sandbox", "up", "--provisioner", "none")
    assert code == 1
    assert "already running with --provisioner machine" in err
    assert "`kaito sandbox down` first to start it with --provisioner none" in err
    code, out, _ = run(capsys, "sandbox", "up")
    assert code == 0 and "already running with --provisioner machine" in out


def test_each_mode_sets_the_operator_and_the_provisioner():
    assert provisioning.operator_env("nodeclaim") == {"KAITO_NODE_PROVISIONING": "nodeclaim"}
    assert provisioning.provisioner_env("nodeclaim") == {"PROVISIONER_NODE_KIND": "nodeclaim"}
    assert provisioning.provisioner_env("machine") == {"PROVISIONER_NODE_KIND": "machine"}
    assert provisioning.operator_env("none") == {"KAITO_NODE_PROVISIONING": "none"}
    assert provisioning.provisioner_env("none") is None
    assert all(provisioning.describe(mode).startswith(mode) for mode in provisioning.MODES)


def test_the_daemon_reads_the_same_options(monkeypatch, tmp_path):
    seen = {}
    monkeypatch.setattr(daemon, "run", lambda root, mode, byo: seen.update(
        root=root, mode=mode, byo=byo) or 0)
    assert daemon.main(["--dir", str(tmp_path), "--provisioner", "none", "--nodes", "2",
                        "--node-instance-type", "Standard_NC12s_v3",
                        "--node-label", "apps=llama"]) == 0
    assert seen["mode"] == "none"
    assert seen["byo"] == ByoNodes(count=2, instance_type="Standard_NC12s_v3",
                                   labels={"apps": "llama"}, gpus=2)
    assert daemon.main(["--dir", str(tmp_path)]) == 0
    assert seen["mode"] == "machine" and seen["byo"] is None


def test_offered_nodes_look_like_the_nodes_aks_joins(catalog):
    nodes = offer(catalog, count=3)
    names = nodes.names()
    assert len(set(names)) == 3 and names == offer(catalog, count=3).names()
    assert all(name.startswith("aks-gpu-") for name in names)
    event = PoolEvent("sub", "sandbox-rg", "sandbox", "ws0123", "Standard_NC6s_v3", {}, (), 100)
    arm = SimpleNamespace(location="eastus")
    joined = SimulatedAks("http://unused", arm, lambda sku: 1).node(event)  # type: ignore[arg-type]
    mine = nodes.node(1)
    assert set(joined["metadata"]["labels"]) <= set(mine["metadata"]["labels"])
    assert mine["metadata"]["labels"]["kubernetes.io/hostname"] == names[1]
    assert mine["status"] == joined["status"]
    assert mine["spec"]["providerID"].endswith("/virtualMachines/1")
    assert "kaito.sh/workspace" not in mine["metadata"]["labels"]  # nobody's: the user's own


def test_the_quick_start_runs_on_the_default_node(catalog):
    body = yaml.safe_load(open(QUICK_START).read())
    body["metadata"].update(namespace="default", uid="uid-1")
    ws = Workspace.model_validate(body)
    node = offer(catalog).node(0)
    choice = choose_nodes(ws, [node], set())
    assert choice.selected == [node["metadata"]["name"]] and choice.missing == 0
    workload = desired_inference(ws, catalog, Settings(node_provisioning="none"),
                                 choice.selected)[1]
    pod = {"metadata": {"name": "p", "namespace": "default"},
           "spec": workload["spec"]["template"]["spec"]}
    assert choose_node(pod, [node], []) == (node["metadata"]["name"], "")


def test_a_node_of_another_type_or_label_does_not_qualify(catalog):
    body = yaml.safe_load(open(QUICK_START).read())
    body["metadata"].update(namespace="default", uid="uid-1")
    ws = Workspace.model_validate(body)
    other_type = offer(catalog, instance_type="Standard_NC12s_v3").node(0)
    other_label = offer(catalog, labels={"apps": "llama"}).node(0)
    assert choose_nodes(ws, [other_type, other_label], set()).missing == 1
