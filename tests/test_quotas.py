"""Rate budgets kept in a state store: restarts, processes sharing one budget, calendar resets.

Every test runs against a real SQLite file and a real PostgreSQL schema
(``database_url``), on asyncio and trio, under virtual time unless it starts
real processes.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import flowgraph as fg
from flowgraph._policies import wall_time
from flowgraph._stores._quotas import load_quota, update_quota
from flowgraph.testing import VirtualClock

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

STORE_SLACK = 0.05
"""A stored budget is exact to within a store call, during which virtual time flows for real."""


@pytest.fixture(params=["asyncio", "trio"])
def clock(request: pytest.FixtureRequest) -> VirtualClock:
    return VirtualClock(request.param)


@pytest.fixture
def anyio_backend(clock: VirtualClock) -> tuple[str, dict[str, Any]]:
    """Async tests here run on both backends under virtual time."""
    return clock.anyio_backend


def assert_windows_hold(
    grants: Sequence[tuple[float, int]], rates: Sequence[fg.Rate], slack: float
) -> None:
    """No interval shorter than ``per - slack`` holds more than ``count`` units, for every rate."""
    for rate in rates:
        for at, _ in grants:
            spent = sum(c for t, c in grants if at - rate.per + slack < t <= at)
            assert spent <= rate.count, f"{rate} holds {spent} units in the window ending {at}"


def run_on(clock: VirtualClock, fn: Any, *args: Any) -> Any:
    name, options = clock.anyio_backend
    return anyio.run(fn, *args, backend=name, backend_options=options)


def test_a_stored_budget_survives_a_restart(backend: str, database_url: str) -> None:
    """A new limiter (a restarted process) on the same store and name spends the same budget."""
    clock = VirtualClock(backend)
    grants: list[float] = []

    def limiter() -> fg.RateLimiter:
        windows = (fg.Rate(3, per=fg.HOUR), fg.Rate(10, per=fg.DAY, cost=len))
        return fg.RateLimiter(*windows, store=database_url, name="partner-api")

    async def spend(limiter: fg.RateLimiter, batches: list[list[int]]) -> None:
        for batch in batches:
            await limiter.acquire(batch)
            grants.append(anyio.current_time())
            await anyio.sleep(60)

    run_on(clock, spend, limiter(), [[0], [0, 0]])
    run_on(clock, spend, limiter(), [[0] * 3, [0] * 4, [0]])
    since = [at - grants[0] for at in grants]
    expected = [0, 60, 120, fg.HOUR, fg.DAY]  # 3 per hour; 10 rows per day: 1+2+3+4, then 1
    assert since == pytest.approx(expected, abs=2 * STORE_SLACK)


@settings(max_examples=8)
@given(data=st.data())
def test_any_schedule_holds_across_a_restart(
    data: st.DataObject, backend: str, database_url: str
) -> None:
    """For any arrivals and costs split over two runs (two limiters), no window overfills."""
    counts = data.draw(st.lists(st.integers(1, 6), min_size=1, max_size=3), label="counts")
    pers = data.draw(st.lists(st.floats(0.5, 5.0), min_size=len(counts), max_size=len(counts)))
    gaps = data.draw(st.lists(st.floats(0.01, 2.0), min_size=2, max_size=25), label="gaps")
    costs = data.draw(st.lists(st.integers(0, min(counts)), min_size=len(gaps), max_size=len(gaps)))
    restart = data.draw(st.integers(1, len(gaps) - 1), label="restart")
    arrivals = [sum(gaps[: n + 1]) for n in range(len(gaps))]
    name = f"budget-{uuid.uuid4().hex}"
    clock = VirtualClock(backend)
    grants: list[tuple[float, int]] = []

    def rates() -> list[fg.Rate]:
        return [fg.Rate(c, per=p, cost=int) for c, p in zip(counts, pers, strict=True)]

    async def users(calls: range) -> None:
        limiter = fg.RateLimiter(*rates(), store=database_url, name=name)

        async def user(n: int) -> None:
            await anyio.sleep(max(0.0, arrivals[n] - anyio.current_time()))
            await limiter.acquire(costs[n])
            grants.append((anyio.current_time(), costs[n]))

        async with anyio.create_task_group() as tg:
            for n in calls:
                tg.start_soon(user, n)

    run_on(clock, users, range(restart))
    run_on(clock, users, range(restart, len(gaps)))
    assert len(grants) == len(gaps)
    assert_windows_hold(grants, rates(), STORE_SLACK)


WORKER = """
import json, random, sys, time
import anyio
import flowgraph as fg

