"""Flows: graphs that trigger graphs, side graphs fed by hooks, every error reaching the caller."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

import flowgraph as fg
from flowgraph._runner import open_flow
from flowgraph.testing import VirtualClock


def discard(item: object) -> None:
    """A sink that keeps nothing."""


def pipeline(
    name: str, items: int = 5, *, fail_on: int | None = None, log: list[str] | None = None
) -> tuple[fg.Graph, list[int]]:
    """source(range(items)) -> work -> keep; work raises on *fail_on*."""
    g = fg.Graph(name)
    kept: list[int] = []

    async def source() -> AsyncIterator[int]:
        if log is not None:
            log.append(f"{name} starts")
        for n in range(items):
            yield n

    async def work(x: int) -> int:
        if x == fail_on:
            raise ValueError(f"{name} cannot take {x}")
        return x

    async def keep(x: int) -> None:
        kept.append(x)
        if log is not None and len(kept) == items:
            log.append(f"{name} done")

    g.chain(g.source(source, name="src"), g.transform(work), g.sink(keep))
    return g, kept


async def test_a_graph_runs_after_the_graphs_it_follows() -> None:
    """b and c start only once a finished; each result is reported by graph name."""
    log: list[str] = []
    a, kept_a = pipeline("a", log=log)
    b, kept_b = pipeline("b", log=log)
    c, _ = pipeline("c", log=log)
    flow = fg.Flow("nightly")
    flow.add(a)
    flow.add(b, after=a)
    flow.add(c, after=[a, b])
    result = await flow.run()
    assert log.index("a done") < log.index("b starts")
    assert log.index("b done") < log.index("c starts")
    assert kept_a == kept_b == [0, 1, 2, 3, 4]
    assert list(result.results) == ["a", "b", "c"]
    assert result["c"].statistics["keep"].items_in == 5
    assert result.flow == "nightly"
    assert not result.stopped
    assert result.not_run == ()


async def test_independent_graphs_run_at_the_same_time() -> None:
    """Two graphs that each wait for the other would deadlock if run one after the other."""
    first, second = anyio.Event(), anyio.Event()

    def waiting(name: str, mine: anyio.Event, theirs: anyio.Event) -> fg.Graph:
        g = fg.Graph(name)

        async def source() -> AsyncIterator[int]:
            mine.set()
            await theirs.wait()
            yield 1

        g.connect(g.source(source, name="src"), g.sink(discard, name="sink"))
        return g

    flow = fg.Flow()
    flow.add(waiting("one", first, second))
    flow.add(waiting("two", second, first))
    with anyio.fail_after(5):
        result = await flow.run()
    assert set(result.results) == {"one", "two"}


async def test_a_failed_graph_stops_its_followers_only_and_reaches_the_caller() -> None:
    """b fails: c (after b) never starts, d (independent) runs to the end, b's error is raised
    as it is, with notes naming the graph and what did not run."""
    log: list[str] = []
    a, _ = pipeline("a", log=log)
    b, _ = pipeline("b", fail_on=2, log=log)
    c, _ = pipeline("c", log=log)
    d, kept_d = pipeline("d", items=50, log=log)
    flow = fg.Flow("nightly")
    flow.add(a)
    flow.add(b, after=a)
    flow.add(c, after=b)
    flow.add(d)
    with pytest.raises(
        fg.NodeError,
        match=r"(?m)^node 'work' failed on item 2; last error: ValueError: b cannot take 2$",
    ) as caught:
        await flow.run()
    assert caught.value.__notes__ == [
        "flowgraph: graph 'b' of flow 'nightly' failed",
        "flowgraph: so 'c' did not run (flow 'nightly')",
    ]
    assert "c starts" not in log
    assert kept_d == list(range(50))


async def test_several_failures_are_raised_together() -> None:
    """Two graphs fail: an ExceptionGroup holds both errors, each noted with its graph."""
    a, _ = pipeline("a", fail_on=0)
    b, _ = pipeline("b", fail_on=1)
    flow = fg.Flow("pair")
    flow.add(a)
    flow.add(b)
    with pytest.raises(
        ExceptionGroup, match=r"^2 graphs of flow 'pair' failed: 'a', 'b'$"
    ) as caught:
        await flow.run()
    errors = caught.value.exceptions
    assert [str(e) for e in errors] == [
        "node 'work' failed on item 0; last error: ValueError: a cannot take 0",
        "node 'work' failed on item 1; last error: ValueError: b cannot take 1",
    ]
    assert all(isinstance(e, fg.NodeError) for e in errors)


def test_fg_run_runs_a_flow_in_a_new_event_loop(backend: str) -> None:
    """fg.run(flow) returns the FlowResult, on either backend."""
    a, _ = pipeline("a")
    b, kept_b = pipeline("b")
    flow = fg.Flow()
    flow.add(a)
    flow.add(b, after=a)
    result = fg.run(flow, backend=backend)
    assert isinstance(result, fg.FlowResult)
    assert result["a"].graph == "a"
    assert kept_b == [0, 1, 2, 3, 4]


# -- side graphs fed by hooks ---------------------------------------------------------------


def main_and_side(
    items: int,
    *,
    buffer: int = 1000,
    when_full: Any = "drop",
    store: Any = None,
    use_send: bool = False,
) -> tuple[fg.Graph, fg.Graph, fg.Inlet, list[int]]:
    """main: odd numbers fail and are skipped; a hook sends each failure to side's inlet."""
    main = fg.Graph("main")
    delivered: list[int] = []

    async def check(x: int) -> int:
        if x % 2:
            raise ValueError(f"odd {x}")
        return x

    async def deliver(x: int) -> None:
        delivered.append(x)

    main.chain(
        main.source(range(items), name="numbers"),
        main.transform(check, on_error="skip"),
        main.sink(deliver),
    )
    side = fg.Graph("side")
    failed = side.inlet("failed", buffer=buffer, when_full=when_full)
    side.connect(failed, side.sink(store, name="store"))
    if use_send:

        @main.on(fg.ItemFailed)
        async def keep_failure(event: fg.ItemFailed) -> None:
            await failed.send(event.failure.item)

    else:

        @main.on(fg.ItemFailed)
        def keep_failure_now(event: fg.ItemFailed) -> None:
            failed.send_nowait(event.failure.item)

    return main, side, failed, delivered


