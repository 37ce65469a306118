from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowgraph._core._exceptions import GraphError
from flowgraph._core._policy import Policy
from flowgraph._policies import Limit, Rate, RateLimiter
from flowgraph.testing._clock import VirtualClock

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from flowgraph._core._policy import Call

EPSILON = 1e-6
SHARED_LIMIT = Limit(2)
"""Declared at import, outside any event loop, and used by tests on both backends."""


@pytest.fixture(params=["asyncio", "trio"])
def clock(request: pytest.FixtureRequest) -> VirtualClock:
    """A fresh virtual clock per test, on each backend."""
    return VirtualClock(request.param)


@pytest.fixture
def anyio_backend(clock: VirtualClock) -> tuple[str, dict[str, Any]]:
    """Every async test here runs on both backends under virtual time."""
    return clock.anyio_backend


@dataclass
class Counters:
    retries: int = 0


@dataclass
class StubNode:
    name: str = "fetch"
    counters: Counters = field(default_factory=Counters)


def assert_windows_hold(times: Sequence[float], *rates: Rate) -> None:
    """No interval of length ``per`` holds more than ``count`` of *times*, for every rate."""
    times = sorted(times)
    for rate in rates:
        for first, last in zip(times, times[rate.count :], strict=False):
            assert last - first >= rate.per - EPSILON, f"{rate} exceeded at {first}"