url, backend, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
limiter = fg.RateLimiter(
    fg.Rate(4, per=0.2), fg.Rate(30, per=fg.HOUR, cost=len), store=url, name="shared"
)

async def main():
    rng = random.Random(seed)
    got = []
    while True:
        batch = [0] * rng.randint(1, 3)
        with anyio.move_on_after(2) as scope:  # the day's window is spent: it never fits
            await limiter.acquire(batch)
        if scope.cancelled_caught:
            break
        got.append((time.time(), len(batch)))
    print(json.dumps(got))

anyio.run(main, backend=backend)
"""


def test_two_processes_never_both_spend_the_last_unit(database_url: str) -> None:
    """Two processes (asyncio and trio) racing for one stored budget never overspend it."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, database_url, backend, str(seed)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed, backend in enumerate(["asyncio", "trio"])
    ]
    outputs = [proc.communicate(timeout=30) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], [err for _, err in outputs]
    grants = [tuple(grant) for out, _ in outputs for grant in json.loads(out)]
    assert all(json.loads(out) for out, _ in outputs), "a process never got any budget"

    async def stored() -> Any:
        async with fg.open_store(database_url) as store:
            return await load_quota(store, "shared")

    state = anyio.run(stored)
    # The day's window keeps every call, stamped when its transaction granted it.
    calls = state["1:3600.0"]
    assert 28 <= sum(cost for _, _, cost in calls) <= 30  # used up, never overspent
    assert len(grants) <= len(calls)
    assert_windows_hold([(stamp, 1) for _, stamp, _ in calls], [fg.Rate(4, per=0.2)], 1e-6)


def next_midnight(at: float, zone: ZoneInfo) -> float:
    local = datetime.fromtimestamp(at, zone)
    return datetime.combine(local.date() + timedelta(days=1), datetime.min.time(), zone).timestamp()


async def test_a_stored_calendar_day_resets_at_local_midnight(database_url: str) -> None:
    """A daily quota in the store resets at local midnight in its time zone."""
    zone = ZoneInfo("America/New_York")
    limiter = fg.RateLimiter(
        fg.Rate(2, per=fg.DAY, calendar="America/New_York"), store=database_url, name="daily"
    )
    await limiter.acquire()
    await anyio.sleep(fg.HOUR)
    await limiter.acquire()
    asked = wall_time()
    await limiter.acquire()
    assert wall_time() == pytest.approx(next_midnight(asked, zone), abs=STORE_SLACK)


async def test_a_stored_limiter_on_nodes_holds_for_all_workers(database_url: str) -> None:
    """Two nodes with four workers each, one stored budget: the windows hold together."""
    limiter = fg.RateLimiter(fg.Rate(5, per=1), store=database_url, name="api")
    graph = fg.Graph("crawl")
    grants: list[tuple[float, int]] = []

    @graph.source
    async def ids() -> AsyncIterator[int]:
        for n in range(20):
            yield n

    @graph.transform(workers=4, rate=limiter)
    async def fetch(n: int) -> int:
        grants.append((anyio.current_time(), 1))
        return n

    @graph.sink(workers=4, rate=limiter)
    async def store(n: int) -> None:
        grants.append((anyio.current_time(), 1))

    graph.chain(ids, fetch, store)
    await graph.run()
    assert len(grants) == 40
    assert_windows_hold(grants, limiter.rates, STORE_SLACK)
    assert anyio.current_time() == pytest.approx(7, abs=0.5)


