"""Barriers: graph.after(a, b, c) runs once per run, after all of them, as part of the run."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Mapping
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import flowgraph as fg
from flowgraph.testing import VirtualClock


def discard(item: object) -> None:
    """A sink that keeps nothing."""


Stats = Mapping[str, fg.NodeStatistics]


def lane(
    g: fg.Graph, name: str, delays: list[float]
) -> tuple[fg.Node[..., Any], fg.Node[..., Any]]:
    """A source yielding one item after each delay, into a sink of its own."""

    async def source() -> AsyncIterator[int]:
        for n, delay in enumerate(delays):
            await anyio.sleep(delay)
            yield n

    async def sink(x: int) -> None:
        await anyio.sleep(0.01)

    src = g.source(source, name=f"{name}_src")
    out = g.sink(sink, name=f"{name}_sink")
    g.connect(src, out)
    return src, out


@st.composite
def lanes_and_choice(draw: st.DrawFn) -> tuple[list[list[float]], list[int]]:
    """Lanes of delays (a source and a sink each) and which of their nodes the barrier awaits."""
    lanes = draw(
        st.lists(
            st.lists(st.sampled_from([0.0, 0.05, 0.3, 1.0, 5.0]), max_size=6),
            min_size=1,
            max_size=5,
        )
    )
    chosen = draw(
        st.lists(st.integers(0, 2 * len(lanes) - 1), min_size=1, unique=True), label="after"
    )
    return lanes, chosen


# Drawn before the test's event loop starts: a draw inside an async test that runs out of
# data raises in the loop's task, which asyncio then reports at garbage collection.
@settings(max_examples=40)
@given(drawn=lanes_and_choice())
async def test_a_barrier_fires_once_after_every_node_it_waits_for(
    virtual_clock: VirtualClock, drawn: tuple[list[list[float]], list[int]]
) -> None:
    """Whatever the finish order and delays: one call, after each named node's NodeFinished,
    with their final statistics."""
    lanes, indexes = drawn
    g = fg.Graph("chord")
    nodes = [node for n, delays in enumerate(lanes) for node in lane(g, f"l{n}", delays)]
    chosen = [nodes[i] for i in indexes]
    log: list[tuple[str, str, float]] = []

    @g.on(fg.NodeFinished)
    def finished(event: fg.NodeFinished) -> None:
        log.append(("finished", event.node, anyio.current_time()))

    calls: list[Stats] = []

    @g.after(*chosen)
    async def merge(statistics: Stats) -> None:
        log.append(("barrier", "merge", anyio.current_time()))
        calls.append(statistics)

    await g.run()
    assert len(calls) == 1
    names = [node.name for node in chosen]
    assert list(calls[0]) == names
    fired = next(i for i, entry in enumerate(log) if entry[0] == "barrier")
    finished_before = {name for kind, name, _ in log[:fired] if kind == "finished"}
    assert set(names) <= finished_before
    for name, stats in calls[0].items():
        assert stats.finished
        count = stats.items_out if stats.kind == "source" else stats.items_in
        assert count == len(lanes[int(name[1 : name.index("_")])])


async def test_a_sync_barrier_runs_in_a_worker_thread() -> None:
    """A sync function runs off the event loop's thread, with the statistics of its nodes."""
    g = fg.Graph("g")
    src = g.source(range(5), name="src")
    sink = g.sink(discard, name="sink")
    g.connect(src, sink)
    seen: list[tuple[threading.Thread, int]] = []

    @g.after(sink, src)
    def report(statistics: Stats) -> None:
        seen.append((threading.current_thread(), statistics["sink"].items_in))

    await g.run()
    assert len(seen) == 1
    assert seen[0][0] is not threading.current_thread()
    assert seen[0][1] == 5


async def test_a_barrier_that_raises_fails_the_run_naming_it() -> None:
    """Unlike a hook, its error is the run's: a NodeError naming the barrier and its nodes."""
    g = fg.Graph("g")
    a = g.source(range(3), name="a")
    b = g.sink(discard, name="b")
    g.connect(a, b)

    @g.after(a, "b")
    async def merge(statistics: Stats) -> None:
        raise ValueError("no merge today")

    with pytest.raises(
        fg.NodeError,
        match=r"^barrier 'merge' \(after 'a', 'b'\) failed; last error: ValueError: no merge today$",
    ) as caught:
        await g.run()
    assert caught.value.node == "merge"
    assert isinstance(caught.value.__cause__, ValueError)