async def test_a_side_graph_stores_what_the_main_one_failed_on() -> None:
    """Every failure reaches the side graph, which ends when main ends."""
    stored: list[int] = []

    async def store(x: int) -> None:
        stored.append(x)

    main, side, failed, delivered = main_and_side(100, store=store)
    flow = fg.Flow()
    flow.add(main)
    flow.add(side, alongside=main)
    with anyio.fail_after(5):
        result = await flow.run()
    assert delivered == list(range(0, 100, 2))
    assert sorted(stored) == list(range(1, 100, 2))
    assert result["side"].statistics["failed"].items_out == 50
    assert (failed.delivered, failed.dropped) == (50, 0)


async def test_a_failing_side_graph_never_stops_the_main_one() -> None:
    """side fails on its third item: main still delivers everything, later failures are
    dropped and counted, and side's error reaches the caller at the end."""
    stored: list[int] = []

    async def store(x: int) -> None:
        if len(stored) == 2:
            raise OSError("disk full")
        stored.append(x)

    main, side, failed, delivered = main_and_side(1000, store=store)
    flow = fg.Flow("jobs")
    flow.add(main)
    flow.add(side, alongside=main)
    with pytest.raises(
        fg.NodeError, match=r"(?m)^node 'store' failed on item 5; last error: OSError: disk full$"
    ) as caught:
        await flow.run()
    assert caught.value.__notes__ == ["flowgraph: graph 'side' of flow 'jobs' failed"]
    assert delivered == list(range(0, 1000, 2))
    assert stored == [1, 3]
    assert failed.delivered + failed.dropped == 500


