"""`kaito sandbox up|apply|status|down`, `kaito get workspaces`, `kaito describe workspace`,
`kaito chat`: the sandbox from a user's side.

`kaito chat NAME QUESTION` sends the question as a user message (the model's chat template
renders it, greedy decoding) and prints the answer; `--raw` sends text to continue instead."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from typing import Any

import httpx

from kaito_operator.catalog import Catalog
from kaito_sandbox import provisioning
from kaito_sandbox.state import alive, need_running, read_state, running_state, sandbox_dir
from kaito_sandbox.up_options import add_node_options, daemon_options
from kaito_sandbox.views import WS, describe, get

#: Core kinds `kaito sandbox apply` creates besides Workspaces (push secrets, tuning configs).
CORE_KINDS = {"Secret": "secrets", "ConfigMap": "configmaps"}
BANNER = (
    "This is a SIMULATED cluster and cloud: the Kubernetes API is an emulator on loopback, the "
    "Azure agent-pools endpoint and AKS are simulated, and pods run as local processes on the "
    "CPU. The operators, the inference server and the tuning job are the real ones."
)


#: `--provisioner none`: no cloud at all, the GPU nodes are there from the start.
BANNER_NONE = (
    "This is a SIMULATED cluster: the Kubernetes API is an emulator on loopback, the GPU nodes "
    "are simulated (joined at start, as a cluster's own GPU pool), and pods run as local "
    "processes on the CPU. The workspace operator, the inference server and the tuning job are "
    "the real ones."
)


def _need() -> dict[str, Any]:
    """The running sandbox's state, or exit saying how to start it."""
    return need_running()


