"""Checkpoints: acknowledgement tracking, the low watermark, commits, and resuming."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import flowgraph as fg


class MemoryCheckpoints:
    """An in-memory checkpoint store that records every commit."""

    def __init__(self, every: int = 1, interval: float = 60.0, **positions: Any) -> None:
        self.every = every
        self.interval = interval
        self.positions: dict[str, Any] = dict(positions)
        self.commits: list[dict[str, Any]] = []

    async def load(self, graph: str) -> Mapping[str, Any]:
        return dict(self.positions)

    async def commit(self, graph: str, positions: Mapping[str, Any]) -> None:
        self.positions.update(positions)
        self.commits.append(dict(positions))


def offsets(n: int, seen: list[Any] | None = None) -> Any:
    """A checkpointed source of offsets 0..n-1 that resumes after its position."""

    async def numbers(after: int | None) -> AsyncIterator[fg.Positioned]:
        if seen is not None:
            seen.append(after)
        start = 0 if after is None else after + 1
        for i in range(start, n):
            yield fg.Positioned(i, position=i)

    return numbers


async def test_full_run_commits_the_last_position_and_restart_resumes_after_it() -> None:
    """After a complete run the checkpoint is the last offset; the next run starts past it."""
    store = MemoryCheckpoints(every=10)
    resumed: list[Any] = []
    got: list[int] = []

    async def sink(x: int) -> None:
        got.append(x)

    g = fg.Graph("g")
    g.chain(g.source(offsets(50, resumed), name="src", checkpoint=True), g.sink(sink, workers=4))
    await g.run(checkpoints=store)
    assert store.positions == {"src": 49}
    assert sorted(got) == list(range(50))
    await g.run(checkpoints=store)
    assert resumed == [None, 49]
    assert len(got) == 50


async def test_commits_are_batched_by_count() -> None:
    """every=N commits about once per N acknowledgements, plus a final commit."""
    store = MemoryCheckpoints(every=10)

    async def sink(x: int) -> None:
        await anyio.lowlevel.checkpoint()

    g = fg.Graph("g")
    g.chain(g.source(offsets(100), name="src", checkpoint=True), g.sink(sink))
    await g.run(checkpoints=store)
    assert 5 <= len(store.commits) <= 12
    assert store.commits[-1] == {"src": 99}


async def test_failure_commits_only_the_finished_prefix_and_restart_replays_the_rest() -> None:
    """A failed run never checkpoints past an unfinished item; the restart delivers it."""
    store = MemoryCheckpoints(every=1)
    delivered: Counter[int] = Counter()
    broken = True

    async def sink(x: int) -> None:
        if x == 30 and broken:
            raise RuntimeError("database down")
        delivered[x] += 1

    g = fg.Graph("g")
    g.chain(g.source(offsets(60), name="src", checkpoint=True), g.sink(sink, workers=3))
    with pytest.raises(fg.NodeError):
        await g.run(checkpoints=store)
    assert store.positions["src"] < 30
    broken = False
    await g.run(checkpoints=store)
    assert set(delivered) == set(range(60))
    assert store.positions == {"src": 59}


async def test_max_in_flight_bounds_unacknowledged_items() -> None:
    """A source never runs more than max_in_flight items ahead of its watermark."""
    emitted = finished = worst = 0

    async def numbers(after: int | None) -> AsyncIterator[fg.Positioned]:
        nonlocal emitted
        for i in range(100):
            emitted += 1
            yield fg.Positioned(i, i)

    async def slow(x: int) -> None:
        nonlocal finished, worst
        worst = max(worst, emitted - finished)
        await anyio.sleep(0.0005)
        finished += 1

    g = fg.Graph("g")
    g.chain(
        g.source(numbers, checkpoint=True, max_in_flight=5),
        g.sink(slow, workers=8, buffer=50),
    )
    await g.run(checkpoints=MemoryCheckpoints())
    assert finished == 100
    assert worst <= 5 + 1  # one more item may be produced, waiting for room


async def test_dead_lettered_and_skipped_items_count_as_done(tmp_path: Path) -> None:
    """Handled failures acknowledge their source item, so the checkpoint moves past them."""
    store = MemoryCheckpoints()

    async def picky(x: int) -> int:
        if x % 3 == 0:
            raise ValueError(x)
        return x

    async def sink(x: int) -> None:
        if x == 4:
            raise KeyError(x)

    g = fg.Graph("g")
    g.chain(
        g.source(offsets(10), name="src", checkpoint=True),
        g.transform(picky, on_error="skip"),
        g.sink(sink, on_error="dead_letter"),
    )
    await g.run(checkpoints=store, dead_letters=fg.DeadLetters(tmp_path / "s.db"))
    assert store.positions == {"src": 9}


async def test_checkpointed_source_without_a_store_just_runs() -> None:
    """Without checkpoints= the source gets None and its items flow unwrapped."""
    seen: list[Any] = []
    got: list[int] = []

    async def sink(x: int) -> None:
        got.append(x)

    g = fg.Graph("g")
    g.chain(g.source(offsets(5, seen), name="src", checkpoint=True), g.sink(sink))
    await g.run()
    assert (seen, sorted(got)) == ([None], [0, 1, 2, 3, 4])


async def test_checkpointed_source_must_yield_positioned_items() -> None:
    """A bare item from a checkpointed source is a clear error."""

    async def bare(after: Any) -> AsyncIterator[int]:
        yield 1

    async def sink(x: int) -> None:
        pass

    g = fg.Graph("g")
    g.chain(g.source(bare, checkpoint=True), g.sink(sink))
    with pytest.raises(
        fg.NodeError,
        match=r"checkpointed source 'bare' produced 1; it must yield fg.Positioned\(item, position\)$",
    ):
        await g.run(checkpoints=MemoryCheckpoints())


def test_checkpointed_source_must_take_the_resume_position() -> None:
    """checkpoint=True on a function without a parameter is refused at declaration."""

    async def no_args() -> AsyncIterator[int]:
        yield 1

    g = fg.Graph("g")
    with pytest.raises(
        fg.GraphError, match=r"^checkpointed source 'no_args' must accept one argument"
    ):
        g.source(no_args, checkpoint=True)


def test_a_source_that_needs_the_position_must_be_checkpointed() -> None:
    """A poll source, or any source taking a position, without checkpoint=True fails at once."""

    async def fetch(after: int | None) -> list[fg.Positioned]:
        return []  # pragma: no cover

    g = fg.Graph("g")
    message = r"^source 'fetch' needs an argument, .* declare it with checkpoint=True"
    with pytest.raises(fg.GraphError, match=message):
        g.source(fg.poll(fetch, every=60))
    with pytest.raises(fg.GraphError, match=r"^source 'numbers' needs an argument"):
        g.source(offsets(3))


async def test_untracked_sources_mix_with_checkpointed_ones() -> None:
    """A plain source beside a checkpointed one still delivers; only the latter is committed."""
    store = MemoryCheckpoints()
    got: list[Any] = []

    async def sink(x: Any) -> None:
        got.append(x)

    g = fg.Graph("g")
    plain = g.source(["a", "b"], name="plain")
    tracked = g.source(offsets(3), name="tracked", checkpoint=True)
    sink_node = g.sink(sink)
    g.connect(plain, sink_node)
    g.connect(tracked, sink_node)
    await g.run(checkpoints=store)
    assert sorted(map(str, got)) == ["0", "1", "2", "a", "b"]
    assert store.positions == {"tracked": 2}


async def test_stop_commits_what_drained() -> None:
    """A graceful stop commits the watermark of everything that finished."""
    store = MemoryCheckpoints(every=1000, interval=1000)
    got: list[int] = []

    async def endless(after: int | None) -> AsyncIterator[fg.Positioned]:
        i = 0 if after is None else after + 1
        while True:
            await anyio.sleep(0.001)
            yield fg.Positioned(i, i)
            i += 1

    async def sink(x: int) -> None:
        await anyio.sleep(0.002)
        got.append(x)

    g = fg.Graph("g")
    g.chain(g.source(endless, checkpoint=True), g.sink(sink, workers=3))
    async with fg.open_run(g, checkpoints=store) as run:
        await anyio.sleep(0.05)
        run.stop(grace=5)
    assert got
    assert store.positions == {"endless": max(got)}
    assert sorted(got) == list(range(len(got)))


async def test_stop_that_cancels_a_send_after_delivery_still_acknowledges_the_item() -> None:
    """An item taken from a blocked source just as stop() cancels it is processed and committed.

    With ``buffer=0`` and a busy sink the source waits in ``send``; the sink
    takes item 5 and stops the run before the source resumes, so on asyncio the
    source's send raises cancellation although the item was delivered (trio
    lets that send return and may send one more before the cancellation lands).
    """
    store = MemoryCheckpoints(every=1000, interval=1000)
    got: list[int] = []
    runs: list[fg.Run] = []

    async def sink(x: int) -> None:
        got.append(x)
        if x == 5:
            runs[0].stop(grace=5)
        else:
            await anyio.sleep(0.001)  # busy, so the source blocks in send with the next item

    g = fg.Graph("g")
    g.chain(g.source(offsets(100), name="src", checkpoint=True), g.sink(sink, buffer=0))
    async with fg.open_run(g, checkpoints=store) as run:
        runs.append(run)
    assert run.result.stopped
    assert got[:6] == list(range(6))
    assert got == list(range(len(got)))
    assert store.positions == {"src": got[-1]}


async def test_sqlite_checkpoints_survive_reopening(tmp_path: Path) -> None:
    """fg.Checkpoints keeps positions in a real SQLite file across runs."""
    db = tmp_path / "state.db"
    resumed: list[Any] = []

    async def sink(x: int) -> None:
        pass

    g = fg.Graph("g")
    g.chain(g.source(offsets(20, resumed), name="src", checkpoint=True), g.sink(sink))
    await g.run(checkpoints=fg.Checkpoints(db, every=5))
    await g.run(checkpoints=fg.Checkpoints(f"sqlite:///{db}"))
    assert resumed == [None, 19]
    assert await fg.Checkpoints(db).load("g") == {"src": 19}


@settings(max_examples=40)
@given(
    delays=st.lists(st.integers(0, 3), min_size=1, max_size=40),
    shape=st.sampled_from(["one sink", "fan-out", "route"]),
    workers=st.integers(1, 4),
    ordered=st.booleans(),
    batched=st.booleans(),
)
async def test_checkpoint_never_passes_an_unfinished_item(
    delays: list[int], shape: str, workers: int, ordered: bool, batched: bool
) -> None:
    """Whatever the completion order, every item at or below a committed position is finished.

    Items flow through a flat-map (x -> x, x), a filter (drops the second copy
    of multiples of 3), then to one sink, to two sinks (fan-out: each gets every
    copy) or routed by parity to one of two sinks; the flat-map keeps input
    order or not.
    """
    n = len(delays)
    store = MemoryCheckpoints(every=1)
    finished: Counter[int] = Counter()
    expected: Counter[int] = Counter()
    for i in range(n):
        copies = 2 if i % 3 else 1
        expected[i] = copies * (2 if shape == "fan-out" else 1)
    violations: list[tuple[int, int]] = []

    async def explode(x: int) -> AsyncIterator[int]:
        await anyio.sleep(delays[x] / 1000)
        yield x
        if x % 3:
            yield x

    async def consume(x: int) -> None:
        await anyio.sleep(delays[(x * 7) % n] / 1000)
        finished[x] += 1

    g = fg.Graph("g")
    src = g.source(offsets(n), name="src", checkpoint=True)
    mid = g.transform(explode, workers=workers, ordered=ordered)
    if batched:
        g.chain(src, g.batch(3, within=0.002), g.unbatch(), mid)
    else:
        g.connect(src, mid)
    a = g.sink(consume, name="a", workers=workers)
    if shape == "one sink":
        g.connect(mid, a)
    else:
        b = g.sink(consume, name="b", workers=workers)
        if shape == "fan-out":
            g.connect(mid, a, b)
        else:
            g.route(mid, by=lambda x: x % 2, to={0: a, 1: b})

    @g.on(fg.CheckpointCommitted)
    def check(event: fg.CheckpointCommitted) -> None:
        position = event.positions["src"]
        violations.extend(
            (i, finished[i]) for i in range(position + 1) if finished[i] != expected[i]
        )

    await g.run(checkpoints=store)
    assert violations == []
    assert finished == expected
    assert store.positions == {"src": n - 1}
