"""Generator nodes stream their outputs, under backpressure, and fail honestly (#15)."""

from __future__ import annotations

import threading
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import pytest

import flowgraph as fg
from flowgraph.testing import VirtualClock


async def test_outputs_go_downstream_as_they_are_yielded(virtual_clock: VirtualClock) -> None:
    """Three outputs yielded 0.2 s apart arrive at 0.2, 0.4 and 0.6 s, not all at the end."""
    g = fg.Graph("stream")

    async def spaced(x: int) -> AsyncIterator[int]:
        for n in range(3):
            await anyio.sleep(0.2)
            yield n

    arrivals: list[float] = []

    async def keep(x: int) -> None:
        arrivals.append(round(anyio.current_time(), 6))

    g.chain(g.source([1], name="src"), g.transform(spaced), g.sink(keep))
    await g.run()
    assert arrivals == [0.2, 0.4, 0.6]


@pytest.mark.parametrize("executor", ["loop", "threads"])
async def test_statistics_count_a_generators_outputs_as_they_leave(
    virtual_clock: VirtualClock, executor: str
) -> None:
    """items_out grows while one item's generator runs, not only once it has ended: a
    flat-map reading a big file shows its progress."""

    async def slowly(x: int) -> AsyncIterator[int]:
        for i in range(10):
            await anyio.sleep(1)
            yield i

    def sync_slowly(x: int) -> Iterator[int]:
        yield from range(10)

    seen: list[int] = []
    fifth = anyio.Event()

    async def keep(x: int) -> None:
        seen.append(x)
        if len(seen) == 5:
            fifth.set()
        await anyio.sleep(1 if executor == "threads" else 0)

    g = fg.Graph("g")
    fn = slowly if executor == "loop" else sync_slowly
    g.chain(g.source([0], name="src"), g.transform(fn, name="rows"), g.sink(keep, buffer=1))
    async with fg.open_run(g) as run:
        await fifth.wait()
        out = run.statistics()["rows"].items_out
        assert 5 <= out < 10
    assert run.statistics()["rows"].items_out == 10


async def test_a_sync_generator_in_a_thread_streams_too() -> None:
    """A sync generator's first output reaches the sink before the generator yields the next."""
    first_seen = threading.Event()

    def rows(x: int) -> Iterator[int]:
        yield 1
        assert first_seen.wait(5), "the first output was held back"
        yield 2

    seen: list[int] = []

    async def keep(x: int) -> None:
        seen.append(x)
        first_seen.set()

    g = fg.Graph("thread-stream")
    g.chain(g.source([0], name="src"), g.transform(rows), g.sink(keep))
    with anyio.fail_after(10):
        result = await g.run()
    assert seen == [1, 2]
    assert result.statistics["rows"].items_out == 2


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_one_item_with_many_outputs_holds_few_in_memory(kind: str) -> None:
    """50,000 outputs of 1 KiB from one item never sit in memory together (flat memory)."""
    count, size = 50_000, 1024

    async def many_async(x: int) -> AsyncIterator[bytes]:
        for _ in range(count):
            yield bytes(size)

    def many_sync(x: int) -> Iterator[bytes]:
        for _ in range(count):
            yield bytes(size)

    total = 0

    async def consume(row: bytes) -> None:
        nonlocal total
        total += len(row)

    g = fg.Graph("memory")
    fn = many_async if kind == "async" else many_sync
    g.chain(g.source([0], name="src"), g.transform(fn, name="many"), g.sink(consume, buffer=64))
    tracemalloc.start()
    try:
        await g.run()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == count * size
    assert peak < 5 * 1024 * 1024  # holding them all would take 50 MiB


def _two_then_fail() -> tuple[Any, list[int]]:
    attempts: list[int] = []

    async def partial(x: int) -> AsyncIterator[int]:
        attempts.append(x)
        yield 1
        yield 2
        raise ValueError("lost the connection")

    return partial, attempts


async def test_a_generator_that_failed_after_sending_is_not_rerun() -> None:
    """A retry would send the first outputs twice: on_error applies instead, with the count."""
    partial, attempts = _two_then_fail()
    failures: list[fg.Failure] = []
    g = fg.Graph("partial")
    seen: list[int] = []

    async def keep(x: int) -> None:
        seen.append(x)

    g.chain(
        g.source([7], name="src"),
        g.transform(partial, retry=fg.Retry(attempts=3, initial=0.001), on_error="skip"),
        g.sink(keep),
    )
    g.on(fg.ItemFailed)(lambda event: failures.append(event.failure))
    result = await g.run()
    assert attempts == [7]
    assert seen == [1, 2]
    stats = result.statistics["partial"]
    assert (stats.retries, stats.skipped, stats.items_out) == (0, 1, 2)
    assert isinstance(failures[0].error, ValueError)
    assert failures[0].error.__notes__ == [
        "flowgraph: 2 output(s) of this item were sent before it failed"
    ]


async def test_an_idempotent_generator_is_rerun_from_the_start() -> None:
    """idempotent=True lets a retry run the generator again, resending what it sent."""
    partial, attempts = _two_then_fail()
    g = fg.Graph("idempotent")
    seen: list[int] = []

    async def keep(x: int) -> None:
        seen.append(x)

    g.chain(
        g.source([7], name="src"),
        g.transform(
            partial, retry=fg.Retry(attempts=3, initial=0.001), on_error="skip", idempotent=True
        ),
        g.sink(keep),
    )
    result = await g.run()
    assert attempts == [7, 7, 7]
    assert seen == [1, 2] * 3
    assert result.statistics["partial"].retries == 2


async def test_a_generator_that_fails_before_its_first_output_is_retried() -> None:
    """Nothing was sent yet, so the retry policy applies as for any call."""
    tries = 0

    async def flaky(x: int) -> AsyncIterator[int]:
        nonlocal tries
        tries += 1
        if tries == 1:
            raise ConnectionError("reset")
        yield x

    g = fg.Graph("before")
    seen: list[int] = []

    async def keep(x: int) -> None:
        seen.append(x)

    g.chain(
        g.source([3], name="src"),
        g.transform(flaky, retry=fg.Retry(attempts=2, initial=0.001)),
        g.sink(keep),
    )
    result = await g.run()
    assert seen == [3]
    assert result.statistics["flaky"].retries == 1


async def test_waiting_for_room_downstream_does_not_count_against_a_timeout(
    virtual_clock: VirtualClock,
) -> None:
    """A generator blocked by a slow sink for 5 s does not time out at 1 s; its own work does."""

    async def quick(x: int) -> AsyncIterator[int]:
        for n in range(10):
            yield n

    async def slow_to_make(x: int) -> AsyncIterator[int]:
        yield 0
        await anyio.sleep(2)
        yield 1

    async def slow_sink(x: int) -> None:
        await anyio.sleep(0.5)

    g = fg.Graph("backpressure")
    src = g.source([1], name="src")
    fast = g.transform(quick, timeout=1.0)
    slow = g.transform(slow_to_make, timeout=1.0, on_error="skip")
    g.connect(src, fast, slow)
    g.connect(fast, g.sink(slow_sink, buffer=0))
    g.connect(slow, g.sink(slow_sink, name="other", buffer=0))
    result = await g.run()
    assert result.statistics["quick"].items_out == 10
    assert result.statistics["quick"].errors == 0
    assert result.statistics["slow_to_make"].skipped == 1