async def test_an_open_store_is_used_as_it_is(database_url: str) -> None:
    """A limiter given an open StateStore uses it and leaves it open."""
    async with fg.open_store(database_url) as store:
        limiter = fg.RateLimiter(fg.Rate(1, per=10), store=store, name="open")
        await limiter.acquire()
        await limiter.acquire()
        assert anyio.current_time() == pytest.approx(10, abs=STORE_SLACK)
        assert await store.count_dead_letters() == 0  # still open
        assert repr(limiter) == "RateLimiter(Rate(1, per=10.0), store=" + (
            "'SQLiteStore', name='open')"
            if database_url.startswith("sqlite")
            else "'PostgresStore', name='open')"
        )


async def test_invalid_stored_state_is_a_store_error(database_url: str) -> None:
    """A budget row that does not hold windows fails with a StoreError saying how to reset it."""
    async with fg.open_store(database_url) as store:
        await update_quota(store, "broken", lambda state: ({"0:1.0": "oops"}, None))
    limiter = fg.RateLimiter(fg.Rate(1, per=1), store=database_url, name="broken")
    with pytest.raises(
        fg.StoreError,
        match=r"^the stored state of rate budget 'broken' is not valid \(.*\); "
        r"delete its row from flowgraph_quotas to start afresh$",
    ):
        await limiter.acquire()


async def test_a_stored_limiter_cannot_spend_without_waiting(database_url: str) -> None:
    """acquire_nowait needs the store, so a stored limiter refuses it."""
    limiter = fg.RateLimiter(fg.Rate(1, per=1), store=database_url, name="nowait")
    with pytest.raises(
        RuntimeError,
        match=r"^a RateLimiter kept in a store cannot spend without waiting for the store: "
        r"use await acquire\(\)$",
    ):
        limiter.acquire_nowait()


def test_a_version_1_sqlite_store_gets_the_quota_table(tmp_path: Path) -> None:
    """Opening a store written before quotas existed adds their table and keeps the rest."""
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as connection:
        connection.execute(
            "CREATE TABLE flowgraph_dead_letters (id INTEGER PRIMARY KEY AUTOINCREMENT,"
            " graph TEXT NOT NULL, node TEXT NOT NULL, run_id TEXT NOT NULL, item BLOB NOT NULL,"
            " serializer TEXT NOT NULL, error_type TEXT NOT NULL, message TEXT NOT NULL,"
            " traceback TEXT NOT NULL, attempts INTEGER NOT NULL, failed_at REAL NOT NULL)"
        )
        connection.execute(
            "CREATE TABLE flowgraph_checkpoints (graph TEXT NOT NULL, source TEXT NOT NULL,"
            " position TEXT NOT NULL, updated_at REAL NOT NULL, PRIMARY KEY (graph, source))"
        )
        connection.execute("INSERT INTO flowgraph_checkpoints VALUES ('g', 's', '7', 0)")
        connection.execute("PRAGMA user_version = 1")
    connection.close()

    async def use() -> Any:
        limiter = fg.RateLimiter(fg.Rate(1, per=1), store=f"sqlite:///{path}", name="new")
        await limiter.acquire()
        async with fg.open_store(f"sqlite:///{path}") as store:
            return await store.load_checkpoints("g"), await load_quota(store, "new")

    checkpoints, state = anyio.run(use)
    assert checkpoints == {"s": 7}
    assert list(state) == ["0:1.0"]
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA user_version").fetchone() == (2,)
    connection.close()


def test_time_passes_in_real_time_too(tmp_path: Path) -> None:
    """Under a real clock, a stored budget waits in real time (a short window, for speed)."""
    limiter = fg.RateLimiter(
        fg.Rate(2, per=0.2), store=f"sqlite:///{tmp_path / 'real.db'}", name="real"
    )
    stamps: list[float] = []

    async def spend() -> None:
        for _ in range(5):
            await limiter.acquire()
            stamps.append(time.monotonic())

    anyio.run(spend)
    assert stamps[-1] - stamps[0] >= 0.4 - STORE_SLACK
    assert_windows_hold([(t, 1) for t in stamps], limiter.rates, STORE_SLACK)
