"""Sources with policies: retry, rate, timeout and on_error work on sources as on transforms (#16)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

import flowgraph as fg
from flowgraph.testing import VirtualClock


def collected(g: fg.Graph) -> tuple[fg.Node[..., Any], list[Any]]:
    seen: list[Any] = []

    async def keep(x: Any) -> None:
        seen.append(x)

    return g.sink(keep), seen


class Store:
    """An in-memory checkpoint store."""

    every, interval = 1, 60.0

    def __init__(self) -> None:
        self.positions: dict[str, Any] = {}

    async def load(self, graph: str) -> dict[str, Any]:
        return dict(self.positions)

    async def commit(self, graph: str, positions: Any) -> None:
        self.positions.update(positions)


async def test_a_checkpointed_source_retries_after_the_last_item_it_emitted() -> None:
    """A source that fails half-way is opened again after its last position: nothing twice."""
    opened: list[int | None] = []

    async def pages(after: int | None) -> AsyncIterator[fg.Positioned]:
        opened.append(after)
        start = 0 if after is None else after + 1
        for i in range(start, 10):
            if i == 4 and len(opened) == 1:
                raise ConnectionError("dropped")
            yield fg.Positioned(i, position=i)

    g = fg.Graph("resume")
    sink, seen = collected(g)
    src = g.source(pages, checkpoint=True, retry=fg.Retry(attempts=3, initial=0.001))
    g.connect(src, sink)
    result = await g.run(checkpoints=Store())
    assert seen == list(range(10))
    assert opened == [None, 3]
    assert result.statistics["pages"].retries == 1


async def test_a_plain_source_that_failed_after_emitting_is_not_rerun() -> None:
    """Running it again would emit its items twice: on_error applies, and what it emitted drains."""
    runs = 0

    async def numbers() -> AsyncIterator[int]:
        nonlocal runs
        runs += 1
        yield 1
        yield 2
        raise ValueError("broken feed")

    g = fg.Graph("partial")
    sink, seen = collected(g)
    g.connect(g.source(numbers, retry=fg.Retry(attempts=3, initial=0.001), on_error="skip"), sink)
    result = await g.run()
    assert runs == 1
    assert seen == [1, 2]
    stats = result.statistics["numbers"]
    assert (stats.errors, stats.skipped, stats.retries, stats.items_out) == (1, 1, 0, 2)


async def test_an_idempotent_source_is_run_again_from_the_start() -> None:
    """idempotent=True says a re-run is harmless: its items come again."""
    runs = 0

    async def numbers() -> AsyncIterator[int]:
        nonlocal runs
        runs += 1
        yield 1
        if runs < 3:
            raise ValueError("flaky")
        yield 2

    g = fg.Graph("idempotent")
    sink, seen = collected(g)
    g.connect(g.source(numbers, retry=fg.Retry(attempts=3, initial=0.001), idempotent=True), sink)
    await g.run()
    assert seen == [1, 1, 1, 2]


async def test_a_source_that_fails_before_any_item_is_retried() -> None:
    """Nothing was emitted yet, so the retry policy applies as for any call."""
    runs = 0

    async def numbers() -> AsyncIterator[int]:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise ConnectionError("refused")
        yield 5

    g = fg.Graph("before")
    sink, seen = collected(g)
    g.connect(g.source(numbers, retry=fg.Retry(attempts=2, initial=0.001)), sink)
    await g.run()
    assert seen == [5]


async def test_a_source_stuck_on_an_item_times_out(virtual_clock: VirtualClock) -> None:
    """timeout= bounds the wait for each next item; the source then fails per on_error."""

    async def stalls() -> AsyncIterator[int]:
        yield 1
        await anyio.sleep(3600)
        yield 2

    g = fg.Graph("stall")
    sink, seen = collected(g)
    g.connect(g.source(stalls, timeout=5, on_error="skip"), sink)
    result = await g.run()
    assert seen == [1]
    assert anyio.current_time() == pytest.approx(5.0)
    assert result.statistics["stalls"].skipped == 1


async def test_a_source_rate_spaces_its_items(virtual_clock: VirtualClock) -> None:
    """rate= limits how fast a source's items are taken."""
    g = fg.Graph("paced")
    sink, seen = collected(g)
    g.connect(g.source(range(6), name="src", rate=fg.Rate(2, per=1.0)), sink)
    await g.run()
    assert seen == list(range(6))
    assert anyio.current_time() >= 2.0


async def test_a_source_failure_without_policies_still_fails_the_run() -> None:
    """The default stays fail-fast, naming how far the source got."""

    async def broken() -> AsyncIterator[int]:
        yield 1
        raise RuntimeError("gone")

    g = fg.Graph("default")
    sink, _ = collected(g)
    g.connect(g.source(broken, retry=fg.Retry(attempts=2, initial=0.001)), sink)
    with pytest.raises(
        fg.NodeError,
        match=r"^source 'broken' failed after producing 1 item; last error: RuntimeError: gone$",
    ):
        await g.run()
