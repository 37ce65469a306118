from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

import flowgraph as fg
from flowgraph._core._exceptions import GraphError
from flowgraph._core._policy import Policy
from flowgraph._policies import Limit, Rate, RateLimiter, wall_time
from flowgraph.testing._clock import VirtualClock

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Sequence

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


async def noop(item: object) -> None:
    await anyio.lowlevel.checkpoint()


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


async def test_one_rate_object_is_one_budget_wherever_given() -> None:
    """The same Rate on two nodes is one budget, shared by both (as a Limit is)."""
    rate = Rate(3, per=1)
    times: dict[str, list[float]] = {"a": [], "b": []}

    def recorder(name: str) -> Call:
        async def record(item: object) -> None:
            times[name].append(anyio.current_time())

        return rate.wrap(record, StubNode(name))

    calls = {name: recorder(name) for name in times}
    for call in calls.values():
        for item in range(3):
            await call(item)
    assert times == {"a": [0, 0, 0], "b": [1, 1, 1]}


async def test_two_rate_objects_are_two_budgets() -> None:
    """Two Rate objects are two budgets, even when they are equal in every field."""
    first, second = Rate(2, per=1), Rate(2, per=1)
    assert first != second
    for rate in (first, second):
        call = rate.wrap(noop, StubNode())
        for item in range(2):
            await call(item)
    assert anyio.current_time() == 0


async def test_a_rate_keeps_its_budget_across_runs(clock: VirtualClock) -> None:
    """A Rate given to a node spends one budget in every run of the graph, not one per run."""
    graph = fg.Graph("twice")

    @graph.source
    async def ids() -> AsyncIterator[int]:
        for n in range(3):
            yield n

    @graph.sink(rate=Rate(3, per=10))
    async def call(item: int) -> None:
        pass

    graph.chain(ids, call)
    await graph.run()
    await graph.run()
    assert anyio.current_time() == pytest.approx(10)


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


def test_rate_is_frozen_and_stores_seconds() -> None:
    """Rates cannot change once made and keep durations as seconds; equality is identity."""
    rate = Rate(10, per=timedelta(minutes=1))
    assert rate.per == 60.0
    assert Rate(1, per=fg.DAY).per == 86400.0
    assert (fg.SECOND, fg.MINUTE, fg.HOUR, fg.DAY, fg.WEEK) == (1, 60, 3600, 86400, 604800)
    with pytest.raises(dataclasses.FrozenInstanceError):
        rate.count = 5  # type: ignore[misc]
    assert rate == rate
    assert rate != Rate(10, per=60)


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
        (Rate(1000, per=fg.DAY, cost=len), "Rate(1000, per=86400.0, cost=len)"),
        (Rate(60, per=fg.MINUTE, cost=3), "Rate(60, per=60.0, cost=3)"),
        (
            Rate(10, per=fg.DAY, calendar="America/New_York"),
            "Rate(10, per=86400.0, calendar='America/New_York')",
        ),
        (
            RateLimiter(Rate(10, per=fg.DAY), store="sqlite:///state.db", name="partner-api"),
            "RateLimiter(Rate(10, per=86400.0), store='sqlite:///state.db', name='partner-api')",
        ),
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
        (
            lambda: Rate(10, cost=0),
            GraphError,
            r"^cost must be an int >= 1 or a function of the item \(got 0\)$",
        ),
        (
            lambda: Rate(10, cost=11),
            GraphError,
            r"^cost=11 can never fit a window of count=10: no call could go$",
        ),
        (
            lambda: Rate(10, per=fg.DAY, calendar="Mars/Olympus_Mons"),
            GraphError,
            r"^calendar='Mars/Olympus_Mons' is not a known time zone$",
        ),
        (
            lambda: Rate(10, per=7 * fg.HOUR, calendar="UTC"),
            GraphError,
            r"^calendar windows must divide a day or be a week \(per=25200.0\); "
            r"use fg.SECOND, fg.MINUTE, fg.HOUR, fg.DAY or fg.WEEK$",
        ),
        (
            lambda: Rate(10, calendar=5),  # type: ignore[arg-type]
            GraphError,
            r"^calendar must be a time zone name such as 'UTC' or a tzinfo \(got 5\)$",
        ),
        (
            lambda: RateLimiter(Rate(1), store="sqlite:///state.db"),
            GraphError,
            r"^a RateLimiter kept in a store needs name=, the key of its budget there "
            r"\(e.g. name='partner-api'\)$",
        ),
        (
            lambda: RateLimiter(Rate(1), name=""),
            GraphError,
            r"^name must be a non-empty string \(got ''\)$",
        ),
        (
            lambda: RateLimiter(Rate(1), store=5, name="x"),  # type: ignore[arg-type]
            GraphError,
            r"^store must be a URL, a path or a StateStore \(got 5\)$",
        ),
        (lambda: Limit(True), GraphError, r"^total must be an int >= 1 \(got True\)$"),
    ],
)
def test_validation(make: Callable[[], object], error: type[Exception], message: str) -> None:
    """Bad declarations fail at once with a message saying what is allowed."""
    with pytest.raises(error, match=message):
        make()


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_history_stays_in_the_virtual_clock_across_runs(backend: str) -> None:
    """Regression test for #16: two runs under one virtual clock share a limiter's history.

    Real time passing between the runs must not age it: 6 calls within 0.95
    virtual seconds once went through a limit of 5 per second.
    """
    clock = VirtualClock(backend)
    name, options = clock.anyio_backend
    limiter = RateLimiter(Rate(5, per=1))
    grants: list[float] = []

    async def take(count: int, after: float) -> None:
        await anyio.sleep(after)
        for _ in range(count):
            await limiter.acquire()
            grants.append(anyio.current_time())

    anyio.run(take, 3, 0.0, backend=name, backend_options=options)
    time.sleep(0.02)  # real time between the runs, which a real clock would have seen pass
    anyio.run(take, 3, 0.5, backend=name, backend_options=options)
    assert grants == [0, 0, 0, 0.5, 0.5, 1.0]


