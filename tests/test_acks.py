"""Checkpoint commits: the replay bound under slow commits, commits that follow activity only,
leases taken before a run starts, and the line saying a source starts without a checkpoint."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import anyio
import pytest

import flowgraph as fg
from flowgraph._core._acks import CheckpointStore, Leases

virtual_time = pytest.mark.flowgraph_virtual_time

MAX_IN_FLIGHT = 50
EVERY = 20


class MemoryCheckpoints:
    """An in-memory checkpoint store recording each commit and when it was made."""

    def __init__(self, every: int = EVERY, interval: float = 60.0) -> None:
        self.every = every
        self.interval = interval
        self.positions: dict[str, Any] = {}
        self.commits: list[tuple[float, dict[str, Any]]] = []

    async def load(self, graph: str) -> Mapping[str, Any]:
        return dict(self.positions)

    async def commit(self, graph: str, positions: Mapping[str, Any]) -> None:
        self.positions.update(positions)
        self.commits.append((anyio.current_time(), dict(positions)))


class SlowCheckpoints:
    """A real ``fg.Checkpoints`` whose every commit first waits *delay* seconds, or for a gate."""

    def __init__(self, inner: fg.Checkpoints, *, delay: float = 0.0) -> None:
        self.inner = inner
        self.every = inner.every
        self.interval = inner.interval
        self.delay = delay
        self.gate: anyio.Event | None = None
        self.committed = -1  # the position the store holds: -1 before the first commit
        self.commits = 0

    async def __aenter__(self) -> SlowCheckpoints:
        await self.inner.__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.inner.__aexit__(None, None, None)

    async def load(self, graph: str) -> Mapping[str, Any]:
        return await self.inner.load(graph)

    async def commit(self, graph: str, positions: Mapping[str, Any]) -> None:
        await anyio.sleep(self.delay)
        if self.gate is not None:
            await self.gate.wait()
        await self.inner.commit(graph, positions)
        self.committed = positions["src"]
        self.commits += 1

    def open_lease(self, graph: str) -> Any:
        return self.inner.open_lease(graph)


def offsets(n: int) -> Any:
    async def src(after: int | None) -> AsyncIterator[fg.Positioned]:
        for i in range(0 if after is None else after + 1, n):
            yield fg.Positioned(i, i)

    return src


def test_the_wrappers_are_checkpoint_stores_with_leases() -> None:
    """The test stores implement the protocols the run checks for."""
    assert isinstance(MemoryCheckpoints(), CheckpointStore)
    assert not isinstance(MemoryCheckpoints(), Leases)
    assert isinstance(SlowCheckpoints(fg.Checkpoints("x.db")), CheckpointStore | Leases)


# -- the replay bound: max_in_flight + every ----------------------------------------------


@virtual_time
async def test_slow_commits_never_leave_more_than_the_bound_uncommitted(database_url: str) -> None:
    """With commits taking 2 s, the source pauses: emitted - committed never passes M + E.

    Regression test for #13: a store whose commit took 3 s reached 57,199
    uncommitted items with max_in_flight=50, every=10.
    """
    n = 3000
    store = SlowCheckpoints(fg.Checkpoints(database_url, every=EVERY, interval=0.5), delay=2.0)
    ahead: list[int] = []

    async def sink(x: int) -> None:
        ahead.append(x - store.committed)  # x was emitted, so this is a lower bound of the lag
        await anyio.sleep(0.001)

    g = fg.Graph("slow")
    g.chain(
        g.source(offsets(n), name="src", checkpoint=True, max_in_flight=MAX_IN_FLIGHT),
        g.sink(sink, workers=8),
    )
    await g.run(checkpoints=store)
    assert len(ahead) == n
    assert max(ahead) == MAX_IN_FLIGHT + EVERY  # reached, never passed
    assert store.committed == n - 1


@virtual_time
async def test_a_stuck_commit_pauses_the_source_at_exactly_the_bound(database_url: str) -> None:
    """While a commit cannot finish, the source emits exactly M + E items, then waits."""
    emitted: list[int] = []
    store = SlowCheckpoints(fg.Checkpoints(database_url, every=EVERY))
    store.gate = anyio.Event()

    async def numbers(after: int | None) -> AsyncIterator[fg.Positioned]:
        for i in range(1000):
            emitted.append(i)
            yield fg.Positioned(i, i)

    done: list[int] = []

    async def sink(x: int) -> None:
        done.append(x)

    g = fg.Graph("stuck")
    g.chain(
        g.source(numbers, name="src", checkpoint=True, max_in_flight=MAX_IN_FLIGHT),
        g.sink(sink, workers=4),
    )
    async with fg.open_run(g, checkpoints=store) as run:
        await anyio.sleep(3600)
        assert len(done) == MAX_IN_FLIGHT + EVERY
        assert len(emitted) == MAX_IN_FLIGHT + EVERY + 1  # the next one waits for its ticket
        assert store.committed == -1
        store.gate.set()
        await run.wait_finished()
    assert sorted(done) == list(range(1000))
    assert store.committed == 999


# -- commits follow activity: quiet when idle ---------------------------------------------


@virtual_time
@pytest.mark.parametrize(("items", "commits"), [(0, []), (10, [(1.0, {"src": 9})])])
async def test_an_idle_week_wakes_nothing_and_takes_no_real_time(
    items: int, commits: list[tuple[float, dict[str, int]]]
) -> None:
    """A polling daemon idle for a virtual week commits its first items (if any), then sleeps.

    Regression test for #16: commits woke every interval, so a simulated day took
    29 minutes of real time.
    """
    store = MemoryCheckpoints(every=100, interval=1.0)

    async def fetch(after: int | None) -> list[fg.Positioned]:
        start = 0 if after is None else after + 1
        return [fg.Positioned(i, i) for i in range(start, items)]

    async def sink(x: int) -> None:
        pass

    g = fg.Graph("idle")
    g.chain(g.source(fg.poll(fetch, every=3600), name="src", checkpoint=True), g.sink(sink))
    started = time.perf_counter()
    async with fg.open_run(g, checkpoints=store) as run:
        await anyio.sleep(7 * 86400)
        run.stop()
    assert time.perf_counter() - started < 2.0
    assert store.commits == commits


@virtual_time
async def test_interval_counts_from_the_first_uncommitted_acknowledgement() -> None:
    """interval=5: an item finished at t=102 is committed at t=107, not on a clock of 5 s ticks."""
    store = MemoryCheckpoints(every=100, interval=5.0)

    async def numbers(after: int | None) -> AsyncIterator[fg.Positioned]:
        yield fg.Positioned(0, 0)
        await anyio.sleep(102)
        yield fg.Positioned(1, 1)
        await anyio.sleep(50)

    async def sink(x: int) -> None:
        pass

    g = fg.Graph("g")
    g.chain(g.source(numbers, name="src", checkpoint=True), g.sink(sink))
    await g.run(checkpoints=store)
    assert store.commits == [(5.0, {"src": 0}), (107.0, {"src": 1})]


@virtual_time
async def test_every_th_acknowledgement_commits_at_once() -> None:
    """every=10: the tenth acknowledgement commits without waiting for the interval."""
    store = MemoryCheckpoints(every=10, interval=1000.0)

    async def numbers(after: int | None) -> AsyncIterator[fg.Positioned]:
        for i in range(25):
            await anyio.sleep(1)
            yield fg.Positioned(i, i)

    async def sink(x: int) -> None:
        pass

    g = fg.Graph("g")
    g.chain(g.source(numbers, name="src", checkpoint=True), g.sink(sink))
    await g.run(checkpoints=store)
    assert store.commits == [(10.0, {"src": 9}), (20.0, {"src": 19}), (25.0, {"src": 24})]


async def test_a_commit_cancelled_by_a_stop_is_made_by_the_final_commit() -> None:
    """Positions of a commit cut off by stop(grace=0) are not forgotten: the last commit has them."""
    store = MemoryCheckpoints(every=5)
    hung = anyio.Event()
    real_commit = store.commit

    async def commit(graph: str, positions: Mapping[str, Any]) -> None:
        if not hung.is_set():
            hung.set()
            await anyio.sleep_forever()
        await real_commit(graph, positions)

    store.commit = commit  # type: ignore[method-assign]

    async def sink(x: int) -> None:
        if x >= 5:
            await anyio.sleep_forever()  # nothing is acknowledged after the hung commit began

    g = fg.Graph("g")
    g.chain(g.source(offsets(100), name="src", checkpoint=True), g.sink(sink))
    with anyio.fail_after(10):
        async with fg.open_run(g, checkpoints=store) as run:
            await hung.wait()
            run.stop(grace=0)
    assert store.positions == {"src": 4}


# -- leases and the first run ---------------------------------------------------------------


async def test_second_run_of_a_graph_on_one_store_fails_before_it_starts(tmp_path: Any) -> None:
    """Two concurrent runs of one graph against one store: the second fails, having run nothing.

    Regression test for #14: two runs each committed its own watermark over the other's.
    """
    url = f"sqlite:///{tmp_path / 'state.db'}"
    calls: list[int | None] = []
    release, started = anyio.Event(), anyio.Event()

    async def numbers(after: int | None) -> AsyncIterator[fg.Positioned]:
        calls.append(after)
        started.set()
        yield fg.Positioned(0, 0)
        await release.wait()

    async def sink(x: int) -> None:
        pass

    g = fg.Graph("daemon")
    g.chain(g.source(numbers, name="src", checkpoint=True), g.sink(sink))
    async with fg.open_run(g, checkpoints=fg.Checkpoints(url)):
        await started.wait()
        with pytest.raises(
            fg.StoreError,
            match=rf"^graph 'daemon' is already running against SQLite store {tmp_path}/state\.db "
            r"\(its lease is held by process \d+ on .+\); two runs of one graph on one "
            r"checkpoint store would overwrite each other's checkpoints: stop the other run, "
            r"or give this one another graph name$",
        ):
            await g.run(checkpoints=fg.Checkpoints(url))
        assert calls == [None]
        other = fg.Graph("other")
        other.chain(other.source(offsets(3), name="src", checkpoint=True), other.sink(sink))
        await other.run(checkpoints=fg.Checkpoints(url))  # another graph: its own lease
        release.set()
    await g.run(checkpoints=fg.Checkpoints(url))  # the first run ended: free again
    assert calls == [None, 0]


async def test_a_source_without_a_checkpoint_says_so_once(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A checkpointed source starting without a position logs one line naming it and the store."""
    caplog.set_level(logging.INFO, logger="flowgraph.checkpoints")
    db = tmp_path / "state.db"

    async def sink(x: int) -> None:
        pass

    g = fg.Graph("g")
    g.chain(g.source(offsets(3), name="src", checkpoint=True), g.sink(sink))

    def said() -> list[str]:
        return [r.getMessage() for r in caplog.records if "no checkpoint" in r.getMessage()]

    await g.run(checkpoints=fg.Checkpoints(db))
    assert said() == [
        f"no checkpoint for source 'src' in SQLite store {db}: starting from the beginning"
    ]
    await g.run(checkpoints=fg.Checkpoints(db))
    assert len(said()) == 1
