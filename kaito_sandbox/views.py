"""`kaito get workspaces` and `kaito describe workspace` against the sandbox's API."""

from __future__ import annotations

import argparse
import sys

import httpx

from kaito_operator.catalog import Catalog
from kaito_sandbox.state import need_running

WS = "/apis/kaito.sh/v1alpha1/namespaces/{ns}/workspaces"


def get(args: argparse.Namespace, catalog: Catalog) -> int:
    from kaito_operator.api.crd import workspace_crd
    from kaito_operator.cli.columns import columns_table

    state = need_running()
    items = httpx.get(state["api"] + WS.format(ns=args.namespace), timeout=10).json()["items"]
    if not items:
        print(f"No resources found in {args.namespace} namespace.")
        return 0
    sys.stdout.write(columns_table(workspace_crd(), items, wide=args.output == "wide"))
    return 0


def describe(args: argparse.Namespace, catalog: Catalog) -> int:
    state = need_running()
    with httpx.Client(base_url=state["api"], timeout=10) as http:
        response = http.get(f"{WS.format(ns=args.namespace)}/{args.name}")
        if response.status_code == 404:
            print(f'Error: workspaces "{args.name}" not found', file=sys.stderr)
            return 1
        ws = response.json()
        events = http.get(f"/api/v1/namespaces/{args.namespace}/events").json()["items"]
    meta = ws["metadata"]
    print(f"Name:         {meta['name']}\nNamespace:    {meta['namespace']}")
    print(f"Instance:     {ws['resource'].get('instanceType')} x {ws['resource'].get('count', 1)}")
    kind = "inference" if "inference" in ws else "tuning"
    print(f"Mode:         {kind}")
    print(f"Worker nodes: {', '.join((ws.get('status') or {}).get('workerNodes') or []) or '-'}")
    print("Conditions:\n  TYPE              STATUS  REASON                  MESSAGE")
    for cond in (ws.get("status") or {}).get("conditions") or []:
        print(f"  {cond['type']:<17} {cond['status']:<7} {cond.get('reason', ''):<23} "
              f"{cond.get('message', '')}")
    print("Events:\n  TYPE     REASON                  MESSAGE")
    mine = [e for e in events if e["involvedObject"].get("name") == meta["name"]]
    for event in sorted(mine, key=lambda e: int(e["metadata"]["resourceVersion"])):
        print(f"  {event['type']:<8} {event['reason']:<23} {event['message']}")
    return 0


