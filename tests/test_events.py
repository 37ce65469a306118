"""Lifecycle hooks: called at the right moments, isolated from the run, side work awaited."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import pytest

import flowgraph as fg


def small_graph(fail_on: int | None = None, on_error: Any = "raise") -> fg.Graph:
    g = fg.Graph("hooks")

    async def check(x: int) -> int:
        if x == fail_on:
            raise ValueError(f"bad {x}")
        return x

    async def sink(x: int) -> None:
        pass

    g.chain(g.source(range(5), name="src"), g.transform(check, on_error=on_error), g.sink(sink))
    return g


async def test_lifecycle_events_arrive_in_order() -> None:
    """Run and node events fire once each, run started first and run finished last."""
    g = small_graph()
    seen: list[str] = []
    for kind in (fg.RunStarted, fg.NodeStarted, fg.NodeFinished, fg.RunFinished):

        @g.on(kind)
        def record(event: Any) -> None:
            seen.append(type(event).__name__ + (f":{event.node}" if hasattr(event, "node") else ""))

    result = await g.run()
    assert seen[0] == "RunStarted"
    assert seen[-1] == "RunFinished"
    assert sorted(seen[1:4]) == ["NodeStarted:check", "NodeStarted:sink", "NodeStarted:src"]
    assert sorted(s for s in seen if s.startswith("NodeFinished")) == [
        "NodeFinished:check",
        "NodeFinished:sink",
        "NodeFinished:src",
    ]
    assert seen.index("NodeFinished:src") < seen.index("NodeFinished:sink")
    assert result.statistics["sink"].items_in == 5


async def test_node_finished_carries_final_statistics() -> None:
    """NodeFinished holds the node's final counts."""
    g = small_graph()
    finished: dict[str, fg.NodeStatistics] = {}

    @g.on(fg.NodeFinished)
    def record(event: fg.NodeFinished) -> None:
        finished[event.node] = event.statistics

    await g.run()
    assert finished["check"].items_out == 5
    assert finished["check"].finished


async def test_item_failed_reports_skips() -> None:
    """ItemFailed fires for a skipped item with the action taken."""
    g = small_graph(fail_on=3, on_error="skip")
    failures: list[fg.ItemFailed] = []
    g.on(fg.ItemFailed)(failures.append)
    await g.run()
    assert [(f.failure.node, f.failure.item, f.action) for f in failures] == [("check", 3, "skip")]


async def test_item_dead_lettered_fires_after_the_handler() -> None:
    """ItemDeadLettered fires once the failure handler has taken the item."""
    stored: list[Any] = []

    class Store:
        async def handle(self, failure: fg.Failure) -> None:
            stored.append(failure.item)

    g = small_graph(fail_on=2, on_error=Store())
    events: list[Any] = []

    @g.on(fg.ItemDeadLettered)
    def record(event: fg.ItemDeadLettered) -> None:
        events.append((event.failure.item, list(stored)))

    await g.run()
    assert events == [(2, [2])]


async def test_failing_hooks_never_break_the_run(caplog: pytest.LogCaptureFixture) -> None:
    """Sync and async hooks that raise are logged; the run still delivers everything."""
    g = small_graph()

    @g.on(fg.NodeFinished)
    def sync_boom(event: fg.NodeFinished) -> None:
        raise RuntimeError("sync hook broke")

    @g.on(fg.RunStarted)
    async def async_boom(event: fg.RunStarted) -> None:
        raise RuntimeError("async hook broke")

    with caplog.at_level(logging.ERROR, logger="flowgraph.hooks"):
        result = await g.run()
    assert result.statistics["sink"].items_in == 5
    messages = [r.getMessage() for r in caplog.records if r.name == "flowgraph.hooks"]
    assert any("failed on NodeFinished" in m for m in messages)
    assert any("failed on RunStarted" in m for m in messages)


async def test_async_hooks_and_side_work_finish_before_run_returns() -> None:
    """Side work started from a hook runs in the run's task group and is waited for."""
    g = small_graph(fail_on=1, on_error="skip")
    logged: list[Any] = []

    async def write_to_side_store(item: Any) -> None:
        await anyio.sleep(0.05)
        logged.append(item)

    @g.on(fg.ItemFailed)
    def side_pipeline(event: fg.ItemFailed) -> None:
        event.run.start_soon(write_to_side_store, event.failure.item)

    @g.on(fg.NodeFinished)
    async def slow_hook(event: fg.NodeFinished) -> None:
        await anyio.sleep(0.02)
        logged.append(event.node)

    await g.run()
    assert sorted(map(str, logged)) == ["1", "check", "sink", "src"]


async def test_side_work_errors_are_isolated(caplog: pytest.LogCaptureFixture) -> None:
    """Side work that raises is logged and the run completes."""
    g = small_graph()

    async def broken() -> None:
        raise OSError("side store down")

    @g.on(fg.RunStarted)
    def start(event: fg.RunStarted) -> None:
        event.run.start_soon(broken)

    with caplog.at_level(logging.ERROR, logger="flowgraph"):
        result = await g.run()
    assert result.statistics["sink"].items_in == 5
    assert any("side work" in r.getMessage() for r in caplog.records)


async def test_run_finished_reports_the_error_of_a_failed_run() -> None:
    """RunFinished fires even when the run fails, carrying the error."""
    g = small_graph(fail_on=0)
    finished: list[fg.RunFinished] = []
    g.on(fg.RunFinished)(finished.append)
    with pytest.raises(fg.NodeError):
        await g.run()
    assert len(finished) == 1
    assert isinstance(finished[0].error, fg.NodeError)
    assert finished[0].result is None


async def test_hooks_passed_to_open_run_add_to_the_graphs() -> None:
    """open_run(hooks=...) registers hooks for this run only."""
    g = small_graph()
    seen: list[str] = []
    async with fg.open_run(g, hooks=[(fg.RunStarted, lambda e: seen.append("run"))]):
        pass
    await g.run()
    assert seen == ["run"]


def test_hooking_an_unknown_event_is_refused() -> None:
    """Only flowgraph's events can be hooked."""
    g = fg.Graph("g")
    with pytest.raises(fg.GraphError, match=r"^cannot hook <class 'int'>: events are RunStarted, "):
        g.on(int)(print)  # type: ignore[type-var]


async def test_start_soon_outside_a_run_is_refused() -> None:
    """Side work needs a running run."""
    g = small_graph()
    async with fg.open_run(g) as run:
        pass
    with pytest.raises(RuntimeError, match=r"^the run is not running: cannot start side work$"):
        run.start_soon(anyio.sleep, 0)