async def test_a_full_inlet_drops_and_counts_with_a_few_warnings(
    virtual_clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A side graph too slow for the failures: the buffer fills, the rest is dropped and
    counted; five warnings, then one count; main is never held up."""
    gate = anyio.Event()
    stored: list[int] = []

    async def store(x: int) -> None:
        await gate.wait()
        stored.append(x)

    main, side, failed, delivered = main_and_side(200, buffer=10, store=store)
    flow = fg.Flow()
    flow.add(main)
    flow.add(side, alongside=main)
    caplog.set_level(logging.WARNING, logger="flowgraph")

    async def open_gate_when_main_ends(event: fg.RunFinished) -> None:
        gate.set()

    main.on(fg.RunFinished)(open_gate_when_main_ends)
    await flow.run()
    assert delivered == list(range(0, 200, 2))
    # The sink holds one item, its input buffer 16 more, the inlet 10: the rest is dropped.
    assert failed.delivered == len(stored)
    assert failed.dropped == 100 - failed.delivered
    assert failed.dropped > 50
    drops = [r.getMessage() for r in caplog.records if r.getMessage().startswith("inlet")]
    assert drops[:5] == [
        "inlet 'failed' of graph 'side' is full (10 items): dropped an item"
    ] * 4 + [
        "inlet 'failed' of graph 'side' is full (10 items): dropped an item "
        "(further drops are counted once a minute)"
    ]
    assert drops[5:] == [
        f"inlet 'failed' of graph 'side' dropped {failed.dropped - 5} more item(s)"
    ]


async def test_when_full_wait_holds_up_only_the_async_hook(virtual_clock: VirtualClock) -> None:
    """await inlet.send() waits for room: nothing is dropped, main still finishes."""
    stored: list[int] = []

    async def store(x: int) -> None:
        await anyio.sleep(1)
        stored.append(x)

    main, side, failed, delivered = main_and_side(
        100, buffer=2, when_full="wait", store=store, use_send=True
    )
    flow = fg.Flow()
    flow.add(main)
    flow.add(side, alongside=main)
    await flow.run()
    assert delivered == list(range(0, 100, 2))
    assert sorted(stored) == list(range(1, 100, 2))
    assert failed.dropped == 0


async def test_a_side_graph_does_not_run_if_its_main_one_does_not() -> None:
    """main follows a graph that fails: neither main nor its side graph runs; the inlet is
    closed, so a late send is dropped rather than buffered for nobody."""
    broken, _ = pipeline("broken", fail_on=0)
    main, side, failed, delivered = main_and_side(10, store=lambda x: None)
    flow = fg.Flow()
    flow.add(broken)
    flow.add(main, after=broken)
    flow.add(side, alongside=main)
    with pytest.raises(fg.NodeError) as caught:
        await flow.run()
    assert caught.value.__notes__[1] == "flowgraph: so 'main', 'side' did not run (flow 'flow')"
    assert delivered == []
    assert failed.send_nowait(1) is False
    assert failed.dropped == 1


async def test_stopping_a_flow_drains_what_runs_and_starts_nothing_more(
    virtual_clock: VirtualClock,
) -> None:
    """stop(): main's sources stop and it drains; its side graph finishes what its inlet
    holds; the graph after main does not start."""

    main = fg.Graph("main")

    async def ticks() -> AsyncIterator[int]:
        n = 0
        while True:
            await anyio.sleep(1)
            yield n
            n += 1

    async def check(x: int) -> int:
        await anyio.sleep(2)
        raise ValueError(x)

    main.connect(main.source(ticks, name="ticks"), main.sink(check, on_error="skip", workers=8))
    side = fg.Graph("side")
    failed = side.inlet("failed")
    stored: list[int] = []

    async def store(x: int) -> None:
        await anyio.sleep(5)
        stored.append(x)

    side.connect(failed, side.sink(store))

    @main.on(fg.ItemFailed)
    def keep_failure(event: fg.ItemFailed) -> None:
        failed.send_nowait(event.failure.item)

    later, kept = pipeline("later")
    flow = fg.Flow()
    flow.add(main)
    flow.add(side, alongside=main)
    flow.add(later, after=main)
    async with open_flow(flow) as running:
        await anyio.sleep(10.5)
        running.stop()
    result = running.result
    assert result.stopped
    assert result.not_run == ("later",)
    assert result["main"].stopped
    assert not result["side"].stopped
    assert sorted(stored) == list(range(10))
    assert kept == []


# -- declaring a flow -----------------------------------------------------------------------


def test_bad_flows_are_refused_when_declared() -> None:
    """Every mistake in add() is a GraphError naming the graph and the fix."""
    a, _ = pipeline("a")
    flow = fg.Flow("f")
    flow.add(a)
    with pytest.raises(
        fg.GraphError,
        match=r"^flow 'f' already has a graph named 'a': graphs of a flow need names of their own$",
    ):
        flow.add(pipeline("a")[0])
    with pytest.raises(
        fg.GraphError,
        match=r"^graph 'b' refers to <Graph 'x': 3 nodes>, which is not in flow 'f': add it first$",
    ):
        flow.add(pipeline("b")[0], after=pipeline("x")[0])
    with pytest.raises(fg.GraphError, match=r"^a flow runs graphs \(got 'a'\)$"):
        flow.add("a")  # type: ignore[arg-type]
    side = fg.Graph("side")
    side.connect(side.inlet("failed"), side.sink(discard, name="store"))
    with pytest.raises(
        fg.GraphError,
        match=r"^graph 'side' has inlets \('failed'\): add it with alongside= the graph that feeds them, so that its input ends when that graph ends$",
    ):
        flow.add(side)
    with pytest.raises(fg.GraphError, match=r"^flow name must be a non-empty string \(got ''\)$"):
        fg.Flow("")


async def test_a_graph_that_cannot_run_is_refused_before_any_starts() -> None:
    """A dangling node in the last graph fails the flow before the first graph runs."""
    log: list[str] = []
    a, _ = pipeline("a", log=log)
    bad = fg.Graph("bad")
    bad.source(range(3), name="lonely")
    flow = fg.Flow()
    flow.add(a)
    flow.add(bad, after=a)
    with pytest.raises(
        fg.GraphError, match=r"^source 'lonely' has no downstream: connect it to a node$"
    ):
        await flow.run()
    assert log == []
    with pytest.raises(fg.GraphError, match=r"^flow 'empty' has no graphs$"):
        await fg.Flow("empty").run()


def test_progress_is_refused_for_a_flow() -> None:
    """The live table shows one graph; a flow is refused before its loop starts."""
    flow = fg.Flow()
    flow.add(pipeline("a")[0])
    with pytest.raises(fg.GraphError, match=r"^progress=True shows the run of one graph"):
        fg.run(flow, progress=True)
