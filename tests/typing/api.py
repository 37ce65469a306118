"""Checked by mypy, never run: the public API keeps the types users give it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
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
