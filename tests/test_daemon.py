"""Polling sources: fetch what is new since the last position, wait, repeat; stop on run.stop()."""

from __future__ import annotations

import itertools
import sys
from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest

import flowgraph as fg

virtual_time = pytest.mark.flowgraph_virtual_time


class MemoryCheckpoints:
    """An in-memory checkpoint store (virtual time and worker threads do not mix)."""

    def __init__(self, every: int = 1, interval: float = 3600.0, **positions: Any) -> None:
        self.every = every
        self.interval = interval
        self.positions: dict[str, Any] = dict(positions)

    async def load(self, graph: str) -> Mapping[str, Any]:
        return dict(self.positions)

    async def commit(self, graph: str, positions: Mapping[str, Any]) -> None:
        self.positions.update(positions)


class Feed:
    """A growing list of records with offsets; fetch returns up to *page* after a position."""

    def __init__(self, page: int = 100) -> None:
        self.records: list[str] = []
        self.page = page
        self.calls: list[tuple[float, Any]] = []

    async def fetch(self, after: int | None) -> list[fg.Positioned]:
        self.calls.append((anyio.current_time(), after))
        start = 0 if after is None else after + 1
        return [
            fg.Positioned(self.records[i], i)
            for i in range(start, min(start + self.page, len(self.records)))
        ]


def pipeline(source: Any, got: list[Any], **options: Any) -> fg.Graph:
    async def store(item: Any) -> None:
        got.append(item)

    graph = fg.Graph("daemon")
    graph.chain(graph.source(source, checkpoint=True, **options), graph.sink(store))
    return graph


async def run_for(graph: fg.Graph, seconds: float, store: Any, **stop: Any) -> fg.RunResult:
    async with fg.open_run(graph, checkpoints=store) as run:
        await anyio.sleep(seconds)
        run.stop(**stop)
    return run.result


@virtual_time
async def test_poll_every_fetches_at_a_fixed_cadence() -> None:
    """every=60 starts a fetch every 60 s from the first, which happens at once."""
    feed = Feed()
    start = anyio.current_time()
    await run_for(pipeline(fg.poll(feed.fetch, every=60), []), 250, MemoryCheckpoints())
    assert [round(t - start, 6) for t, _ in feed.calls] == [0, 60, 120, 180, 240]


@virtual_time
async def test_poll_every_accepts_a_timedelta_and_counts_from_the_fetch_start() -> None:
    """A fetch taking 20 s of a 60 s period delays the next fetch by the remaining 40 s only."""
    times: list[float] = []

    async def slow(after: Any) -> list[fg.Positioned]:
        times.append(anyio.current_time())
        await anyio.sleep(20)
        return []

    start = anyio.current_time()
    await run_for(pipeline(fg.poll(slow, every=timedelta(minutes=1)), []), 130, MemoryCheckpoints())
    assert [round(t - start, 6) for t in times] == [0, 60, 120]


@virtual_time
async def test_poll_fetches_after_the_last_emitted_position_not_the_committed_one() -> None:
    """Each fetch gets the position of the last item emitted; an empty fetch keeps it."""
    feed = Feed(page=2)
    feed.records = ["a", "b", "c"]
    got: list[str] = []
    store = MemoryCheckpoints(every=1000)  # commits only at the end of the run
    graph = pipeline(fg.poll(feed.fetch, every=10), got)
    async with fg.open_run(graph, checkpoints=store) as run:
        await anyio.sleep(25)
        feed.records.append("d")
        await anyio.sleep(10)
        run.stop()
    assert [after for _, after in feed.calls] == [None, 1, 2, 2]
    assert got == ["a", "b", "c", "d"]
    assert store.positions == {"fetch": 3}


@virtual_time
async def test_poll_resumes_from_the_committed_position_after_a_restart() -> None:
    """A second run calls fetch first with the position the first run committed."""
    feed = Feed()
    feed.records = list("abcde")
    got: list[str] = []
    store = MemoryCheckpoints()
    graph = pipeline(fg.poll(feed.fetch, every=10), got)
    await run_for(graph, 5, store)
    feed.records += ["f", "g"]
    await run_for(graph, 5, store)
    assert [after for _, after in feed.calls] == [None, 4]
    assert got == list("abcdefg")
    assert store.positions == {"fetch": 6}


@virtual_time
async def test_poll_until_empty_fetches_again_at_once_while_fetches_return_items() -> None:
    """until_empty=True drains a backlog page by page, then waits a period after the empty fetch."""
    feed = Feed(page=10)
    feed.records = [str(i) for i in range(25)]
    got: list[str] = []
    start = anyio.current_time()
    graph = pipeline(fg.poll(feed.fetch, every=30, until_empty=True), got)
    await run_for(graph, 45, MemoryCheckpoints())
    assert [(round(t - start, 6), after) for t, after in feed.calls] == [
        (0, None),
        (0, 9),
        (0, 19),
        (0, 24),
        (30, 24),
    ]
    assert got == feed.records