async def test_a_run_that_fails_first_never_calls_the_barrier() -> None:
    """The failing node finishes last of the barrier's nodes: the barrier still never runs."""
    g = fg.Graph("g")
    ok = g.sink(discard, name="ok", inline=True)
    g.connect(g.source(range(3), name="fine"), ok)

    async def boom(x: int) -> None:
        await anyio.sleep(0.01)
        raise ValueError("boom")

    bad = g.sink(boom, name="bad")
    g.connect(g.source([1], name="one"), bad)
    called: list[Stats] = []

    @g.after(ok, bad)
    async def merge(statistics: Stats) -> None:
        called.append(statistics)

    @g.after(ok, bad)
    def merge_sync(statistics: Stats) -> None:
        called.append(statistics)

    with pytest.raises(
        fg.NodeError, match=r"^node 'bad' failed on item 1; last error: ValueError: boom$"
    ):
        await g.run()
    assert called == []


async def test_a_cancelled_run_never_calls_the_barrier(virtual_clock: VirtualClock) -> None:
    """Cancelling the caller before the nodes finish: no call, nothing left running."""
    g = fg.Graph("g")
    lane(g, "slow", [10.0])
    called: list[Stats] = []

    @g.after("slow_sink")
    async def merge(statistics: Stats) -> None:
        called.append(statistics)

    with anyio.move_on_after(5):
        await g.run()
    await anyio.sleep(20)
    assert called == []


async def test_after_a_graceful_stop_the_barrier_fires_once_drained(
    virtual_clock: VirtualClock,
) -> None:
    """stop(): the sources end, what they emitted drains, then the barrier runs once."""
    g = fg.Graph("g")

    async def forever() -> AsyncIterator[int]:
        n = 0
        while True:
            await anyio.sleep(1)
            yield n
            n += 1

    sunk: list[int] = []

    async def slow(x: int) -> None:
        await anyio.sleep(3)
        sunk.append(x)

    g.chain(g.source(forever, name="ticks"), g.sink(slow, name="store", workers=4))
    calls: list[tuple[int, int]] = []

    @g.after("ticks", "store")
    async def merge(statistics: Stats) -> None:
        calls.append((statistics["ticks"].items_out, statistics["store"].items_in))

    async with fg.open_run(g) as run:
        await anyio.sleep(10.5)
        run.stop()
    assert run.result.stopped
    assert calls == [(10, 10)]
    assert len(sunk) == 10


async def test_the_barrier_runs_once_per_run_and_wait_finished_waits_for_it() -> None:
    """Each run calls it once; run.wait_finished() returns only after it has run."""
    g = fg.Graph("g")
    g.connect(g.source(range(2), name="src"), g.sink(discard, name="sink"))
    calls: list[int] = []

    @g.after("sink")
    async def merge(statistics: Stats) -> None:
        await anyio.sleep(0.01)
        calls.append(statistics["sink"].items_in)

    async with fg.open_run(g) as run:
        await run.wait_finished()
        assert calls == [2]
    await g.run()
    assert calls == [2, 2]
    assert list(g.barriers) == ["merge"]
    assert g.barriers["merge"].nodes == ("sink",)


def make_graph() -> tuple[fg.Graph, fg.Node[..., Any]]:
    g = fg.Graph("g")
    src = g.source(range(2), name="src")
    g.connect(src, g.sink(discard, name="sink"))
    return g, src


async def merge(statistics: Stats) -> None: ...


@pytest.mark.parametrize(
    ("declare", "message"),
    [
        (lambda g, src: g.after()(merge), r"^after\(\) needs at least one node to wait for$"),
        (lambda g, src: g.after("nope")(merge), r"^graph 'g' has no node 'nope'$"),
        (lambda g, src: g.after(src, "src")(merge), r"^after\(\) names node 'src' twice$"),
        (
            lambda g, src: g.after(fg.Graph("other").source(range(1), name="x"))(merge),
            r"^node 'x' belongs to graph 'other'$",
        ),
        (
            lambda g, src: g.after(src)(lambda: None),
            r"^cannot name the barrier for <function .*>: pass name=$",
        ),
        (
            lambda g, src: g.after(src, name="m")(lambda: None),
            r"^barrier 'm' must take one argument: the statistics of its nodes by name$",
        ),
        (lambda g, src: g.after(src, name="m")(42), r"^barrier 'm' must be a function \(got 42\)$"),
        (
            lambda g, src: g.after(src, name="m")(lambda s: (yield s)),
            r"^barrier 'm' must be a plain function, not a generator$",
        ),
        (
            lambda g, src: [g.after(src)(merge), g.after("sink")(merge)],
            r"^graph 'g' already has a barrier named 'merge'; pass name= to tell them apart$",
        ),
    ],
)
def test_bad_barriers_are_refused_when_declared(declare: Any, message: str) -> None:
    """Every mistake is a GraphError at declaration, naming what to fix."""
    g, src = make_graph()
    with pytest.raises(fg.GraphError, match=message):
        declare(g, src)


async def test_barriers_cannot_be_added_while_the_graph_runs() -> None:
    """As nodes and hooks: declare before the run."""
    g, src = make_graph()
    async with fg.open_run(g):
        with pytest.raises(fg.GraphError, match=r"^graph 'g' is running: declare"):
            g.after(src)(merge)
