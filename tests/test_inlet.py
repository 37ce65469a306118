"""Inlets: a source fed from outside while its graph runs, that never holds up its sender."""

from __future__ import annotations

from typing import Literal

import anyio
import pytest

import flowgraph as fg


def discard(item: object) -> None:
    """A sink that keeps nothing."""


def side(
    buffer: int = 4, when_full: Literal["drop", "wait"] = "drop"
) -> tuple[fg.Graph, fg.Inlet, list[int]]:
    g = fg.Graph("side")
    inlet = g.inlet("failed", buffer=buffer, when_full=when_full)
    kept: list[int] = []

    async def keep(x: int) -> None:
        kept.append(x)

    g.connect(inlet, g.sink(keep))
    return g, inlet, kept


async def test_items_sent_while_the_graph_runs_go_through_until_close() -> None:
    """send_nowait and send hand items in; close() ends the source once it has drained."""
    g, inlet, kept = side(buffer=100)
    async with fg.open_run(g) as run:
        assert inlet.send_nowait(1) is True
        assert await inlet.send(2) is True
        inlet.close()
    assert kept == [1, 2]
    assert run.result.statistics["failed"].items_out == 2
    assert (inlet.delivered, inlet.dropped) == (2, 0)


async def test_a_full_buffer_drops_and_never_waits() -> None:
    """With nobody reading fast enough, send_nowait returns False and counts the drop."""
    g, inlet, kept = side(buffer=2)
    async with fg.open_run(g):
        results = [inlet.send_nowait(n) for n in range(5)]
        inlet.close()
    assert results == [True, True, False, False, False]
    assert kept == [0, 1]
    assert (inlet.delivered, inlet.dropped) == (2, 3)


async def test_when_full_wait_makes_send_wait_for_room() -> None:
    """await send() waits while the buffer is full; every item arrives."""
    g, inlet, kept = side(buffer=1, when_full="wait")
    async with fg.open_run(g):
        for n in range(20):
            assert await inlet.send(n) is True
        inlet.close()
    assert kept == list(range(20))
    assert inlet.dropped == 0


async def test_sends_outside_a_run_are_dropped_and_each_run_opens_it_again() -> None:
    """No run reading: dropped. The next run opens a fresh buffer and ends at its close()."""
    g, inlet, kept = side()
    assert inlet.send_nowait("early") is False
    for run in range(2):
        async with fg.open_run(g):
            inlet.send_nowait(run)
            inlet.close()
        assert inlet.send_nowait("late") is False
    assert kept == [0, 1]
    assert inlet.dropped == 3


async def test_items_left_when_the_run_ends_are_counted_as_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A run stopped while its inlet still holds items drops them, counted, with a warning;
    a sender waiting for room is woken and its item dropped."""
    gate = anyio.Event()

    async def slow(x: object) -> None:
        await gate.wait()

    g = fg.Graph("slow")
    inlet = g.inlet("failed", buffer=3, when_full="wait")
    g.connect(inlet, g.sink(slow, buffer=0))

    async def blocked() -> None:
        assert await inlet.send("waiting") is False

    async with anyio.create_task_group() as tg, fg.open_run(g) as run:
        # One item in the sink, one held by the source, three in the inlet, one sender waiting.
        for n in range(5):
            assert inlet.send_nowait(n)
            await anyio.wait_all_tasks_blocked()
        tg.start_soon(blocked)
        await anyio.wait_all_tasks_blocked()
        run.stop(grace=0)
    assert inlet.dropped == 4
    assert (
        "inlet 'failed' of graph 'slow' ended with 3 item(s) not taken: dropped" in caplog.messages
    )


async def test_an_inlet_feeds_one_run_at_a_time() -> None:
    """Two concurrent runs of its graph would split its items: the second one fails."""
    g, _, _ = side()
    with pytest.raises(
        fg.NodeError,
        match=r"^source 'failed' failed after producing 0 items; last error: RuntimeError: inlet 'failed' feeds one run at a time$",
    ):
        async with fg.open_run(g), fg.open_run(g):
            pass


def test_bad_inlets_are_refused_when_declared() -> None:
    """Buffer, policy and name are checked at once."""
    g = fg.Graph("g")
    with pytest.raises(fg.GraphError, match=r"^inlet 'x' buffer must be an int >= 1 \(got 0\)$"):
        g.inlet("x", buffer=0)
    with pytest.raises(
        fg.GraphError, match=r"^inlet 'x' when_full must be 'drop' or 'wait' \(got 'block'\)$"
    ):
        g.inlet("x", when_full="block")  # type: ignore[arg-type]
    g.inlet("x")
    with pytest.raises(fg.GraphError, match=r"^graph 'g' already has a node named 'x'"):
        g.inlet("x")
    other = fg.Graph("other").inlet("y")
    with pytest.raises(fg.GraphError, match=r"^node 'y' belongs to graph 'other'$"):
        g.connect(other, g.sink(discard, name="s"))
    assert repr(other) == "<Inlet 'y' of graph 'other': buffer=1000>"
