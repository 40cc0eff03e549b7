"""A reconcile pass that fails is shown on the Workspace and retried with backoff.

The emulated API server answers chosen requests with 422 or 500 (`ApiFault`); the real
workspace controller must then show `WorkspaceReady=False` with the API's reason and message,
post one Warning Event per distinct failure (not one per retry), retry with a growing delay,
survive a status write that fails too, and become ready once the fault is gone.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import aiohttp.web
import pytest

from kaito_operator.controller.backoff import Backoff
from kaito_operator.controller.failures import describe_failure
from kaito_operator.kube import (
    ApiError,
    Connection,
    Kind,
    KubeClient,
    describe_request,
    one_line,
    status_reason,
)
from kaito_operator.settings import Settings
from kaito_operator.workspace import runtime as runtime_module
from kaito_operator.workspace.operator import OperatorThread
from kaito_operator.workspace.runtime import WorkspaceRuntime
from kaito_sandbox.sim.cluster import SimulatedCluster
from kaito_sandbox.sim.kube_api import ApiFault
from tests.component.test_workspace_controller import (
    CATALOG,
    apply,
    condition,
    gpus_of,
    wait_condition,
    workspace,
)
from tests.factories import DELETE, inference_workspace, with_changes
from tests.support.waiting import wait_for

#: Fast enough for a test, slow enough that a hot loop would show in the request counts.
BACKOFF = Backoff(initial=0.2, factor=2.0, cap=1.0)
INVALID = ('Deployment.apps "custom" is invalid: spec.template.spec.containers[0].name: '
           'Invalid value: "Server": a lowercase RFC 1123 label must consist of lower case '
           "alphanumeric characters or '-'\n" + "spec.template.spec.x: Invalid value\n" * 60)


@pytest.fixture
def cluster(kube_api) -> Iterator[SimulatedCluster]:
    with SimulatedCluster(kube_api.url, gpus_of=gpus_of) as sim:
        yield sim


@pytest.fixture
def runtime() -> WorkspaceRuntime:
    return WorkspaceRuntime(CATALOG, Settings(requeue_seconds=0.5), backoff=BACKOFF)


@pytest.fixture
def operator(kube_api, namespace, runtime) -> Iterator[OperatorThread]:
    op = OperatorThread(runtime, kube_api.url, [namespace]).start()
    yield op
    op.stop()


@pytest.fixture
def faults(kube_api) -> Iterator[list[ApiFault]]:
    """Faults a test injects; all removed afterwards (the emulator is shared)."""
    added: list[ApiFault] = []
    yield added
    for fault in added:
        kube_api.remove(fault)


def inject(kube_api, faults: list[ApiFault], fault: ApiFault) -> ApiFault:
    faults.append(kube_api.inject(fault))
    return fault


def custom_workspace(name: str) -> dict[str, Any]:
    template = {"spec": {"containers": [{"name": "server", "image": "vllm/vllm-openai:v0.6.3",
                                         "ports": [{"containerPort": 8000}]}]}}
    return with_changes(inference_workspace(name=name),
                        {"inference.preset": DELETE, "inference.template": template})


def warnings(http, ns: str, name: str) -> list[dict[str, Any]]:
    events = http.get(f"/api/v1/namespaces/{ns}/events").json()["items"]
    return [e for e in events if e["involvedObject"]["name"] == name and e["type"] == "Warning"]


def test_422_then_500_are_shown_once_each_and_the_backoff_retry_recovers(
    http, kube_api, namespace, operator, cluster, faults
):
    invalid = inject(kube_api, faults, ApiFault("create", "deployments", 422, INVALID,
                                                namespace=namespace))
    started = time.monotonic()
    created = apply(http, namespace, custom_workspace("custom"))
    cond = wait_condition(http, namespace, "custom", "WorkspaceReady", "False", "Invalid",
                          timeout=60)
    assert cond["message"].startswith("create apps/v1 deployments in ")
    assert 'Deployment.apps "custom" is invalid: spec.template.spec.containers[0].name' in (
        cond["message"])
    assert "\n" not in cond["message"] and len(cond["message"]) <= 512
    assert cond["observedGeneration"] == created["metadata"]["generation"]
    # The conditions of the last pass that completed are kept beside the failure.
    assert condition(workspace(http, namespace, "custom"), "MachineReady") is not None
    first = wait_for(lambda: warnings(http, namespace, "custom"), what="a Warning Event")
    assert [e["reason"] for e in first] == ["Invalid"]
    assert "is invalid" in first[0]["message"] and "\n" not in first[0]["message"]

    # Retries keep hitting the fault; the same failure is not announced again.
    wait_for(lambda: invalid.hits >= 4, timeout=60, what="four failed create attempts")
    assert [e["reason"] for e in warnings(http, namespace, "custom")] == ["Invalid"]
    # Backoff, not a hot loop: each retry waits at least `initial` seconds.
    elapsed = time.monotonic() - started
    assert invalid.hits <= 3 + elapsed / BACKOFF.initial, (invalid.hits, elapsed)

    # Swap 422 for 500 (the new fault first, so no pass slips through between them).
    server = inject(kube_api, faults, ApiFault("create", "deployments", 500,
                                               "etcdserver: request timed out",
                                               namespace=namespace))
    kube_api.remove(invalid)
    cond = wait_condition(http, namespace, "custom", "WorkspaceReady", "False", "InternalError",
                          timeout=60)
    assert "500 InternalError: etcdserver: request timed out" in cond["message"]
    wait_for(lambda: sorted(e["reason"] for e in warnings(http, namespace, "custom"))
             == ["InternalError", "Invalid"], timeout=60, what="a Warning Event for the 500")
    wait_for(lambda: server.hits >= 2, timeout=60, what="a retry after the 500")

    kube_api.remove(server)
    ready = wait_condition(http, namespace, "custom", "WorkspaceReady", "True", timeout=60)
    assert ready["reason"] == "WorkspaceReady"
    final = workspace(http, namespace, "custom")
    reasons = {c["reason"] for c in final["status"]["conditions"]}
    assert not reasons & {"Invalid", "InternalError"}, reasons
    assert http.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/custom").status_code == 200
    assert len(warnings(http, namespace, "custom")) == 2


def test_a_failing_status_write_is_survived_and_shown_once_it_works(
    http, kube_api, namespace, runtime, operator, cluster, faults
):
    status = inject(kube_api, faults, ApiFault("patch", "workspaces", 500, "status is down",
                                               namespace=namespace, subresource="status"))
    create = inject(kube_api, faults, ApiFault("create", "deployments", 422, INVALID,
                                               namespace=namespace))
    apply(http, namespace, custom_workspace("custom"))
    # The pass fails on the status write, then so does showing that failure: both are retried.
    wait_for(lambda: status.hits >= 4 and create.hits >= 1, timeout=60,
             what="failed status writes after the 422")
    assert (workspace(http, namespace, "custom").get("status") or {}).get("conditions") is None
    assert operator.error is None
    kube_api.remove(status)
    wait_condition(http, namespace, "custom", "WorkspaceReady", "False", "Invalid", timeout=60)
    kube_api.remove(create)
    wait_condition(http, namespace, "custom", "WorkspaceReady", "True", timeout=60)
    assert not runtime.retry_pending((namespace, "custom"))


def test_a_spec_change_does_not_wait_out_the_backoff(http, kube_api, namespace, cluster, faults):
    slow = WorkspaceRuntime(CATALOG, Settings(requeue_seconds=0.5),
                            backoff=Backoff(initial=300, cap=300))
    key = (namespace, "custom")
    op = OperatorThread(slow, kube_api.url, [namespace]).start(timeout=60)
    try:
        invalid = inject(kube_api, faults, ApiFault("create", "deployments", 422, INVALID,
                                                    namespace=namespace))
        apply(http, namespace, custom_workspace("custom"))
        wait_condition(http, namespace, "custom", "WorkspaceReady", "False", "Invalid",
                       timeout=60)
        # Waiting 300 s for the retry: the timer does not start passes meanwhile.
        assert slow.retry_pending(key) and not slow.due(key)
        kube_api.remove(invalid)
        patch = {"inference": {"template": {"spec": {"containers": [{
            "name": "server", "image": "vllm/vllm-openai:v0.6.4",
            "ports": [{"containerPort": 8000}]}]}}}}
        changed = http.patch(f"/apis/kaito.sh/v1alpha1/namespaces/{namespace}/workspaces/custom",
                             json=patch, headers={"Content-Type": "application/merge-patch+json"})
        assert changed.status_code == 200, changed.text
        wait_condition(http, namespace, "custom", "WorkspaceReady", "True", timeout=60,
                       generation=changed.json()["metadata"]["generation"])
        assert invalid.hits == 1 and not slow.retry_pending(key)
    finally:
        op.stop()


def test_an_unexpected_exception_is_a_reconcile_error(
    http, namespace, operator, cluster, monkeypatch
):
    real = runtime_module.reconcile
    broken = {"on": True}

    async def flaky(body, deps):
        if broken["on"] and body["metadata"]["name"] == "odd":
            raise KeyError("uid")
        return await real(body, deps)

    monkeypatch.setattr(runtime_module, "reconcile", flaky)
    apply(http, namespace, inference_workspace(name="odd"))
    cond = wait_condition(http, namespace, "odd", "WorkspaceReady", "False", "ReconcileError",
                          timeout=60)
    assert cond["message"] == "unexpected error in the reconcile pass: KeyError: 'uid'"
    # The Event is posted after the status patch that the wait above observed.
    events = wait_for(lambda: warnings(http, namespace, "odd"), what="a Warning Event")
    assert [e["reason"] for e in events] == ["ReconcileError"]
    broken["on"] = False
    wait_condition(http, namespace, "odd", "WorkspaceReady", "True", timeout=60)


def test_emulator_faults_answer_with_a_status_body_and_run_out(http, kube_api, namespace, faults):
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}}
    once = inject(kube_api, faults, ApiFault("create", "configmaps", 422, "no", name="a",
                                             namespace=namespace, times=1))
    other = http.post(path, json=dict(body, metadata={"name": "b"}))
    assert other.status_code == 201  # another name is served
    rejected = http.post(path, json=body)
    assert rejected.status_code == 422
    assert rejected.json() == {"kind": "Status", "apiVersion": "v1", "metadata": {},
                               "status": "Failure", "message": "no", "reason": "Invalid",
                               "code": 422}
    assert once.hits == 1
    assert http.post(path, json=body).status_code == 201  # used up
    with pytest.raises(ValueError, match="4xx or 5xx"):
        kube_api.inject(ApiFault("get", "configmaps", 200, "fine"))


def test_backoff_doubles_to_its_cap_and_rejects_nonsense():
    backoff = Backoff()
    assert [backoff.delay(n) for n in (1, 2, 3, 9, 10, 10_000)] == [1, 2, 4, 256, 300, 300]
    for bad in ({"initial": 0}, {"initial": 10, "cap": 1}, {"factor": 0.5}):
        with pytest.raises(ValueError):
            Backoff(**bad)


def test_failures_are_described_in_one_bounded_line():
    api = ApiError(422, "Invalid", "bad\nworse", "create apps/v1 deployments in ns")
    assert describe_failure(api) == (
        "Invalid", "create apps/v1 deployments in ns: 422 Invalid: bad worse")
    reason, message = describe_failure(RuntimeError("x" * 5000))
    assert reason == "ReconcileError" and len(message) == 512 and message.endswith("...")
    assert describe_failure(TimeoutError())[0] == "ApiUnreachable"
    assert status_reason(422, "Unprocessable Entity") == "Invalid"
    assert status_reason(599, None) == "InternalError"
    assert status_reason(418, "") == "BadRequest"
    assert status_reason(409, "AlreadyExists") == "AlreadyExists"
    assert describe_request("PATCH", "/apis/kaito.sh/v1alpha1/namespaces/n/workspaces/w/status") \
        == "patch kaito.sh/v1alpha1 workspaces/w/status in n"
    assert describe_request("GET", "/api/v1/nodes?x=1") == "get v1 nodes"
    assert one_line("a\t b\n\nc") == "a b c"


def test_client_errors_from_non_status_bodies_are_one_line():
    """A proxy's HTML page, JSON that is not an object, an empty body: still an ApiError."""

    async def serve(request: aiohttp.web.Request) -> aiohttp.web.Response:
        kind = request.match_info["kind"]
        if kind == "html":
            return aiohttp.web.Response(status=502, text="<html>\n<b>Bad gateway</b>\n</html>",
                                        content_type="text/html")
        if kind == "list":
            return aiohttp.web.json_response([1, 2], status=500)
        return aiohttp.web.Response(status=503)

    async def scenario() -> list[ApiError]:
        app = aiohttp.web.Application()
        app.router.add_get("/api/v1/{kind}", serve)
        runner = aiohttp.web.AppRunner(app)
        await runner.setup()
        site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        client = KubeClient(Connection(server=f"http://127.0.0.1:{port}"), timeout=10)
        found = []
        try:
            for kind in ("html", "list", "empty"):
                with pytest.raises(ApiError) as caught:
                    await client.list(Kind("", "v1", kind, "Thing", False))
                found.append(caught.value)
        finally:
            await client.close()
            await runner.cleanup()
        return found

    html, listed, empty = asyncio.run(scenario())
    assert (html.status, html.reason) == (502, "InternalError")
    assert html.message == "<html> <b>Bad gateway</b> </html>"
    assert (listed.status, listed.reason, listed.message) == (500, "InternalError", "[1, 2]")
    assert (empty.status, empty.reason) == (503, "ServiceUnavailable")
    assert empty.message == "Service Unavailable"
    assert html.action == "get v1 html"
