"""Checked by mypy, never run: the public API keeps the types users give it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from typing import Any, assert_type

import flowgraph as fg

graph = fg.Graph("typing")


@graph.source
async def numbers() -> AsyncIterator[int]:
    yield 1


@graph.transform(workers=4, retry=fg.Retry(attempts=3), rate=fg.Rate(10, per=1.0))
async def double(x: int) -> int:
    return 2 * x


@graph.transform
def parse(raw: str) -> dict[str, str]:
    return {"raw": raw}


@graph.sink
async def store(x: int) -> None:
    pass


keeps_signature: Callable[[int], Coroutine[Any, Any, int]] = double
assert_type(parse("x"), dict[str, str])
graph.chain(numbers, double, store)


async def in_a_loop() -> None:
    assert_type(await double(2), int)
    result = await graph.run()
    assert_type(result, fg.RunResult)
    assert_type(result.statistics["double"], fg.NodeStatistics)
    async with fg.open_run(graph) as run:
        assert_type(run, fg.Run)
        assert_type(run.statistics(), fg.RunStatistics)


def from_a_script() -> None:
    result = fg.run(graph, backend="trio")
    assert_type(result, fg.RunResult)
    assert_type(result.statistics["store"].items_in, int)


async def new_events(after: int | None) -> list[fg.Positioned]:
    return [fg.Positioned({"id": 1}, position=1)]


daemon = fg.Graph("daemon")
events = daemon.source(fg.poll(new_events, every=60, until_empty=True), checkpoint=True)
cron_events = daemon.source(fg.poll(new_events, schedule="*/5 * * * *"), checkpoint=True)
rows = daemon.sink(fg.Upsert("sqlite:///target.db", "events", key="id"), workers=2)
daemon.connect(events, rows)
daemon.connect(cron_events, rows)
assert_type(fg.Positioned(1, position=2).position, Any)

defaults = fg.Graph("defaults", buffer=100, workers=4, retry=fg.Retry(attempts=2))
options: fg.TransformOptions = {"workers": 8, "buffer": 64}
configured = defaults.transform(parse, **options)
assert_type(configured("x"), dict[str, str])
run_options: fg.RunOptions = {"log_interval": 5.0}


@graph.after(double, "store")
async def merge(statistics: Mapping[str, fg.NodeStatistics]) -> None:
    pass


barrier_keeps_signature: Callable[[Mapping[str, fg.NodeStatistics]], Coroutine[Any, Any, None]] = (
    merge
)
assert_type(graph.barriers["merge"], fg.Barrier)
side = fg.Graph("side")
failed = side.inlet("failed", buffer=100, when_full="wait")
side.connect(failed, side.sink(store, name="keep"))
assert_type(failed.send_nowait(1), bool)
flow = fg.Flow("nightly")
flow.add(graph)
flow.add(side, alongside=graph, after=[daemon])


async def a_flow() -> None:
    assert_type(await failed.send(2), bool)
    assert_type(await flow.run(replay_dead_letters=True), fg.FlowResult)


def a_flow_from_a_script() -> None:
    assert_type(fg.run(flow, state="sqlite:///state.db"), fg.FlowResult)
    assert_type(fg.run(graph, replay_dead_letters=True), fg.RunResult)