async def acquire_times(limiter: RateLimiter, total: int, tasks: int = 4) -> list[float]:
    """Acquire *total* times from *tasks* concurrent tasks; return the grant times."""
    times: list[float] = []

    async def worker(count: int) -> None:
        for _ in range(count):
            await limiter.acquire()
            times.append(anyio.current_time())

    async with anyio.create_task_group() as tg:
        for n in range(tasks):
            tg.start_soon(worker, total // tasks + (n < total % tasks))
    return times


async def test_ten_per_second_over_a_thousand_takes_a_hundred_seconds() -> None:
    """1,000 acquisitions at 10/s take 100 s (+-1) and never exceed any 1-s window."""
    rate = Rate(10, per=1.0)
    start = anyio.current_time()
    times = await acquire_times(RateLimiter(rate), 1000, tasks=8)
    assert len(times) == 1000
    assert anyio.current_time() - start == pytest.approx(100, abs=1)
    assert_windows_hold(times, rate)


async def test_several_windows_hold_at_once() -> None:
    """Every window of a multi-window limiter holds and none of them wastes budget."""
    rates = (Rate(10, per=1), Rate(30, per=10), Rate(100, per=timedelta(minutes=1)))
    times = await acquire_times(RateLimiter(*rates), 300)
    assert_windows_hold(times, *rates)
    # Per minute: 30 in 3 s, 30 more after 10 s, 30 after 20 s, 10 after 30 s; then wait.
    assert max(times) == pytest.approx(150)


async def test_limiter_shared_between_two_users() -> None:
    """Two nodes sharing one limiter never exceed it together."""
    rate = Rate(5, per=2)
    limiter = RateLimiter(rate, Rate(12, per=10))
    times: list[float] = []

    async def record(item: object) -> None:
        times.append(anyio.current_time())

    first = limiter.wrap(record, StubNode("fetch"))
    second = limiter.wrap(record, StubNode("fetch_details"))

    async def drive(call: Call, items: int) -> None:
        for item in range(items):
            await call(item)

    async with anyio.create_task_group() as tg:
        tg.start_soon(drive, first, 30)
        tg.start_soon(drive, second, 30)
    assert len(times) == 60
    assert_windows_hold(times, *limiter.rates)


async def test_rate_given_to_a_node_is_private() -> None:
    """A bare Rate becomes a budget of its own for each node that uses it."""
    rate = Rate(3, per=1)
    times: dict[str, list[float]] = {"a": [], "b": []}

    def recorder(name: str) -> Call:
        async def record(item: object) -> None:
            times[name].append(anyio.current_time())

        return rate.wrap(record, StubNode(name))

    for name in times:
        call = recorder(name)
        for item in range(3):
            await call(item)
    assert times == {"a": [0, 0, 0], "b": [0, 0, 0]}


async def test_waiters_are_served_in_arrival_order() -> None:
    """FIFO: an earlier waiter is never overtaken, even by a caller finding room."""
    limiter = RateLimiter(Rate(2, per=1))
    order: list[str] = []

    async def user(name: str, arrive: float) -> None:
        await anyio.sleep(arrive)
        await limiter.acquire()
        order.append(name)

    async with anyio.create_task_group() as tg:
        for n, name in enumerate("abcdefg"):
            tg.start_soon(user, name, n * 0.1)
        tg.start_soon(user, "late", 1.0)
    assert order == [*"abcdefg", "late"]


async def test_cancelled_waiter_consumes_nothing() -> None:
    """A waiter cancelled while queued takes no budget and does not delay the next one."""
    limiter = RateLimiter(Rate(1, per=10))
    granted: dict[str, float] = {}

    async def user(name: str, scope: anyio.CancelScope | None = None) -> None:
        with scope or anyio.CancelScope():
            await limiter.acquire()
            granted[name] = anyio.current_time()

    head, middle = anyio.CancelScope(), anyio.CancelScope()
    async with anyio.create_task_group() as tg:
        tg.start_soon(user, "first")
        await anyio.sleep(1)
        tg.start_soon(user, "head", head)
        await anyio.sleep(1)
        tg.start_soon(user, "middle", middle)
        await anyio.sleep(1)
        tg.start_soon(user, "last")
        await anyio.sleep(1)
        middle.cancel()
        await anyio.sleep(1)
        head.cancel()
    assert granted == {"first": 0, "last": 10}
    await limiter.acquire()
    assert anyio.current_time() == pytest.approx(20)


async def test_cancel_while_sleeping_as_head_hands_over() -> None:
    """Cancelling the head waiter mid-sleep lets the next waiter take its place at once."""
    limiter = RateLimiter(Rate(1, per=5))
    await limiter.acquire()
    with anyio.move_on_after(1):
        await limiter.acquire()
    start = anyio.current_time()
    await limiter.acquire()
    assert anyio.current_time() - start == pytest.approx(4)


async def test_acquire_is_a_checkpoint_and_consumes_nothing_if_cancelled() -> None:
    """acquire() in a cancelled scope raises without taking budget."""
    limiter = RateLimiter(Rate(1, per=60))
    with anyio.CancelScope() as scope:
        scope.cancel()
        await limiter.acquire()
        pytest.fail("acquire() did not checkpoint")
    limiter.acquire_nowait()


async def test_acquire_nowait() -> None:
    """acquire_nowait takes a free slot or raises WouldBlock."""
    limiter = RateLimiter(Rate(2, per=1))
    limiter.acquire_nowait()
    async with limiter:
        pass
    with pytest.raises(anyio.WouldBlock):
        limiter.acquire_nowait()
    await anyio.sleep(1)
    limiter.acquire_nowait()


async def test_acquire_nowait_does_not_overtake_waiters(clock: VirtualClock) -> None:
    """acquire_nowait refuses while someone is queued, even if a slot is free."""
    limiter = RateLimiter(Rate(1, per=1))
    limiter.acquire_nowait()
    granted: list[float] = []

    async def waiter(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        task_status.started()
        await limiter.acquire()
        granted.append(anyio.current_time())

    async with anyio.create_task_group() as tg:
        await tg.start(waiter)
        clock.jump(1)
        with pytest.raises(anyio.WouldBlock):
            limiter.acquire_nowait()
    assert granted == [1]


schedules = st.lists(st.floats(0.001, 3.0), min_size=1, max_size=60)
windows = st.lists(
    st.builds(Rate, st.integers(1, 6), per=st.floats(0.05, 5.0)), min_size=1, max_size=3
)


@given(gaps=schedules, rates=windows)
async def test_any_schedule_is_fifo_exact_and_never_bursts(
    gaps: list[float], rates: list[Rate]
) -> None:
    """For any arrival schedule: windows hold, order is FIFO, and nobody waits needlessly."""
    limiter = RateLimiter(*rates)
    start = anyio.current_time()
    arrivals = [start + sum(gaps[: n + 1]) for n in range(len(gaps))]
    grants: list[tuple[int, float]] = []

    async def user(n: int) -> None:
        await anyio.sleep(arrivals[n] - anyio.current_time())
        await limiter.acquire()
        grants.append((n, anyio.current_time()))

    async with anyio.create_task_group() as tg:
        for n in range(len(arrivals)):
            tg.start_soon(user, n)
    assert [n for n, _ in grants] == list(range(len(arrivals)))
    times = [t for _, t in grants]
    assert_windows_hold(times, *rates)
    for n, granted in enumerate(times):
        earliest = max(
            [arrivals[n], times[n - 1] if n else start]
            + [times[n - r.count] + r.per for r in rates if n >= r.count]
        )
        assert granted == pytest.approx(earliest, abs=EPSILON)


@pytest.mark.parametrize("backends", [("trio", "asyncio", "trio")])
def test_budget_carries_over_between_event_loops(backends: tuple[str, ...]) -> None:
    """One limiter used by successive runs on different loops keeps one budget."""
    limiter = RateLimiter(Rate(1, per=0.2))
    waits: list[float] = []

    async def take() -> None:
        start = time.perf_counter()
        await limiter.acquire()
        waits.append(time.perf_counter() - start)

    for backend in backends:
        anyio.run(take, backend=backend)
    assert waits[0] < 0.05
    assert all(0.1 < wait < 0.5 for wait in waits[1:])


async def test_limit_caps_concurrency_across_nodes() -> None:
    """Two nodes sharing one Limit never have more calls in flight than it allows."""
    limit = Limit(3)
    in_flight = peak = 0

    async def work(item: object) -> None:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await anyio.sleep(1)
        in_flight -= 1

    calls = [limit.wrap(work, StubNode("a")), limit.wrap(work, StubNode("b"))]

    async def run(call: Call, item: int) -> None:
        await call(item)

    async with anyio.create_task_group() as tg:
        for n in range(10):
            tg.start_soon(run, calls[n % 2], n)
    assert peak == 3
    assert anyio.current_time() == pytest.approx(4)


async def test_limit_declared_at_import_works_on_every_backend() -> None:
    """A module-level Limit creates its limiter per event loop, on first use."""
    in_flight = peak = 0

    async def work() -> None:
        nonlocal in_flight, peak
        async with SHARED_LIMIT:
            in_flight += 1
            peak = max(peak, in_flight)
            await anyio.sleep(1)
            in_flight -= 1

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(work)
    assert peak == 2


def test_policies_satisfy_the_protocol() -> None:
    """Rate, RateLimiter and Limit are engine policies."""
    for policy in (Rate(1), RateLimiter(Rate(1)), Limit(1)):
        assert isinstance(policy, Policy)


def test_rate_is_a_frozen_value() -> None:
    """Rates compare by value and store durations as seconds."""
    assert Rate(10, per=timedelta(minutes=1)) == Rate(10, per=60)
    assert Rate(10, per=60).per == 60.0
    assert hash(Rate(1)) == hash(Rate(1, per=1.0))


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (Rate(10, per=1.0), "Rate(10, per=1.0)"),
        (Rate(1000, per=timedelta(hours=1)), "Rate(1000, per=3600.0)"),
        (
            RateLimiter(Rate(10, per=1), Rate(10000, per=86400)),
            "RateLimiter(Rate(10, per=1.0), Rate(10000, per=86400.0))",
        ),
        (Limit(5), "Limit(5)"),
    ],
)
def test_repr(obj: object, expected: str) -> None:
    """Reprs are the calls that build the objects."""
    assert repr(obj) == expected


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: Rate(0), GraphError, r"^count must be an int >= 1 \(got 0\)$"),
        (lambda: Rate(1.5), GraphError, r"^count must be an int >= 1 \(got 1.5\)$"),  # type: ignore[arg-type]
        (lambda: Rate(10, per=0), GraphError, r"^per must be > 0 \(got 0\)$"),
        (lambda: Rate(10, per=-1.5), GraphError, r"^per must be > 0 \(got -1.5\)$"),
        (
            lambda: RateLimiter(),
            GraphError,
            r"^RateLimiter needs at least one Rate, e.g. RateLimiter\(Rate\(10, per=1\)\)$",
        ),
        (
            lambda: RateLimiter(10),  # type: ignore[arg-type]
            TypeError,
            r"^RateLimiter takes Rate objects \(got 10\)$",
        ),
        (lambda: Limit(0), GraphError, r"^total must be an int >= 1 \(got 0\)$"),
        (lambda: Limit(True), GraphError, r"^total must be an int >= 1 \(got True\)$"),
    ],
)
def test_validation(make: Callable[[], object], error: type[Exception], message: str) -> None:
    """Bad declarations fail at once with a message saying what is allowed."""
    with pytest.raises(error, match=message):
        make()