@virtual_time
async def test_poll_until_empty_respects_a_rate_limiter_inside_fetch() -> None:
    """The self-triggering loop of a rate-limited API: at most 2 fetches per 10 s."""
    feed = Feed(page=1)
    feed.records = [str(i) for i in range(6)]
    limiter = fg.RateLimiter(fg.Rate(2, per=10))

    async def fetch(after: int | None) -> list[fg.Positioned]:
        async with limiter:
            return await feed.fetch(after)

    start = anyio.current_time()
    await run_for(pipeline(fg.poll(fetch, every=60, until_empty=True), []), 35, MemoryCheckpoints())
    assert [round(t - start, 6) for t, _ in feed.calls] == [0, 0, 10, 10, 20, 20, 30]


@virtual_time
async def test_poll_schedule_wakes_at_the_wall_clock_times_it_returns() -> None:
    """schedule(now) -> next wall-clock wake; here the next full minute, like cron '* * * * *'."""
    feed = Feed()
    nows: list[datetime] = []

    def every_minute(now: datetime) -> datetime:
        nows.append(now)
        return now.replace(second=0, microsecond=0) + timedelta(minutes=1)

    start = anyio.current_time()
    await run_for(
        pipeline(fg.poll(feed.fetch, schedule=every_minute), []), 200, MemoryCheckpoints()
    )
    assert all(now.tzinfo is UTC for now in nows)
    first = nows[0].replace(second=0, microsecond=0) + timedelta(minutes=1)
    assert [now - first for now in nows[1:]] == pytest.approx(
        [timedelta(minutes=m) for m in range(len(nows) - 1)], abs=timedelta(seconds=0.5)
    )
    offsets = [t - start for t, _ in feed.calls]
    assert offsets[0] == 0
    assert 0 < offsets[1] <= 60
    gaps = [b - a for a, b in itertools.pairwise(offsets[1:])]
    assert gaps == pytest.approx([60.0] * len(gaps), abs=0.5)
    assert len(gaps) >= 2


@virtual_time
async def test_poll_schedule_takes_a_cron_expression_in_utc() -> None:
    """schedule="*/5 * * * *" wakes on every fifth minute of the UTC wall clock."""
    feed = Feed()
    source = fg.poll(feed.fetch, schedule="*/5 * * * *")
    assert repr(source) == "poll(fetch, schedule='*/5 * * * *')"
    started_wall, started = datetime.now(UTC), anyio.current_time()
    await run_for(pipeline(source, []), 30 * 60, MemoryCheckpoints())
    walls = [started_wall + timedelta(seconds=t - started) for t, _ in feed.calls]
    assert len(walls) in (7, 8)  # at start, then 6 or 7 five-minute marks in 30 minutes
    for wall in walls[1:]:
        nearest_second = (wall + timedelta(seconds=0.5)).replace(microsecond=0)
        assert (nearest_second.minute % 5, nearest_second.second) == (0, 0), wall
    gaps = [b - a for a, b in itertools.pairwise(walls[1:])]
    assert gaps == pytest.approx([timedelta(minutes=5)] * len(gaps), abs=timedelta(seconds=0.5))