def earliest_grant(
    n: int, arrival: float, costs: Sequence[int], grants: Sequence[float], rates: Sequence[Rate]
) -> float:
    """The oracle: the first time >= arrival and >= the previous grant where call *n* fits."""
    start = max([arrival, *grants[n - 1 : n]])
    candidates = sorted({start, *(g + r.per for g in grants[:n] for r in rates)})

    def fits(at: float) -> bool:
        return all(
            sum(c for g, c in zip(grants[:n], costs, strict=False) if g > at - r.per + EPSILON)
            + costs[n]
            <= r.count
            for r in rates
        )

    return next(at for at in candidates if at >= start and fits(at))


@st.composite
def weighted_schedules(
    draw: st.DrawFn,
) -> tuple[list[int], list[float], list[float], list[int]]:
    """Windows (counts and lengths), gaps between arrivals, and a cost for each arrival."""
    counts = draw(st.lists(st.integers(1, 8), min_size=1, max_size=3), label="counts")
    pers = draw(st.lists(st.floats(0.05, 5.0), min_size=len(counts), max_size=len(counts)))
    gaps = draw(schedules, label="gaps")
    costs = draw(
        st.lists(st.integers(0, min(counts)), min_size=len(gaps), max_size=len(gaps)),
        label="costs",
    )
    return counts, pers, gaps, costs


# Drawn before the test's event loop starts: a draw inside an async test that runs out of
# data raises in the loop's task, which asyncio then reports at garbage collection.
@given(schedule=weighted_schedules())
async def test_costs_never_overfill_a_window_and_nobody_waits_needlessly(
    schedule: tuple[list[int], list[float], list[float], list[int]],
) -> None:
    """For any arrivals and costs: every window holds its count of units, FIFO, no idle budget."""
    counts, pers, gaps, costs = schedule
    rates = [Rate(c, per=p, cost=int) for c, p in zip(counts, pers, strict=True)]
    limiter = RateLimiter(*rates)
    start = anyio.current_time()
    arrivals = [start + sum(gaps[: n + 1]) for n in range(len(gaps))]
    order: list[int] = []
    grants: list[float] = []

    async def user(n: int) -> None:
        await anyio.sleep(arrivals[n] - anyio.current_time())
        await limiter.acquire(costs[n])
        order.append(n)
        grants.append(anyio.current_time())

    async with anyio.create_task_group() as tg:
        for n in range(len(arrivals)):
            tg.start_soon(user, n)
    assert order == list(range(len(arrivals)))
    for rate in rates:
        for at in grants:
            spent = sum(
                c for g, c in zip(grants, costs, strict=True) if at - rate.per < g - EPSILON <= at
            )
            assert spent <= rate.count, f"{rate} holds {spent} units before {at}"
    for n, granted in enumerate(grants):
        assert granted == pytest.approx(earliest_grant(n, arrivals[n], costs, grants, rates))


async def test_a_call_that_could_never_fit_fails_at_once() -> None:
    """A cost above a window's count is a ValueError before any waiting, taking nothing."""
    limiter = RateLimiter(Rate(10, per=fg.DAY), Rate(100, per=fg.DAY, cost=len))
    with pytest.raises(
        ValueError,
        match=r"^a call costing 101 can never fit Rate\(100, per=86400.0, cost=len\): "
        r"a window holds 100; item \[0, 0, 0, 0, 0, \.\.\.\]$",
    ):
        await limiter.acquire([0] * 101)
    for _ in range(10):
        await limiter.acquire([0] * 10)
    assert anyio.current_time() == 0


