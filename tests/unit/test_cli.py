"""The `kaito` command: catalog tables and offline validation with webhook-identical messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import kaito_operator.cli.main as cli_main
from kaito_operator.cli.main import main
from kaito_operator.validation import validate_workspace
from tests.factories import inference_workspace, with_changes

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(str(p) for p in (ROOT / "examples").rglob("*.yaml"))


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_presets_table_lists_every_preset_with_requirements(capsys, catalog):
    code, out, _ = run(capsys, "presets")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == [
        "NAME", "PARAMS", "GPUS", "GPU-MEMORY", "PER-GPU", "DISK", "MULTI-NODE", "TUNING", "TOKEN"
    ]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(rows) == set(catalog.presets)
    assert rows["phi-3-medium-4k-instruct"][3] == "28Gi"
    assert rows["llama-3.1-8b-instruct"][-1] == "yes"


def test_presets_fits_shows_nodes_and_reasons(capsys):
    code, out, _ = run(capsys, "presets", "--fits", "Standard_NC6s_v3")
    assert code == 0
    rows = {line.split()[0]: line for line in out.splitlines()[2:]}
    assert rows["phi-3-mini-4k-instruct"].split()[1] == "1"
    assert "needs 28 GiB of GPU memory in total" in rows["phi-3-medium-4k-instruct"]
    assert int(rows["falcon-40b-instruct"].split()[1]) > 1  # multi-node: several V100 nodes


def test_presets_fits_unknown_sku_is_an_error(capsys):
    code, _, err = run(capsys, "presets", "--fits", "Standard_Z1")
    assert code == 1
    assert "Standard_Z1 is not in the GPU catalog" in err


def test_skus_filter_by_cloud(capsys):
    code, out, _ = run(capsys, "skus", "--cloud", "aws")
    assert code == 0
    clouds = {line.split()[1] for line in out.splitlines()[1:]}
    assert clouds == {"aws"}


def test_validate_examples_exit_zero(capsys):
    code, out, _ = run(capsys, "validate", *EXAMPLES)
    assert code == 0, out
    assert out.count(": valid") == len(EXAMPLES)


def test_validate_reports_the_webhook_messages_and_exits_one(capsys, catalog, tmp_path):
    bad = with_changes(inference_workspace(), {"inference.preset.name": "phi-3-medium-4k-instruct"})
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    code, out, _ = run(capsys, "validate", str(path))
    assert code == 1
    (expected,) = validate_workspace(bad, catalog)
    assert f"  error: {expected}" in out.splitlines()


def test_validate_multi_document_file_skips_other_kinds(capsys, tmp_path):
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}}
    path = tmp_path / "bundle.yaml"
    path.write_text(yaml.safe_dump_all([secret, inference_workspace()]))
    code, out, _ = run(capsys, "validate", str(path))
    assert code == 0
    assert "workspace/workspace-phi-3: valid" in out
    assert "workspace/s" not in out


@pytest.mark.parametrize(
    ("content", "code", "words"),
    [
        ("a: [unclosed", 2, "unreadable: not valid YAML"),
        ("apiVersion: v1\nkind: ConfigMap\n", 1, "holds no Workspace"),
    ],
)
def test_validate_bad_files(capsys, tmp_path, content, code, words):
    path = tmp_path / "f.yaml"
    path.write_text(content)
    status, out, _ = run(capsys, "validate", str(path))
    assert status == code and words in out


def test_validate_missing_file(capsys, tmp_path):
    code, out, _ = run(capsys, "validate", str(tmp_path / "nope.yaml"))
    assert code == 2 and "unreadable: cannot open: No such file or directory" in out


def test_validate_json_output(capsys, tmp_path):
    bad = with_changes(inference_workspace(), {"resource.count": 0})
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    code, out, _ = run(capsys, "validate", "-o", "json", str(path), EXAMPLES[0])
    assert code == 1
    report = json.loads(out)
    assert [r["valid"] for r in report] == [False, True]
    assert report[0]["findings"][0]["path"] == "resource.count"


def test_validate_warnings_do_not_fail(capsys, tmp_path):
    ws = with_changes(inference_workspace(), {"resource.instanceType": "Standard_NC8ads_Z9_v9"})
    path = tmp_path / "new-sku.yaml"
    path.write_text(yaml.safe_dump(ws))
    code, out, _ = run(capsys, "validate", str(path))
    assert code == 0
    assert "warning: resource.instanceType: Standard_NC8ads_Z9_v9 is not in the GPU catalog" in out


def test_broken_catalog_is_reported_not_a_traceback(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("KAITO_PRESETS_DIR", str(tmp_path))
    code, _, err = run(capsys, "skus")
    assert code == 2
    assert "the preset catalog is broken" in err and "models.yaml" in err


def test_render_prints_what_the_controller_creates(capsys):
    adapters = str(ROOT / "examples/inference/kaito_workspace_phi_3_with_adapters.yaml")
    code, out, _ = run(capsys, "render", "-n", "team-a", adapters)
    assert code == 0
    docs = list(yaml.safe_load_all(out))
    assert [d["kind"] for d in docs] == ["Machine", "Service", "Deployment"]
    deploy = docs[-1]
    assert deploy["metadata"]["namespace"] == "team-a"
    assert len(deploy["spec"]["template"]["spec"]["initContainers"]) == 2


def test_render_multi_node_example(capsys):
    falcon = str(ROOT / "examples/inference/kaito_workspace_falcon_40b_multinode.yaml")
    code, out, _ = run(capsys, "render", falcon)
    assert code == 0
    kinds = [d["kind"] for d in yaml.safe_load_all(out)]
    assert kinds == ["Machine", "Machine", "Service", "Service", "StatefulSet"]


@pytest.mark.parametrize(("flag", "env", "node_kinds"), [
    ([], None, ["Machine", "Machine"]),
    (["--node-provisioning", "machine"], "nodeclaim", ["Machine", "Machine"]),
    (["--node-provisioning", "nodeclaim"], None, ["NodeClaim", "NodeClaim"]),
    ([], "nodeclaim", ["NodeClaim", "NodeClaim"]),
    (["--node-provisioning", "none"], None, []),
    ([], "none", []),
], ids=["default", "flag-beats-env", "flag-nodeclaim", "env-nodeclaim", "flag-none", "env-none"])
def test_render_shows_the_node_objects_of_the_mode(capsys, monkeypatch, flag, env, node_kinds):
    if env:
        monkeypatch.setenv("KAITO_NODE_PROVISIONING", env)
    else:
        monkeypatch.delenv("KAITO_NODE_PROVISIONING", raising=False)
    monkeypatch.setenv("KAITO_NODECLAIM_NODE_CLASS_KIND", "EC2NodeClass")
    falcon = str(ROOT / "examples/inference/kaito_workspace_falcon_40b_multinode.yaml")
    code, out, _ = run(capsys, "render", *flag, falcon)
    assert code == 0
    docs = list(yaml.safe_load_all(out))
    assert [d["kind"] for d in docs] == [*node_kinds, "Service", "Service", "StatefulSet"]
    for claim in (d for d in docs if d["kind"] == "NodeClaim"):
        assert claim["apiVersion"] == "karpenter.sh/v1"
        assert claim["spec"]["nodeClassRef"]["kind"] == "EC2NodeClass"  # the env's settings


def test_render_refuses_an_unknown_mode(capsys):
    falcon = str(ROOT / "examples/inference/kaito_workspace_falcon_40b_multinode.yaml")
    with pytest.raises(SystemExit) as exit_:
        run(capsys, "render", "--node-provisioning", "karpenter", falcon)
    assert exit_.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_render_refuses_invalid_workspaces(capsys, tmp_path):
    bad = with_changes(inference_workspace(), {"inference.preset.name": "phi-4"})
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    code, out, err = run(capsys, "render", str(path))
    assert code == 1 and out == ""
    assert "needs 40 GiB" in err


def test_printer_columns_render_like_kubectl():
    from datetime import UTC, datetime

    from kaito_operator.api.crd import workspace_crd
    from kaito_operator.cli.columns import columns_table

    ws = inference_workspace()
    ws["metadata"]["creationTimestamp"] = "2024-06-01T10:00:00Z"
    ws["status"] = {"conditions": [
        {"type": "ResourceReady", "status": "True"},
        {"type": "InferenceReady", "status": "False"},
        {"type": "WorkspaceReady", "status": "False"},
    ]}
    now = datetime(2024, 6, 1, 10, 10, tzinfo=UTC)
    lines = columns_table(workspace_crd(), [ws], now=now).splitlines()
    assert lines[0].split() == ["NAME", "INSTANCE", "RESOURCEREADY", "INFERENCEREADY",
                                "WORKSPACEREADY", "AGE"]
    assert lines[1].split() == ["workspace-phi-3", "Standard_NC6s_v3", "True", "False",
                                "False", "10m"]
    wide = columns_table(workspace_crd(), [ws], wide=True, now=now).splitlines()
    assert "JOBSTARTED" in wide[0].split()


def test_sandbox_commands_come_from_the_entry_point_group():
    names = {entry.name for entry in cli_main.entry_points(group=cli_main.PLUGIN_GROUP)}
    assert "sandbox" in names
    parser = cli_main.build_parser()
    args = parser.parse_args(["sandbox", "status"])
    assert args.run.__module__ == "kaito_sandbox.cli"


class _Unimportable:
    name = "sandbox"

    def load(self):
        raise ModuleNotFoundError("No module named 'kmock'", name="kmock")


def test_a_plugin_that_cannot_be_imported_says_what_to_install(capsys, monkeypatch):
    monkeypatch.setattr(cli_main, "entry_points", lambda group: [_Unimportable()])
    code, out, err = run(capsys, "sandbox", "up", "--timeout", "5")
    assert code == 2
    assert "kaito sandbox: not installed (kmock)" in err
    assert "pip install 'kaito-py[sandbox]'" in err
    # the product's own commands still work
    code, out, _ = run(capsys, "skus", "--cloud", "aws")
    assert code == 0 and out