def test_a_cron_schedule_without_croniter_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the cron extra, the declaration says what to install."""

    async def fetch(after: Any) -> list[fg.Positioned]:
        return []  # pragma: no cover

    monkeypatch.setitem(sys.modules, "croniter", None)
    with pytest.raises(ImportError, match=r"needs croniter: pip install 'flowgraph\[cron\]'"):
        fg.poll(fetch, schedule="*/5 * * * *")


@virtual_time
async def test_poll_schedule_must_return_a_later_aware_datetime() -> None:
    """A naive or past wake time is a clear error, never a busy loop."""
    feed = Feed()

    def naive(now: datetime) -> datetime:
        return now.replace(tzinfo=None) + timedelta(seconds=1)

    with pytest.raises(fg.NodeError, match=r"schedule must return a timezone-aware datetime"):
        await run_for(pipeline(fg.poll(feed.fetch, schedule=naive), []), 5, MemoryCheckpoints())

    def same(now: datetime) -> datetime:
        return now

    with pytest.raises(fg.NodeError, match=r"schedule returned .*, which is not after now="):
        await run_for(pipeline(fg.poll(feed.fetch, schedule=same), []), 5, MemoryCheckpoints())


@virtual_time
async def test_stop_ends_a_sleeping_poll_source_and_commits_what_it_emitted() -> None:
    """run.stop() cancels the wait at once; the run ends stopped with every item committed."""
    feed = Feed()
    feed.records = ["a", "b"]
    got: list[str] = []
    store = MemoryCheckpoints(every=1000)
    start = anyio.current_time()
    result = await run_for(pipeline(fg.poll(feed.fetch, every=3600), got), 10, store)
    assert result.stopped
    assert anyio.current_time() - start == pytest.approx(10)
    assert got == ["a", "b"]
    assert store.positions == {"fetch": 1}


@virtual_time
async def test_stop_cancels_a_fetch_in_progress() -> None:
    """A fetch still running when the run stops is cancelled; nothing from it is emitted."""
    started = anyio.Event()

    async def hanging(after: Any) -> list[fg.Positioned]:
        started.set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")  # pragma: no cover

    got: list[Any] = []
    graph = pipeline(fg.poll(hanging, every=1), got)
    async with fg.open_run(graph, checkpoints=MemoryCheckpoints()) as run:
        await started.wait()
        run.stop(grace=5)
    assert run.result.stopped
    assert got == []


@virtual_time
async def test_poll_accepts_an_async_generator_fetch() -> None:
    """fetch may be an async generator function of the position."""
    got: list[int] = []

    async def numbers(after: int | None) -> AsyncIterator[fg.Positioned]:
        start = 0 if after is None else after + 1
        for i in range(start, min(start + 3, 7)):
            yield fg.Positioned(i, i)

    await run_for(pipeline(fg.poll(numbers, every=1), got), 5, MemoryCheckpoints())
    assert got == list(range(7))


@virtual_time
async def test_poll_waits_for_room_when_max_in_flight_items_are_unacknowledged() -> None:
    """Backpressure reaches the fetch loop: the next fetch waits until items are acknowledged."""
    feed = Feed(page=4)
    feed.records = [str(i) for i in range(8)]
    done: list[float] = []

    async def slow_store(item: str) -> None:
        await anyio.sleep(5)
        done.append(anyio.current_time())

    graph = fg.Graph("daemon")
    graph.chain(
        graph.source(
            fg.poll(feed.fetch, every=1, until_empty=True), checkpoint=True, max_in_flight=2
        ),
        graph.sink(slow_store),
    )
    start = anyio.current_time()
    async with fg.open_run(graph, checkpoints=MemoryCheckpoints()) as run:
        await anyio.sleep(60)
        run.stop()
    assert len(done) == 8
    # The second page is fetched only once the first page's items have made room.
    assert feed.calls[1][0] - start >= 10


@virtual_time
async def test_fetch_must_return_positioned_items() -> None:
    """A bare item from fetch fails the source with a message naming fetch."""

    async def bare(after: Any) -> Iterable[Any]:
        return [1]

    with pytest.raises(
        fg.NodeError,
        match=r"fetch 'bare' returned 1; it must return fg.Positioned\(item, position\) items",
    ):
        await run_for(pipeline(fg.poll(bare, every=1), []), 5, MemoryCheckpoints())

    async def scalar(after: Any) -> Any:
        return 3

    with pytest.raises(
        fg.NodeError,
        match=r"fetch 'scalar' must return an iterable of fg.Positioned items \(got 3\)",
    ):
        await run_for(pipeline(fg.poll(scalar, every=1), []), 5, MemoryCheckpoints())


@virtual_time
async def test_fetch_errors_fail_the_run_naming_the_source() -> None:
    """An exception from fetch fails the source like any source error."""

    async def broken(after: Any) -> list[fg.Positioned]:
        raise ConnectionError("api down")

    with pytest.raises(fg.NodeError, match="broken") as info:
        await run_for(pipeline(fg.poll(broken, every=1), []), 5, MemoryCheckpoints())
    assert isinstance(info.value.__cause__, ConnectionError)


def test_poll_needs_exactly_one_wake_rule() -> None:
    """Neither or both of every= and schedule= is a declaration error."""

    async def fetch(after: Any) -> list[fg.Positioned]:
        return []  # pragma: no cover

    message = r"^poll\(\) needs exactly one of every= \(seconds\) or schedule= \(a cron"
    with pytest.raises(fg.GraphError, match=message):
        fg.poll(fetch)
    with pytest.raises(fg.GraphError, match=message):
        fg.poll(fetch, every=1, schedule=lambda now: now)
    with pytest.raises(fg.GraphError, match=r"^every must be > 0 \(got 0\)$"):
        fg.poll(fetch, every=0)
    with pytest.raises(fg.GraphError, match=r"^poll\(\) needs an async fetch\(position\)"):
        fg.poll("fetch", every=1)  # type: ignore[arg-type]
    with pytest.raises(fg.GraphError, match=r"^schedule= must be a cron expression or a callable"):
        fg.poll(fetch, schedule=300)  # type: ignore[arg-type]
    with pytest.raises(fg.GraphError, match=r"^schedule='every 5 minutes' is not a valid cron"):
        fg.poll(fetch, schedule="every 5 minutes")


def test_poll_source_is_named_after_fetch_and_reprs_as_its_call() -> None:
    """graph.source(fg.poll(fetch_events, ...)) is the node 'fetch_events'."""

    async def fetch_events(after: Any) -> list[fg.Positioned]:
        return []  # pragma: no cover

    source = fg.poll(fetch_events, every=60.0, until_empty=True)
    graph = fg.Graph("g")
    assert graph.source(source, checkpoint=True).name == "fetch_events"
    assert repr(source) == "poll(fetch_events, every=60.0, until_empty=True)"
