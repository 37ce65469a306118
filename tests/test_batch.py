"""Batches: graph.batch(), batch=, graph.unbatch(); full, timed and tail flushes (#15)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import flowgraph as fg
from flowgraph.testing import VirtualClock


@settings(max_examples=60)
@given(
    gaps=st.lists(st.sampled_from([0.0, 0.01, 0.1, 0.3, 1.0]), min_size=1, max_size=60),
    size=st.integers(1, 8),
    within=st.sampled_from([0.05, 0.25, 0.5, 2.0]),
)
async def test_every_item_is_in_one_batch_that_never_waits_too_long(
    virtual_clock: VirtualClock, gaps: list[float], size: int, within: float
) -> None:
    """Whatever the arrival times: every item in exactly one batch, in order, none over size,
    no item waiting past within, and a short batch only at its deadline or the end."""
    emitted: dict[int, float] = {}

    async def arrivals() -> AsyncIterator[int]:
        for i, gap in enumerate(gaps):
            await anyio.sleep(gap)
            emitted[i] = anyio.current_time()
            yield i

    batches: list[tuple[list[int], float]] = []

    async def keep(batch: list[int]) -> None:
        batches.append((batch, anyio.current_time()))

    g = fg.Graph("batches")
    g.chain(g.source(arrivals), g.batch(size, within=within), g.sink(keep))
    await g.run()
    assert [i for batch, _ in batches for i in batch] == list(range(len(gaps)))
    for number, (batch, at) in enumerate(batches):
        waited = at - emitted[batch[0]]
        assert len(batch) <= size
        assert waited <= within + 1e-9
        last = number == len(batches) - 1
        if len(batch) < size and not last:
            assert waited == pytest.approx(within)


async def test_the_tail_is_flushed_at_a_graceful_stop() -> None:
    """run.stop() ends the input: the unfinished batch is handed on, nothing is lost."""
    emitted = 0

    async def endless() -> AsyncIterator[int]:
        nonlocal emitted
        while True:
            yield emitted
            emitted += 1
            await anyio.lowlevel.checkpoint()

    received: list[int] = []

    async def keep(batch: list[int]) -> None:
        received.extend(batch)

    g = fg.Graph("stop")
    g.chain(g.source(endless), g.batch(1000), g.sink(keep))
    async with fg.open_run(g) as run:
        while emitted < 2500:  # noqa: ASYNC110 - waiting for the source to run on
            await anyio.sleep(0.001)
        run.stop()
    assert received == list(range(len(received)))
    assert len(received) >= 2500
    assert run.result.statistics["batch"].items_in == len(received)


async def test_a_function_that_takes_lists_gets_batches_with_batch_option() -> None:
    """transform(fn, batch=3) hands fn lists of at most three items."""
    sizes: list[int] = []

    async def total(rows: list[int]) -> int:
        sizes.append(len(rows))
        return sum(rows)

    sums: list[int] = []

    async def keep(x: int) -> None:
        sums.append(x)

    g = fg.Graph("option")
    g.chain(g.source(range(10), name="src"), g.transform(total, batch=3), g.sink(keep))
    result = await g.run()
    assert sizes == [3, 3, 3, 1]
    assert sums == [3, 12, 21, 9]
    stats = result.statistics["total"]
    assert (stats.items_in, stats.items_out) == (10, 4)


async def test_batch_then_unbatch_gives_back_every_item() -> None:
    """A batch node's lists, unbatched, are the items in order."""
    seen: list[int] = []

    async def keep(x: int) -> None:
        seen.append(x)

    g = fg.Graph("roundtrip")
    g.chain(g.source(range(1000), name="src"), g.batch(64), g.unbatch(), g.sink(keep))
    result = await g.run()
    assert seen == list(range(1000))
    assert result.statistics["unbatch"].items_out == 1000


async def test_a_batch_is_acknowledged_only_when_it_is_finished() -> None:
    """A checkpoint never passes an item whose batch is still being written."""
    commits: list[int] = []
    written: list[int] = []
    release = anyio.Event()

    class Store:
        every, interval = 1, 60.0

        async def load(self, graph: str) -> dict[str, Any]:
            return {}

        async def commit(self, graph: str, positions: Any) -> None:
            commits.append(positions["src"])

    async def offsets(after: int | None) -> AsyncIterator[fg.Positioned]:
        for i in range(10):
            yield fg.Positioned(i, position=i)

    async def write(batch: list[int]) -> None:
        if batch[0] == 4:
            await release.wait()
        written.extend(batch)

    g = fg.Graph("acks")
    g.chain(g.source(offsets, name="src", checkpoint=True), g.sink(write, batch=4))

    @g.on(fg.CheckpointCommitted)
    def check(event: fg.CheckpointCommitted) -> None:
        assert set(range(event.positions["src"] + 1)) <= set(written)
        if event.positions["src"] == 3:
            release.set()

    await g.run(checkpoints=Store())
    assert commits[0] == 3
    assert commits[-1] == 9
    assert written == list(range(10))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: fg.Batch(), r"^a Batch needs size=, within= or both$"),
        (lambda: fg.Batch(0), r"^size must be an int >= 1 \(got 0\)$"),
        (lambda: fg.Batch(10, within=0), r"^within must be > 0 \(got 0\)$"),
        (
            lambda: fg.Graph("g").transform(sum, batch="ten"),  # type: ignore[call-overload]
            r"^batch of transform 'sum' must be a size or fg.Batch\(size, within=...\)",
        ),
    ],
)
def test_bad_batches_are_refused(make: Any, message: str) -> None:
    """Batch sizes and windows are checked where they are declared."""
    with pytest.raises(fg.GraphError, match=message):
        make()


def test_a_batch_reprs_as_the_call_that_makes_it() -> None:
    assert repr(fg.Batch(1000, within=0.5)) == "Batch(1000, within=0.5)"
    assert repr(fg.Batch(within=2)) == "Batch(within=2.0)"
