"""The Dockerfiles cannot be built here (no Docker engine), so check what a build would need:
every path they COPY exists and is not excluded by .dockerignore, every module they run exists,
every command is an installed entry point, dependencies are installed only from hash-pinned
locks that satisfy pyproject.toml, base images are pinned by digest, and the runtime user is not
root. The operator image's package list is checked for real: the wheel its build stage would
install is built from a tree holding only what Dockerfile.operator copies."""

from __future__ import annotations

import fnmatch
import re
import shlex
import tomllib
from pathlib import Path

import pytest

from tests.support.setup_py import setup_top_level

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
DOCKERFILES = ["Dockerfile.operator", "Dockerfile.inference"]


def instructions(name: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and heredoc bodies skipped."""
    out: list[tuple[str, str]] = []
    lines = (ROOT / name).read_text().splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        if not line or line.startswith("#"):
            continue
        while line.endswith("\\") and i < len(lines):
            line = line[:-1] + " " + lines[i].strip()
            i += 1
        keyword, _, args = line.partition(" ")
        heredoc = re.search(r"<<-?'?(\w+)'?", args)
        if heredoc:
            body = []
            while lines[i].strip() != heredoc.group(1):
                body.append(lines[i])
                i += 1
            i += 1
            args += "\n" + "\n".join(body)
        out.append((keyword.upper(), args))
    return out


def dockerignore() -> list[str]:
    return [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines()
            if p.strip() and not p.startswith("#")]


def ignored(path: str) -> bool:
    return any(fnmatch.fnmatch(path, pat) or path == pat or path.startswith(pat + "/")
               for pat in dockerignore())


def copies(name: str) -> list[str]:
    sources = []
    for keyword, args in instructions(name):
        if keyword not in ("COPY", "ADD"):
            continue
        words = shlex.split(args)
        if any(w.startswith("--from=") for w in words):
            continue
        words = [w for w in words if not w.startswith("--")]
        sources += words[:-1]
    return sources


@pytest.mark.parametrize("name", DOCKERFILES)
def test_every_copied_path_exists_and_is_in_the_context(name):
    sources = copies(name)
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), f"{name} copies {source}, which does not exist"
        assert not ignored(source), f"{name} copies {source}, which .dockerignore excludes"


def copied_folders(name: str) -> set[str]:
    return {Path(s).parts[0] for s in copies(name)}


@pytest.mark.parametrize("name", DOCKERFILES)
def test_the_build_copies_what_pip_install_needs(name):
    """`pip install .` needs pyproject.toml, setup.py (it names the packages) and the README."""
    assert {"pyproject.toml", "setup.py", "README.md"} <= copied_folders(name)
    assert set(copied_folders(name)) - {"pyproject.toml", "setup.py", "README.md", "locks"} <= set(
        setup_top_level().values()), f"{name} copies a folder setup.py does not build"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_the_build_copies_every_package_its_packages_import(name):
    """A first-party package imported by a copied one is copied too (else the image fails at
    import, not at build)."""
    import grimp

    folder_of = setup_top_level()
    copied = {pkg for pkg, folder in folder_of.items() if folder in copied_folders(name)}
    present = [pkg for pkg, folder in folder_of.items()
               if (ROOT / folder / "__init__.py").exists()]
    graph = grimp.build_graph(*present, cache_dir=None)
    for package in sorted(copied & set(present)):
        needed = {imported.split(".")[0]
                  for module in graph.find_descendants(package) | {package}
                  for imported in graph.find_modules_directly_imported_by(module)}
        assert needed & set(present) <= copied, (
            f"{name}: {package} imports {sorted(needed & set(present) - copied)}, not copied")


def test_operator_image_carries_only_the_operators():
    assert copied_folders("Dockerfile.operator") == {
        "locks", "pyproject.toml", "setup.py", "README.md", "kaito_operator", "kaito_egress",
        "presets"}


def test_operator_image_names_no_other_projects_source():
    labels = " ".join(a for k, a in instructions("Dockerfile.operator") if k == "LABEL")
    assert "org.opencontainers.image.source" not in labels
    assert "kaito-project" not in (ROOT / "Dockerfile.operator").read_text()


def run_commands(name: str) -> list[list[str]]:
    found = []
    for keyword, args in instructions(name):
        if keyword in ("CMD", "ENTRYPOINT"):
            found.append(list(eval(args)) if args.startswith("[") else shlex.split(args))  # noqa: S307
    return found


def test_modules_and_commands_they_run_exist():
    scripts = PYPROJECT["project"]["scripts"]
    commands = run_commands("Dockerfile.operator") + run_commands("Dockerfile.inference")
    assert ["kaito-operator"] in commands
    for command in commands:
        if command[0] == "python":
            module = command[command.index("-m") + 1]
            assert (ROOT / module / "__main__.py").exists(), module
        else:
            assert command[0] in scripts, command
    # what the charts and the controller run in these images
    assert {"kaito-operator", "kaito-gpu-provisioner"} <= set(scripts)
    assert (ROOT / "inference_server/__main__.py").exists()
    assert (ROOT / "inference_server/fetch_adapter.py").exists()
    podspec = (ROOT / "kaito_operator/workspace/podspec.py").read_text()
    assert '["python", "-m", "inference_server"]' in podspec
    assert '["python", "-m", "inference_server.fetch_adapter"]' in podspec
    assert 'PRESETS_DIR = "/workspace/presets"' in podspec
    assert 'WEIGHTS_DIR = "/workspace/weights"' in podspec
    inference = (ROOT / "Dockerfile.inference").read_text()
    assert "COPY presets /workspace/presets" in inference
    assert 'local_dir="/workspace/weights"' in inference


def test_tuning_stage_runs_the_trainer_package():
    assert (ROOT / "tuning_job/__init__.py").exists()
    assert ("COPY", "tuning_job ./tuning_job") in instructions("Dockerfile.inference")
    tuning = (ROOT / "Dockerfile.inference").read_text().split("AS tuning", 1)[1]
    assert "-r /src/locks/tuning.txt" in tuning
    assert 'CMD ["python", "-m", "tuning_job", "--config", "/mnt/config/training_config.yaml"]' in tuning


# --- hash-pinned locks ------------------------------------------------------------------------

#: lock file -> (the pyproject extras it must satisfy, the stages that install it)
LOCKS = {
    "operator.txt": (["operator"], [("Dockerfile.operator", "build")]),
    "inference.txt": (["inference"], [("Dockerfile.inference", "base")]),
    "tuning.txt": (["inference", "tuning", "qlora"], [("Dockerfile.inference", "tuning")]),
}
LOCK_INSTALL = re.compile(
    r"pip install --require-hashes --no-deps --only-binary :all: -r (\S*locks/([a-z]+\.txt))$")
PROJECT_INSTALL = "pip install --no-deps --no-build-isolation --no-index ."


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_entries(name: str) -> dict[str, tuple[str, list[str]]]:
    """{package: (version, sha256 hashes)} of one lock file."""
    text = (ROOT / "locks" / name).read_text().replace("\\\n", " ")
    entries = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith((" ", "#")):
            pin, *rest = line.split()
            package, version = pin.split("==")
            hashes = [w.removeprefix("--hash=sha256:") for w in rest if w.startswith("--hash=")]
            entries[canonical(package)] = (version, hashes)
    return entries


def stage_runs(name: str) -> dict[str, list[str]]:
    """The RUN commands of each stage, split at `&&`."""
    stages: dict[str, list[str]] = {}
    current = ""
    for keyword, args in instructions(name):
        if keyword == "FROM":
            current = args.split()[-1] if " AS " in args else args
            stages[current] = []
        elif keyword == "RUN":
            stages[current] += [" ".join(part.split()) for part in args.split("&&")]
    return stages


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_each_lock_is_installed_with_hashes_by_its_image(lock):
    for dockerfile, stage in LOCKS[lock][1]:
        runs = stage_runs(dockerfile)[stage]
        installed = [m.group(2) for r in runs if (m := LOCK_INSTALL.search(r))]
        assert installed == [lock], runs
        source = next(m.group(1) for r in runs if (m := LOCK_INSTALL.search(r)))
        copied = [a.split() for k, a in instructions(dockerfile) if k == "COPY"]
        assert [f"locks/{lock}", source] in copied, f"{dockerfile} must COPY locks/{lock}"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_nothing_is_installed_past_the_locks(name):
    """Every pip command installs a lock with hashes, or the project alone without an index."""
    for stage, runs in stage_runs(name).items():
        for run in runs:
            if "pip install" in run:
                assert LOCK_INSTALL.search(run) or run.endswith(PROJECT_INSTALL), (stage, run)
    first = "build" if name == "Dockerfile.operator" else "base"
    assert any(r.endswith(PROJECT_INSTALL) for r in stage_runs(name)[first])


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_locks_pin_every_requirement_with_hashes(lock):
    from packaging.requirements import Requirement

    entries = lock_entries(lock)
    project = PYPROJECT["project"]
    wanted = list(project["dependencies"])
    for extra in LOCKS[lock][0]:
        wanted += project["optional-dependencies"][extra]
    wanted += [line for line in (ROOT / "locks/build.in").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    for spec in map(Requirement, wanted):
        assert canonical(spec.name) in entries, f"{lock} lacks {spec.name}: run locks/update.sh"
        version = entries[canonical(spec.name)][0]
        assert spec.specifier.contains(version, prereleases=True), (
            f"{lock} pins {spec.name}=={version}, pyproject wants {spec}: run locks/update.sh")
    for package, (_, hashes) in entries.items():
        assert hashes and all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes), package
    assert ("torch" in entries) == ("inference" in LOCKS[lock][0])


def test_tuning_image_keeps_every_version_of_the_base_image():
    base, tuning = lock_entries("inference.txt"), lock_entries("tuning.txt")
    assert {p: v for p, (v, _) in base.items()} == {
        p: v for p, (v, _) in tuning.items() if p in base}


def test_preset_download_reads_the_pinned_revision():
    import yaml

    script = next(args for kw, args in instructions("Dockerfile.inference")
                  if kw == "RUN" and "snapshot_download" in args)
    assert 'revision=hf["revision"]' in script and "/workspace/presets/models.yaml" in script
    models = yaml.safe_load((ROOT / "presets/models.yaml").read_text())["models"]
    assert all(re.fullmatch(r"[0-9a-f]{40}", m["huggingFace"]["revision"]) for m in models)


@pytest.mark.parametrize("name", DOCKERFILES)
def test_images_are_pinned_and_run_as_non_root(name):
    steps = instructions(name)
    args = {a.split("=", 1)[0]: a.split("=", 1)[1] for k, a in steps if k == "ARG" and "=" in a}
    for keyword, value in steps:
        if keyword == "FROM":
            image = value.split()[0]
            image = args.get(image.strip("${}"), image)
            if ":" in image or "/" in image or image.startswith("${"):
                assert not image.endswith(":latest") and ":" in image, image
    users = [a for k, a in steps if k == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm@sha256:[0-9a-f]{64}",
                        args["PYTHON_IMAGE"])
    stages = {a.split()[-1] for k, a in steps if k == "FROM" and " AS " in a}
    for keyword, value in steps:
        if keyword == "FROM":
            image = args.get(value.split()[0].strip("${}"), value.split()[0])
            assert image in stages or "@sha256:" in image, f"{name}: FROM {image} has no digest"


def test_inference_image_has_the_three_targets():
    stages = [a.split()[-1] for k, a in instructions("Dockerfile.inference")
              if k == "FROM" and " AS " in a]
    assert stages == ["base", "weights", "preset", "tuning"]


def test_dockerignore_keeps_the_context_small():
    patterns = dockerignore()
    for heavy in (".git", ".venv", "tests", "charts"):
        assert heavy in patterns


# --- the operator image's package list --------------------------------------------------------

#: Packages the operator image must not carry: test and demo machinery, the pods' code.
NOT_IN_OPERATOR_IMAGE = ("kaito_sandbox", "inference_server", "tuning_job", "kaito_workload")

#: Run in a fresh interpreter with only the image's tree importable: import both operators and
#: report every first-party module loaded and the file it came from.
IMPORT_OPERATORS = """
import json, sys
sys.meta_path[:] = [f for f in sys.meta_path
                    if not (getattr(f, "__module__", "") or "").startswith("__editable__")]
sys.path.insert(0, sys.argv[1])
import kaito_operator.workspace.operator, kaito_operator.provisioner.operator
first_party = set(sys.argv[2].split(","))
def origin(module):  # a namespace package (kaito_presets) has a __path__ and no __file__
    return getattr(module, "__file__", None) or next(iter(getattr(module, "__path__", [])), "")
print(json.dumps({name: origin(module) for name, module in sorted(sys.modules.items())
                  if name.split(".")[0] in first_party}))
"""


@pytest.fixture(scope="module")
def operator_image_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What Dockerfile.operator's build stage copies, laid out as it copies it."""
    import shutil

    tree = tmp_path_factory.mktemp("operator-image") / "src"
    tree.mkdir()
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for source in copies("Dockerfile.operator"):
        if (ROOT / source).is_dir():
            shutil.copytree(ROOT / source, tree / source, ignore=skip)
        else:
            (tree / source).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / source, tree / source)
    return tree


