"""The demo's steps as a user runs them: the `kaito` command in a process of its own, a
`kaito get workspaces -o wide -w` stand-in that stops at readiness or at a failure that will
not fix itself, and a Job's log lines."""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_kaito(env: dict[str, str], *args: str,
              show: bool = True) -> subprocess.CompletedProcess[str]:
    """`kaito ARGS` in a process of its own; with `show`, the command line and its output."""
    if show:
        print(f"$ kaito {shlex.join(args)}", flush=True)
    done = subprocess.run([sys.executable, "-m", "kaito_operator.cli.main", *args], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    if show:
        print(done.stdout + done.stderr, end="", flush=True)
    return done


def table_cells(header: str, row: str) -> dict[str, str]:
    """A table row by column name (cells may be empty, so split() cannot be used)."""
    names = header.split()
    starts = [header.index(n) for n in names] + [len(row) + 1]
    return {n: row[starts[i]:starts[i + 1]].strip() for i, n in enumerate(names)}


#: WorkspaceReady reasons that will not fix themselves: stop watching and say why.
FAILED = {"TuningJobFailed", "InvalidWorkspace", "MachineFailed", "ErrImagePull",
          "ImagePullBackOff", "OOMKilled"}


WS = "/apis/kaito.sh/v1alpha1/namespaces/default/workspaces"


def _api(env: dict[str, str]) -> str:
    from kaito_sandbox.state import read_state

    return str((read_state(Path(env["KAITO_SANDBOX_DIR"])) or {}).get("api", ""))


def workspaces_table(env: dict[str, str], *, wide: bool) -> list[str]:
    """The lines `kaito get workspaces [-o wide]` prints (header first; none without
    Workspaces), made in this process: a `kaito` process per poll would take CPU from the
    model processes on a 2-core machine (it slowed training steps 2x)."""
    import httpx

    from kaito_operator.api.crd import workspace_crd
    from kaito_operator.cli.columns import columns_table

    items = httpx.get(_api(env) + WS, timeout=10).json()["items"]
    return columns_table(workspace_crd(), items, wide=wide).splitlines() if items else []


def lasting_failure(env: dict[str, str], name: str) -> str | None:
    import httpx

    live = httpx.get(f"{_api(env)}{WS}/{name}", timeout=10).json()
    for cond in (live.get("status") or {}).get("conditions") or []:
        if cond["type"] == "WorkspaceReady" and cond.get("reason") in FAILED:
            return f"{cond['reason']}: {cond.get('message')}"
    return None


def watch(env: dict[str, str], name: str, timeout: float, every: float = 1.0) -> bool:
    """Print `kaito get workspaces -o wide` rows of `name` as they change (polled `every`
    seconds), until WORKSPACEREADY is True."""
    print(f"$ kaito get workspaces -o wide -w   (watching {name})")
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        lines = workspaces_table(env, wide=True)
        rows = [line for line in lines[1:] if line.split()[0] == name]
        if rows:
            cells = table_cells(lines[0], rows[0])
            state = [v for k, v in cells.items() if k.endswith(("READY", "STARTED"))]
            if last is None:
                print(lines[0])
            if state != last:
                print(rows[0], flush=True)
                last = state
            if cells["WORKSPACEREADY"] == "True":
                return True
            if (failure := lasting_failure(env, name)) is not None:
                print(f"demo failed: {name}: {failure}", file=sys.stderr)
                run_kaito(env, "describe", "workspace", name)
                return False
        time.sleep(every)
    print(f"demo failed: {name} did not become ready", file=sys.stderr)
    run_kaito(env, "describe", "workspace", name)
    return False


def job_log(sandbox: Path, job: str, keys: tuple[str, ...], limit: int = 40) -> None:
    """The lines of a Job's pod log that contain one of `keys` (what `kubectl logs job/<job>`
    shows in a cluster; the sandbox's kubelet writes pod logs under its folder)."""
    for log in sorted(sandbox.glob(f"pods/default_{job}-*/*.log"))[:4]:
        lines = [line for line in log.read_text(errors="replace").splitlines()
                 if any(k in line for k in keys)]
        print(f"$ kubectl logs job/{job}   (the lines with {', '.join(map(repr, keys))})")
        for line in lines[:limit]:
            print("  " + line)
