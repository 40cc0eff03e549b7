"""Fixtures for component tests: one emulated API server per session, one namespace per test,
and a short wait between the workspace controller's finalizer checks."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from kaito_sandbox.sim.kube_api import KubeApiEmulator


@pytest.fixture(scope="session")
def kube_api() -> Iterator[KubeApiEmulator]:
    """The shared emulator; tests isolate themselves by namespace (see `namespace`)."""
    with KubeApiEmulator() as api:
        yield api


@pytest.fixture
def namespace() -> str:
    """A fresh namespace name; namespaces exist implicitly on first use, as the emulator documents."""
    return f"t-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def http(kube_api: KubeApiEmulator) -> Iterator[httpx.Client]:
    """A plain HTTP client on the emulator (loopback only, bounded timeouts)."""
    with httpx.Client(base_url=kube_api.url, timeout=30.0) as client:
        yield client


@pytest.fixture(autouse=True)
def quick_finalizer_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    """A deleted Workspace's finalizer looks again every 0.5 s instead of 5 s while its node
    objects go away: the deletion tests wait on the Workspace being gone (observed state), and
    would otherwise wait out the longer delay once or twice each."""
    from kaito_operator.workspace import handlers

    monkeypatch.setattr(handlers, "FINALIZE_DELAY", 0.5)