def up(args: argparse.Namespace, catalog: Catalog) -> int:
    options = daemon_options(args, catalog)
    if isinstance(options, str):
        print(f"error: {options}", file=sys.stderr)
        return 2
    if (state := running_state()) is not None:
        running = state.get("provisioner", provisioning.DEFAULT)
        if running != args.provisioner:
            print(f"error: the sandbox is already running with --provisioner {running} (API "
                  f"{state['api']}); run `kaito sandbox down` first to start it with "
                  f"--provisioner {args.provisioner}", file=sys.stderr)
            return 1
        print(f"the sandbox is already running with --provisioner {running} "
              f"(API {state['api']})")
        return 0
    root = sandbox_dir()
    root.mkdir(parents=True, exist_ok=True)
    (root / "state.json").unlink(missing_ok=True)
    with open(root / "daemon.log", "ab") as out:
        subprocess.Popen([sys.executable, "-m", "kaito_sandbox.daemon", "--dir",
                          str(root), *options], stdout=out, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + args.timeout
    said = None
    while time.monotonic() < deadline:
        state = read_state()
        if state and state.get("phase") not in (said, "running", "stopped"):
            said = state.get("phase")
            print(f"sandbox: {said}...", flush=True)
        if state and state.get("phase") == "running":
            mode = state.get("provisioner", provisioning.DEFAULT)
            print(BANNER_NONE if mode == provisioning.NONE else BANNER)
            print(f"Kubernetes API: {state['api']} (kubeconfig: {state['kubeconfig']})")
            print(f"Model served by inference pods: {state['model_note']}")
            print(f"Node provisioning: {provisioning.describe(mode)}")
            if state.get("nodes"):
                print(f"GPU nodes offered: {state['byo_nodes']}: {', '.join(state['nodes'])}")
            if not state.get("registry"):
                print("No OCI registry (install Debian's docker-registry for tuning pushes).")
            else:
                print(f"OCI registry: {state['registry']}")
            return 0
        if state and state.get("phase") == "stopped":
            break
        time.sleep(0.3)
    print(f"the sandbox did not start; see {root / 'daemon.log'}", file=sys.stderr)
    return 1


def down(args: argparse.Namespace, catalog: Catalog) -> int:
    state = read_state()
    if not state or not alive(int(state.get("pid", 0))):
        print("the sandbox is not running")
        return 0
    os.kill(int(state["pid"]), signal.SIGTERM)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline and alive(int(state["pid"])):
        time.sleep(0.2)
    left = [pid for pid in [state["pid"], *state.get("children", [])] if alive(int(pid))]
    if left:
        print(f"still running: {left}", file=sys.stderr)
        return 1
    print("the sandbox is stopped; nothing it started is running")
    return 0


def status(args: argparse.Namespace, catalog: Catalog) -> int:
    state = running_state()
    print(json.dumps(state, indent=2) if state else "the sandbox is not running")
    return 0 if state else 1


def apply(args: argparse.Namespace, catalog: Catalog) -> int:
    from kaito_operator.cli.inputs import InputError
    from kaito_operator.cli.validate_cmd import read_documents
    from kaito_operator.validation import errors, validate_workspace

    state = _need()
    try:
        docs = read_documents(args.file)
    except InputError as exc:
        print(f"error: {args.file}: {exc}", file=sys.stderr)
        return 2
    with httpx.Client(base_url=state["api"], timeout=10) as http:
        for doc in docs:
            if not isinstance(doc, dict):
                continue
            if not isinstance(doc.get("metadata", {}), dict):
                print(f"error: {args.file}: metadata must be a mapping", file=sys.stderr)
                return 1
            ns = doc.setdefault("metadata", {}).setdefault("namespace", args.namespace)
            name = doc["metadata"].get("name")
            if doc.get("kind") == "Workspace":
                found = errors(validate_workspace(doc, catalog))
                if found:
                    for finding in found:
                        print(f"error: workspace/{name}: {finding}", file=sys.stderr)
                    return 1
                path = WS.format(ns=ns)
            elif doc.get("kind") in CORE_KINDS:
                path = f"/api/v1/namespaces/{ns}/{CORE_KINDS[doc['kind']]}"
            else:
                print(f"error: the sandbox applies Workspaces, Secrets and ConfigMaps, not "
                      f"{doc.get('kind')}", file=sys.stderr)
                return 1
            created = http.post(path, json=doc)
            if created.status_code == 409:
                patched = http.patch(f"{path}/{name}", json=doc,
                                     headers={"Content-Type": "application/merge-patch+json"})
                patched.raise_for_status()
                print(f"{doc['kind'].lower()}/{name} configured")
            else:
                created.raise_for_status()
                print(f"{doc['kind'].lower()}/{name} created")
    return 0


def delete(args: argparse.Namespace, catalog: Catalog) -> int:
    state = _need()
    path = f"{state['api']}{WS.format(ns=args.namespace)}/{args.name}"
    response = httpx.delete(path, timeout=10)
    if response.status_code == 404:
        print(f'Error: workspaces "{args.name}" not found', file=sys.stderr)
        return 1
    response.raise_for_status()
    print(f'workspace.kaito.sh "{args.name}" deleted')
    deadline = time.monotonic() + args.timeout
    while args.wait and time.monotonic() < deadline:
        if httpx.get(path, timeout=10).status_code == 404:
            return 0
        time.sleep(0.3)
    if args.wait:
        print("the Workspace is still being deleted (its Machines or NodeClaims are going)",
              file=sys.stderr)
        return 1
    return 0


def chat_body(prompt: str, *, raw: bool, max_new_tokens: int) -> dict[str, Any]:
    """KAITO's /chat body: `prompt` as one user message (rendered by the model's chat
    template), or with `raw` as plain text to continue (KAITO's `prompt`); greedy."""
    generate = {"max_new_tokens": max_new_tokens, "do_sample": False}
    if raw:
        return {"prompt": prompt, "generate_kwargs": generate}
    return {"messages": [{"role": "user", "content": prompt}], "generate_kwargs": generate}


def chat(args: argparse.Namespace, catalog: Catalog) -> int:
    state = _need()
    port = (state.get("services") or {}).get(f"{args.namespace}/{args.name}")
    if port is None:
        print(f"no Service {args.namespace}/{args.name} in the sandbox", file=sys.stderr)
        return 1
    body = chat_body(args.prompt, raw=args.raw, max_new_tokens=args.max_new_tokens)
    print(f"$ curl -s -X POST http://127.0.0.1:{port}/chat -H 'Content-Type: application/json' "
          f"-d {shlex.quote(json.dumps(body))}   # in a cluster: http://{args.name}/chat",
          file=sys.stderr)
    try:
        response = httpx.post(f"http://127.0.0.1:{port}/chat", json=body, timeout=args.timeout)
    except httpx.HTTPError as exc:
        print(f"the Service answered nothing ({exc}); is the Workspace ready? "
              f"`kaito get workspaces`", file=sys.stderr)
        return 1
    if response.status_code != 200:
        hint = ("\n(the model has no chat template: send the text as it is with --raw)"
                if "no chat template" in response.text else "")
        print(f"HTTP {response.status_code}: {response.text}{hint}", file=sys.stderr)
        return 1
    result = str(response.json()["Result"])
    print(result if args.raw else result.strip())
    return 0


def add_commands(sub: Any) -> None:
    sandbox = sub.add_parser("sandbox", help="the whole flow on this machine (simulated cluster)")
    verbs = sandbox.add_subparsers(dest="verb", required=True, metavar="VERB")
    for name, fn, help_ in (("up", up, "start it in the background"),
                            ("down", down, "stop everything it started"),
                            ("status", status, "show what runs where")):
        verb = verbs.add_parser(name, help=help_)
        verb.add_argument("--timeout", type=float, default=900.0,
                          help="seconds to wait (the first start converts the packaged Gemma "
                               "3 270M, ~2 min; without it, it may download a small model)")
        verb.set_defaults(run=fn)
        if name == "up":
            add_node_options(verb)
    applying = verbs.add_parser("apply", help="apply a Workspace (or Secret) file")
    applying.add_argument("-f", "--filename", dest="file", required=True)
    applying.add_argument("-n", "--namespace", default="default")
    applying.set_defaults(run=apply)

    getting = sub.add_parser("get", help="list Workspaces (sandbox)")
    getting.add_argument("kind", choices=["workspaces", "workspace", "wk", "wks"])
    getting.add_argument("-n", "--namespace", default="default")
    getting.add_argument("-o", "--output", choices=["wide"])
    getting.set_defaults(run=get)

    describing = sub.add_parser("describe", help="conditions and events of a Workspace (sandbox)")
    describing.add_argument("kind", choices=["workspace", "workspaces", "wk", "wks"])
    describing.add_argument("name")
    describing.add_argument("-n", "--namespace", default="default")
    describing.set_defaults(run=describe)

    deleting = sub.add_parser("delete", help="delete a Workspace (sandbox)")
    deleting.add_argument("kind", choices=["workspace", "workspaces", "wk", "wks"])
    deleting.add_argument("name")
    deleting.add_argument("-n", "--namespace", default="default")
    deleting.add_argument("--wait", action=argparse.BooleanOptionalAction, default=True)
    deleting.add_argument("--timeout", type=float, default=120.0)
    deleting.set_defaults(run=delete)

    chatting = sub.add_parser("chat", help="ask a Workspace's /chat a question (sandbox)")
    chatting.add_argument("name")
    chatting.add_argument("prompt")
    chatting.add_argument("-n", "--namespace", default="default")
    chatting.add_argument("--raw", action="store_true",
                          help="send PROMPT as text to continue (KAITO's `prompt`) instead of "
                               "a user message rendered by the model's chat template")
    chatting.add_argument("--max-new-tokens", type=int, default=64)
    chatting.add_argument("--timeout", type=float, default=120.0)
    chatting.set_defaults(run=chat)

