"""The shared per-key scheduler: coalescing, debounce, requeue timers, backoff, failures.

Each test runs its own event loop. Passes are held and released with events; waits are on
observed state (`drained()`, a pass's event), never on sleeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from kaito_operator.controller.backoff import Backoff, exponential, retry_delay
from kaito_operator.controller.scheduler import KeyScheduler, KeyState, Next

#: Far longer than any test: timers armed with it never fire while the test runs.
NEVER = 3600.0
#: Generous bound for waiting on something that must happen (a busy machine is slow).
WAIT = 30.0


@dataclass
class Data:
    passes: int = 0


@dataclass
class Harness:
    """A scheduler whose passes are scripted: `results` are returned (or raised) in order,
    `gate` (when set) holds every pass until released."""

    results: list[Next | None | Exception] = field(default_factory=list)
    failures_seen: list[tuple[str, int, float, str]] = field(default_factory=list)
    passes: list[str] = field(default_factory=list)
    failures_at_pass: list[int] = field(default_factory=list)
    sleeps: list[float] = field(default_factory=list)
    gate: asyncio.Event | None = None
    entered: asyncio.Event = field(default_factory=asyncio.Event)
    scheduler: KeyScheduler[str, Data] = field(init=False)
    backoff: Backoff = Backoff(initial=NEVER, cap=NEVER)
    debounce: float = 0.05

    def __post_init__(self) -> None:
        self.scheduler = KeyScheduler(self.run_pass, self.on_failure, Data,
                                      debounce=self.debounce, max_workers=4,
                                      backoff=self.backoff, sleep=self.sleep)
        self.scheduler.start()

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await asyncio.sleep(0)

    async def run_pass(self, key: str, state: KeyState[Data]) -> Next | None:
        self.passes.append(key)
        self.failures_at_pass.append(state.failures)
        state.data.passes += 1
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        result = self.results.pop(0) if self.results else Next()
        if isinstance(result, Exception):
            raise result
        return result

    async def on_failure(self, key: str, state: KeyState[Data], exc: Exception,
                         delay: float) -> None:
        self.failures_seen.append((key, state.failures, delay, str(exc)))


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), WAIT))


def test_a_burst_of_triggers_is_one_pass_after_the_debounce():
    async def scenario() -> None:
        h = Harness(debounce=0.1)
        for _ in range(5):
            h.scheduler.trigger("a")
        h.scheduler.trigger("b")
        await h.scheduler.drained()
        assert sorted(h.passes) == ["a", "b"]
        assert h.sleeps == [0.1, 0.1]  # the debounce is the scheduler's parameter
        await h.scheduler.stop()

    run(scenario)


def test_triggers_during_a_pass_cost_exactly_one_more_pass():
    async def scenario() -> None:
        h = Harness(gate=asyncio.Event())
        h.scheduler.trigger("a")
        await h.entered.wait()
        for _ in range(10):
            h.scheduler.trigger("a")  # while the first pass runs
        assert h.scheduler.state("a").running
        h.gate.set()
        await h.scheduler.drained()
        assert h.passes == ["a", "a"]
        assert not h.scheduler.state("a").running
        await h.scheduler.stop()

    run(scenario)


def test_one_pass_at_a_time_per_key_many_keys_at_once():
    async def scenario() -> None:
        h = Harness(gate=asyncio.Event())
        for key in ("a", "b", "c"):
            h.scheduler.trigger(key)
        while len(h.passes) < 3:  # all three are inside their pass at the same time
            await asyncio.sleep(0)
        assert sorted(h.passes) == ["a", "b", "c"]
        h.gate.set()
        await h.scheduler.drained()
        assert len(h.passes) == 3
        await h.scheduler.stop()

    run(scenario)


def test_requeue_arms_one_timer_and_an_earlier_one_wins():
    async def scenario() -> None:
        h = Harness()
        loop = asyncio.get_running_loop()
        h.scheduler.requeue("a", NEVER)
        state = h.scheduler.state("a")
        first = state.timer
        h.scheduler.requeue("a", 2 * NEVER)  # later: ignored
        assert state.timer is first
        h.scheduler.requeue("a", NEVER / 2)  # earlier: replaces it
        assert first is not None and first.cancelled()
        assert state.timer_due == pytest.approx(loop.time() + NEVER / 2, abs=5)
        h.scheduler.requeue("a", 0)  # due now: it fires and runs a pass
        await h.entered.wait()
        await h.scheduler.drained()
        assert h.passes == ["a"] and state.timer is None
        await h.scheduler.stop()

    run(scenario)


def test_a_pass_returning_a_delay_is_requeued():
    async def scenario() -> None:
        h = Harness(results=[Next(after=NEVER)])
        h.scheduler.trigger("a")
        await h.scheduler.drained()
        state = h.scheduler.state("a")
        assert state.timer is not None and not state.timer_is_retry
        assert not h.scheduler.retry_pending("a")
        await h.scheduler.stop()
        assert state.timer is None  # stop cancels timers

    run(scenario)


def test_a_raising_pass_is_retried_after_the_backoff_and_the_hook_runs_once():
    async def scenario() -> None:
        h = Harness(results=[RuntimeError("boom")])
        h.scheduler.trigger("a")
        await h.scheduler.drained()
        assert h.failures_seen == [("a", 1, NEVER, "boom")]
        assert h.scheduler.retry_pending("a")
        state = h.scheduler.state("a")
        assert state.failures == 1
        # While the retry is pending, ordinary triggers start nothing; urgent ones do.
        h.scheduler.trigger("a")
        await h.scheduler.drained()
        assert h.passes == ["a"]
        h.scheduler.trigger("a", urgent=True)
        await h.scheduler.drained()
        assert h.passes == ["a", "a"]
        assert h.failures_at_pass == [0, 1]
        # That pass succeeded: the count is reset and the retry cancelled.
        assert state.failures == 0 and not h.scheduler.retry_pending("a")
        assert len(h.failures_seen) == 1
        await h.scheduler.stop()

    run(scenario)


def test_the_retry_fires_and_the_backoff_grows_until_a_pass_succeeds():
    async def scenario() -> None:
        h = Harness(backoff=Backoff(initial=0.001, factor=3.0, cap=0.005),
                    results=[RuntimeError("1"), RuntimeError("2"), RuntimeError("3"), Next()])
        h.scheduler.trigger("a")
        while len(h.passes) < 4:  # the retries come from the timers alone
            await asyncio.sleep(0.001)
        await h.scheduler.drained()
        assert [(n, d) for _, n, d, _ in h.failures_seen] == [(1, 0.001), (2, 0.003),
                                                             (3, 0.005)]
        assert h.failures_at_pass == [0, 1, 2, 3]
        assert h.scheduler.state("a").failures == 0
        assert not h.scheduler.retry_pending("a")
        await h.scheduler.stop()

    run(scenario)


def test_a_pass_that_handled_its_failure_counts_it_without_the_hook():
    async def scenario() -> None:
        h = Harness(results=[Next(after=NEVER, failed=True), Next(after=NEVER, failed=True),
                             None, Next()])
        for expected in (1, 2, 2, 0):  # None: nothing was done, the count stays
            h.scheduler.trigger("a", urgent=True)
            await h.scheduler.drained()
            assert h.scheduler.state("a").failures == expected
        assert h.failures_seen == [] and not h.scheduler.retry_pending("a")
        await h.scheduler.stop()

    run(scenario)


class BrokenHook(Harness):
    async def on_failure(self, key: str, state: KeyState[Data], exc: Exception,
                         delay: float) -> None:
        raise ValueError("the hook broke")


class ForgettingPass(Harness):
    async def run_pass(self, key: str, state: KeyState[Data]) -> Next | None:
        self.scheduler.forget(key)  # as a pass does that finds its object gone
        return Next(after=0)


def test_a_failing_hook_does_not_stop_the_key():
    async def scenario() -> None:
        h = BrokenHook(results=[RuntimeError("boom")])
        h.scheduler.trigger("a")
        await h.scheduler.drained()
        assert h.scheduler.retry_pending("a")
        h.scheduler.trigger("a", urgent=True)
        await h.scheduler.drained()
        assert h.passes == ["a", "a"]
        await h.scheduler.stop()

    run(scenario)


def test_no_pass_after_forget():
    async def scenario() -> None:
        h = Harness(gate=asyncio.Event())
        # A timer of a forgotten key is cancelled.
        h.scheduler.requeue("t", NEVER)
        timer = h.scheduler.state("t").timer
        h.scheduler.forget("t")
        assert timer is not None and timer.cancelled() and "t" not in h.scheduler
        # A pass asked for again while running is dropped once the key is forgotten.
        h.scheduler.trigger("a")
        await h.entered.wait()
        h.scheduler.trigger("a")
        h.scheduler.forget("a")
        h.gate.set()
        await h.scheduler.drained()
        assert h.passes == ["a"] and "a" not in h.scheduler
        # A pass triggered but still in its debounce does not run either.
        h.scheduler.trigger("b")
        h.scheduler.forget("b")
        await h.scheduler.drained()
        assert h.passes == ["a"]
        await h.scheduler.stop()

    run(scenario)


def test_a_forgetting_pass_arms_no_timer():
    async def scenario() -> None:
        h = ForgettingPass()
        h.scheduler.trigger("a")
        await h.scheduler.drained()
        assert "a" not in h.scheduler
        await h.scheduler.stop()

    run(scenario)


def test_backoff_grows_to_its_cap_with_a_bounded_exponent():
    backoff = Backoff(initial=0.5, factor=3.0, cap=10.0)
    assert [backoff.delay(n) for n in (1, 2, 3, 4)] == [0.5, 1.5, 4.5, 10.0]
    assert backoff.delay(10**9) == 10.0  # no overflow
    assert backoff.delay(0) == 0.5
    assert exponential(1.0, 2.0, float("inf"), 10**9) == 2.0**64
    assert retry_delay(0, 5, 300, 7.0) == 7.0
    assert retry_delay(3, 5, 300, -1.0) == 0.0
    assert [retry_delay(n, 5, 300, None) for n in range(8)] == [5, 10, 20, 40, 80, 160, 300,
                                                                300]
