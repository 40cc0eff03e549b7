"""Passes over objects, one at a time per object, many objects at once, no handler waiting.

Every trigger (the object changed, a child changed, a timer fired) funnels into
:meth:`KeyScheduler.trigger`. It starts a task unless one is already running for that key, in
which case the running one goes round once more: a burst of triggers costs one extra pass.
Each pass waits `debounce` seconds first (events come in bursts; one pass sees them all), then
takes a worker slot and the key's lock and runs the operator's pass function.

A pass function returns :class:`Next`: when to look again (a requeue timer; an earlier timer
wins) and whether it failed in a way it handled itself (the key's failure count grows). A pass
that raises is the one failure path for both operators: the failure count grows, a retry is
armed after the :class:`Backoff` delay, and the operator's failure hook is awaited (it shows
or logs the failure). While a retry is pending, triggers that are not `urgent` start nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from kaito_operator.controller.backoff import Backoff

__all__ = ["FailureHook", "KeyScheduler", "KeyState", "Next", "PassFunction"]

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
S = TypeVar("S")


@dataclass(frozen=True)
class Next:
    """What a pass that returned says about the next one. `after`: look again after that many
    seconds (None: only when triggered); `failed`: it failed for a reason it handled itself
    (the failure count grows; otherwise it is reset)."""

    after: float | None = None
    failed: bool = False


@dataclass(eq=False)
class KeyState(Generic[S]):
    """The scheduler's bookkeeping for one key, and `data`: what the operator keeps per key."""

    data: S
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    failures: int = 0
    """Failed passes in a row."""
    running: bool = False
    again: bool = False
    """A trigger arrived during the running pass: go round once more."""
    again_urgent: bool = False
    """... and one of those triggers must not wait for a pending retry."""
    timer: asyncio.TimerHandle | None = None
    timer_due: float = 0.0
    """Loop time the timer fires at."""
    timer_is_retry: bool = False
    """The timer is the retry of a pass that raised."""

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.timer_is_retry = False


#: Runs one pass over a key (inside its lock and a worker slot).
PassFunction = Callable[[K, KeyState[S]], Awaitable[Next | None]]
#: Called after a pass raised, with the exception and the retry delay (failures counted).
FailureHook = Callable[[K, KeyState[S], Exception, float], Awaitable[None]]


class KeyScheduler(Generic[K, S]):
    """Runs `run_pass` for keys as they are triggered; :meth:`start` inside the event loop."""

    def __init__(
        self,
        run_pass: PassFunction[K, S],
        on_failure: FailureHook[K, S],
        new_data: Callable[[], S],
        *,
        debounce: float,
        max_workers: int,
        backoff: Backoff,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.backoff = backoff
        self.debounce = debounce
        self._run_pass, self._on_failure, self._new_data = run_pass, on_failure, new_data
        self._max_workers = max_workers
        self._sleep = sleep
        self._states: dict[K, KeyState[S]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._slots: asyncio.Semaphore | None = None

    def start(self) -> None:
        self._slots = asyncio.Semaphore(self._max_workers)

    async def stop(self) -> None:
        """Cancel every timer and task (passes in flight included) and wait for them."""
        for state in self._states.values():
            state.cancel_timer()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def drained(self) -> None:
        """Wait until no pass is running or about to run (timers may still be armed)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run `coro` as a task that :meth:`stop` cancels."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- per-key state -------------------------------------------------------------------
    def state(self, key: K) -> KeyState[S]:
        """The key's state, created when the key is new."""
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = KeyState(self._new_data())
        return state

    def get(self, key: K) -> KeyState[S] | None:
        return self._states.get(key)

    def __contains__(self, key: object) -> bool:
        return key in self._states

    def states(self) -> Iterator[KeyState[S]]:
        return iter(list(self._states.values()))

    def forget(self, key: K) -> None:
        """Drop the key: its timer is cancelled and a pass waiting to start does not run."""
        state = self._states.pop(key, None)
        if state is not None:
            state.cancel_timer()

    def retry_pending(self, key: K) -> bool:
        """Is a pass of this key that raised waiting for its retry?"""
        state = self._states.get(key)
        return state is not None and state.timer is not None and state.timer_is_retry

    # -- triggers ------------------------------------------------------------------------
    def trigger(self, key: K, urgent: bool = False) -> None:
        """Run a pass soon. Unless `urgent`, nothing happens while a retry is pending."""
        state = self.state(key)
        if state.timer_is_retry and not urgent:
            return
        if state.running:
            state.again = True
            state.again_urgent = state.again_urgent or urgent
            return
        state.running = True
        self.spawn(self._drain(key, state))

    def requeue(self, key: K, delay: float) -> None:
        """Run a pass in `delay` seconds; an earlier timer already armed wins."""
        state = self.state(key)
        loop = asyncio.get_running_loop()
        due = loop.time() + delay
        if state.timer is not None and state.timer_due <= due:
            return
        self._arm(key, state, delay, retry=False)

    def _arm(self, key: K, state: KeyState[S], delay: float, *, retry: bool) -> None:
        loop = asyncio.get_running_loop()
        state.cancel_timer()
        state.timer_due = loop.time() + delay
        state.timer = loop.call_later(delay, self._fire, key, state)
        state.timer_is_retry = retry

    def _fire(self, key: K, state: KeyState[S]) -> None:
        if not self._current(key, state):
            return
        state.timer = None
        state.timer_is_retry = False
        self.trigger(key, urgent=True)

    def _current(self, key: K, state: KeyState[S]) -> bool:
        """Is `state` still the key's (not forgotten, nor forgotten and created anew)?"""
        return self._states.get(key) is state

    # -- passes --------------------------------------------------------------------------
    async def _drain(self, key: K, state: KeyState[S]) -> None:
        try:
            while True:
                await self._sleep(self.debounce)
                if not self._current(key, state):
                    return  # forgotten while waiting
                state.again = state.again_urgent = False
                await self._pass(key, state)
                if not (state.again and self._current(key, state)):
                    return
                if state.timer_is_retry and not state.again_urgent:
                    return
        finally:
            state.running = False

    async def _pass(self, key: K, state: KeyState[S]) -> None:
        assert self._slots is not None, "KeyScheduler.start() was not called"
        async with self._slots, state.lock:
            try:
                result = await self._run_pass(key, state)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - one key must never stop the others
                await self._failed(key, state, exc)
                return
            if result is None or not self._current(key, state):
                return
            if result.failed:
                state.failures += 1
            else:
                state.failures = 0
                if state.timer_is_retry:
                    state.cancel_timer()
            if result.after is not None:
                self.requeue(key, result.after)

    async def _failed(self, key: K, state: KeyState[S], exc: Exception) -> None:
        """The one failure path: count it, arm the retry, hand it to the operator's hook."""
        state.failures += 1
        delay = self.backoff.delay(state.failures)
        if self._current(key, state):
            self._arm(key, state, delay, retry=True)
        try:
            await self._on_failure(key, state, exc, delay)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the retry is armed whatever the hook does
            log.exception("the failure hook for %s raised", key)
