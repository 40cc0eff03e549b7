"""A Kubernetes API server on loopback for component tests and the local sandbox.

:class:`KubeApiEmulator` runs :class:`FaithfulKubernetesEmulator` (kmock 0.8 with the fidelity
fixes) in its own thread and event loop.  Operators under test run in other threads (e.g.
``kopf.testing.KopfRunner``) and tests may use the sync ``kubernetes`` client from the test
thread; sharing one loop with kopf costs ~5 s per operator stop and deadlocks sync clients.

Deviations from a real API server, kept on purpose (small, documented):

- no authentication/authorization, admission, defaulting or schema validation of bodies;
- pods, like every other kind, are removed at once on DELETE unless they carry finalizers
  (no kubelet, so no graceful termination);
- strategic-merge patch knows the merge keys of common built-in lists only (see patching.py);
  server-side apply is a merge patch that may create; no managedFields;
- LIST pagination (``limit``/``continue``) pages over the current state, not a snapshot;
- namespaces exist implicitly: the first object in a namespace creates it;
- no watch bookmarks except the one that ends ``sendInitialEvents``;
- no controllers besides garbage collection and namespace termination: Deployments,
  StatefulSets and Jobs never get pods, nodes never get ready, nobody writes their status;
- subresources other than ``status`` (scale, log, exec, binding, eviction) answer 404.

Faults: ``inject(ApiFault("create", "deployments", 422, "..."))`` makes matching requests fail.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Self, TypeVar

import aiohttp.web

from kaito_sandbox.sim.api_faults import ApiFault
from kaito_sandbox.sim.emulator import FaithfulKubernetesEmulator, RequestRecord
from kaito_sandbox.sim.store import ResourceType

__all__ = [
    "ApiFault",
    "KubeApiEmulator",
    "MACHINE",
    "NODECLAIM",
    "RequestRecord",
    "ResourceType",
    "WORKSPACE",
    "register_kaito_kinds",
]

T = TypeVar("T")

WORKSPACE = ResourceType(
    group="kaito.sh",
    version="v1alpha1",
    plural="workspaces",
    kind="Workspace",
    namespaced=True,
    status_subresource=True,
    custom=True,
    singular="workspace",
    short_names=("wk",),
    subresources=("status",),
)
MACHINE = ResourceType(
    group="karpenter.sh",
    version="v1alpha5",
    plural="machines",
    kind="Machine",
    namespaced=False,
    status_subresource=True,
    custom=True,
    singular="machine",
    subresources=("status",),
)
NODECLAIM = ResourceType(
    group="karpenter.sh",
    version="v1",
    plural="nodeclaims",
    kind="NodeClaim",
    namespaced=False,
    status_subresource=True,
    custom=True,
    singular="nodeclaim",
    subresources=("status",),
)
DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


def register_kaito_kinds(emulator: FaithfulKubernetesEmulator) -> None:
    """Serve the Workspace, Machine and NodeClaim custom resources (discovery is all kopf
    needs)."""
    emulator.register(WORKSPACE)
    emulator.register(MACHINE)
    emulator.register(NODECLAIM)


class KubeApiEmulator:
    """The emulated API server in a background thread; use as a context manager or start()/stop().

    ``url`` is ``http://127.0.0.1:<free port>``; ``requests`` is the request log (method, path,
    RBAC verb, resource, namespace, name, status) of everything clients asked.
    """

    def __init__(
        self,
        *,
        builtins: bool = True,
        kaito_kinds: bool = True,
        extra_types: tuple[ResourceType, ...] = (),
        host: str = "127.0.0.1",
        port: int = 0,
        startup_timeout: float = 30.0,
        shutdown_timeout: float = 5.0,
        history_size: int = 10_000,
    ) -> None:
        self.emulator = FaithfulKubernetesEmulator()
        self.emulator.store.history_size = history_size
        if builtins:
            self.emulator.load_builtins()
        if kaito_kinds:
            register_kaito_kinds(self.emulator)
        for rtype in extra_types:
            self.emulator.register(rtype)
        self._host, self._port = host, port
        self._startup_timeout, self._shutdown_timeout = startup_timeout, shutdown_timeout
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._url: str | None = None

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("the emulator is not running")
        return self._url

    @property
    def requests(self) -> list[RequestRecord]:
        """A copy of the request log, safe to read from any thread."""
        with self.emulator._log_lock:
            return list(self.emulator.request_log)

    def clear_requests(self) -> None:
        with self.emulator._log_lock:
            self.emulator.request_log.clear()

    def inject(self, fault: ApiFault) -> ApiFault:
        """Answer the requests `fault` matches with its error until `remove(fault)`."""
        return self.emulator.faults.add(fault)

    def remove(self, fault: ApiFault) -> None:
        self.emulator.faults.remove(fault)

    def call(self, fn: Callable[[], T], timeout: float = 5.0) -> T:
        """Run `fn` on the emulator's loop (e.g. to read ``emulator.store``); return its result."""
        if self._loop is None:
            raise RuntimeError("the emulator is not running")
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except BaseException as e:  # handed over to the caller's thread
                future.set_exception(e)

        self._loop.call_soon_threadsafe(run)
        return future.result(timeout)

    def start(self) -> Self:
        if self._thread is not None:
            raise RuntimeError("the emulator is already started")
        self._thread = threading.Thread(target=self._run, name="kube-api-emulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(self._startup_timeout):
            raise TimeoutError(f"the API emulator did not start within {self._startup_timeout} s")
        if self._error is not None:
            raise RuntimeError("the API emulator failed to start") from self._error
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(self._shutdown_timeout + 5.0)
        self._thread = None
        self._url = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._serve(loop))
        except BaseException as e:  # reported to start(); never lost silently
            self._error = e
        finally:
            self._ready.set()
            loop.close()
            self._loop = None

    async def _serve(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop, self._stopping = loop, asyncio.Event()
        async with self.emulator:
            for name in DEFAULT_NAMESPACES:
                self.emulator.store.ensure_namespace(name)
            # Cancel handlers of clients that hung up: a dead watch must unsubscribe at once.
            server = aiohttp.web.Server(self._handle, handler_cancellation=True)
            runner = aiohttp.web.ServerRunner(server, shutdown_timeout=self._shutdown_timeout)
            await runner.setup()
            try:
                site = aiohttp.web.TCPSite(runner, self._host, self._port)
                await site.start()
                host, port = runner.addresses[0][:2]
                self._url = f"http://{host}:{port}"
                self._ready.set()
                await self._stopping.wait()
                self.emulator.close_watches()
                await asyncio.sleep(0)
            finally:
                await runner.cleanup()

    async def _handle(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        return await self.emulator(raw_request)