@pytest.fixture(scope="module")
def operator_wheel(operator_image_tree: Path) -> Path:
    """The wheel `pip install .` builds in the operator image, built offline from its tree."""
    import subprocess
    import sys

    out = operator_image_tree.parent / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "--quiet", "--wheel-dir", str(out), str(operator_image_tree)],
        check=True, timeout=300, capture_output=True, cwd=operator_image_tree.parent)
    (wheel,) = out.glob("kaito_py-*.whl")
    return wheel


@pytest.mark.slow
def test_operator_wheel_carries_no_sandbox_server_or_trainer(operator_wheel: Path):
    import zipfile

    names = zipfile.ZipFile(operator_wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"kaito_operator", "kaito_egress", "kaito_presets"}, tops
    assert not [n for n in names if n.startswith(tuple(p + "/" for p in NOT_IN_OPERATOR_IMAGE))]
    assert "kaito_presets/models.yaml" in names
    # PEP 561: code type-checked against the operators sees their annotations.
    assert {"kaito_operator/py.typed", "kaito_egress/py.typed"} <= set(names)
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    scripts = zipfile.ZipFile(operator_wheel).read(entry_points).decode()
    assert "kaito-operator = kaito_operator.workspace.operator:main" in scripts
    assert "kaito-gpu-provisioner = kaito_operator.provisioner.operator:main" in scripts


@pytest.mark.slow
def test_operators_import_only_what_the_image_carries(operator_wheel: Path):
    """Both operators import from the wheel's files alone (third-party packages aside)."""
    import json
    import subprocess
    import sys
    import zipfile

    site = operator_wheel.parent / "site"
    zipfile.ZipFile(operator_wheel).extractall(site)
    first_party = sorted(setup_top_level())
    result = subprocess.run(
        [sys.executable, "-I", "-c", IMPORT_OPERATORS, str(site), ",".join(first_party)],
        capture_output=True, text=True, timeout=120, cwd=site)
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout)
    assert "kaito_operator.provisioner.operator" in loaded
    outside = {name: path for name, path in loaded.items()
               if path and not Path(path).resolve().is_relative_to(site.resolve())}
    assert not outside, f"imported from outside the image's tree: {outside}"
    assert not {name.split(".")[0] for name in loaded} & set(NOT_IN_OPERATOR_IMAGE)