async def test_a_cost_function_needs_the_item_and_an_int() -> None:
    """A cost computed from the item needs one, and must be an int >= 0."""
    limiter = RateLimiter(Rate(10, per=1, cost=len))
    with pytest.raises(
        TypeError,
        match=r"^Rate\(10, per=1.0, cost=len\) computes the cost of each item: call acquire\(item\)$",
    ):
        await limiter.acquire()
    with pytest.raises(TypeError, match=r"^Rate\(10, per=1.0, cost=len\) computes"):
        async with limiter:
            pass
    odd = RateLimiter(Rate(10, per=1, cost=lambda item: item))
    with pytest.raises(
        TypeError,
        match=r"^Rate\(10, per=1.0, cost=test_a_cost_function_needs_the_item_and_an_int.<locals>.<lambda>\): "
        r"the cost of 2.5 must be an int >= 0 \(got 2.5\)$",
    ):
        await odd.acquire(2.5)


async def test_cost_weighted_node_spends_per_item() -> None:
    """On a node, each call spends what its item costs: rows per day, say."""
    rows = Rate(10, per=fg.DAY, cost=len)
    graph = fg.Graph("rows")
    sent: list[tuple[float, int]] = []

    @graph.source
    async def batches() -> AsyncIterator[list[int]]:
        for size in (4, 4, 4, 1):
            yield [0] * size

    @graph.sink(rate=rows)
    async def upload(batch: list[int]) -> None:
        sent.append((anyio.current_time(), len(batch)))

    graph.chain(batches, upload)
    await graph.run()
    assert sent == [(0, 4), (0, 4), (fg.DAY, 4), (fg.DAY, 1)]


def next_midnight(at: float, zone: ZoneInfo) -> float:
    """The first local midnight in *zone* after the epoch time *at*, computed independently."""
    local = datetime.fromtimestamp(at, zone)
    return datetime.combine(local.date() + timedelta(days=1), datetime.min.time(), zone).timestamp()


async def test_calendar_day_resets_at_local_midnight() -> None:
    """A per-day calendar quota resets at the next local midnight, not 24 h after the first call."""
    zone = ZoneInfo("Asia/Kolkata")
    limiter = RateLimiter(Rate(2, per=fg.DAY, calendar="Asia/Kolkata"), Rate(100, per=fg.HOUR))
    await limiter.acquire()
    await anyio.sleep(3 * fg.HOUR)
    await limiter.acquire()
    asked = wall_time()
    await limiter.acquire()
    assert wall_time() == pytest.approx(next_midnight(asked, zone), abs=1e-3)


def dst_days(zone: ZoneInfo, after: float, count: int) -> list[float]:
    """Local midnights starting the next *count* days whose length is not 24 hours."""
    found: list[float] = []
    midnight = next_midnight(after, zone)
    while len(found) < count:
        following = next_midnight(midnight + 1, zone)
        if following - midnight != fg.DAY:
            found.append(midnight)
        midnight = following
    return found


@pytest.mark.parametrize("which", [0, 1], ids=["next-change", "the-one-after"])
async def test_calendar_days_follow_daylight_saving(which: int) -> None:
    """Across a DST change in New York, the quota resets at local midnights 23 or 25 hours apart."""
    zone = ZoneInfo("America/New_York")
    day = dst_days(zone, wall_time(), 2)[which]
    length = next_midnight(day + 1, zone) - day
    assert length in (23 * fg.HOUR, 25 * fg.HOUR)
    limiter = RateLimiter(Rate(2, per=fg.DAY, calendar=zone))
    await anyio.sleep(day - fg.HOUR - wall_time())  # 23:00 on the eve of the change
    await limiter.acquire()
    await limiter.acquire()
    await limiter.acquire()  # the eve's budget is spent: this one waits for midnight
    assert wall_time() == pytest.approx(day, abs=1e-3)
    await limiter.acquire()
    await limiter.acquire()  # the short or long day's budget is spent
    assert wall_time() == pytest.approx(day + length, abs=1e-3)


async def test_calendar_week_starts_on_monday() -> None:
    """A weekly calendar quota resets on Monday at local midnight."""
    limiter = RateLimiter(Rate(1, per=fg.WEEK, calendar="UTC"))
    await limiter.acquire()
    await limiter.acquire()
    reset = datetime.fromtimestamp(wall_time(), UTC)
    assert (reset.weekday(), reset.time()) == (0, datetime.min.time())
