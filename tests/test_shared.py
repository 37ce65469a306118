"""Thousands of workers on one node: every item once, bounded, cancelled promptly (#18)."""

from __future__ import annotations

import gc
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import anyio
import anyio.lowlevel
from hypothesis import given, settings
from hypothesis import strategies as st

import flowgraph as fg
from flowgraph.testing import VirtualClock


async def test_five_thousand_workers_deliver_every_item_once(virtual_clock: VirtualClock) -> None:
    """5,000 workers awaiting I/O: 20,000 items, each exactly once, in four rounds of 10 ms."""
    seen: Counter[int] = Counter()

    async def slow(x: int) -> int:
        await anyio.sleep(0.01)
        return x

    async def keep(x: int) -> None:
        seen[x] += 1

    g = fg.Graph("wide")
    g.chain(
        g.source(range(20_000), name="src"),
        g.transform(slow, workers=5_000, buffer=100),
        g.sink(keep, buffer=100),
    )
    result = await g.run()
    assert seen == Counter(range(20_000))
    stats = result.statistics["slow"]
    assert (stats.items_in, stats.items_out, stats.busy, stats.queue_depth) == (
        20_000,
        20_000,
        0,
        0,
    )
    assert anyio.current_time() < 0.1


async def _cancel_seconds(start: Callable[[anyio.Event], Coroutine[Any, Any, None]]) -> float:
    """Seconds from cancelling a task group, once *start* has set its event, until it is done.

    Earlier measurements' garbage is collected first, so that it is not counted here.
    """
    started = anyio.Event()
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(start, started)
            await started.wait()
            gc.collect()
            cancelled_at = time.perf_counter()
            scope.cancel()
    return time.perf_counter() - cancelled_at


async def test_worker_tasks_start_as_load_needs_them(virtual_clock: VirtualClock) -> None:
    """A node declared with 5,000 workers that never sees more than ten items at once
    starts about ten worker tasks, not 5,000."""

    async def batches() -> AsyncIterator[int]:
        for n in range(100):
            if n % 10 == 0:
                await anyio.sleep(1)  # ten items at a time, each batch done before the next
            yield n

    async def call(x: int) -> int:
        await anyio.sleep(0.1)
        return x

    seen: list[int] = []

    async def keep(x: int) -> None:
        seen.append(x)

    g = fg.Graph("lazy")
    g.chain(g.source(batches, name="src"), g.transform(call, workers=5_000), g.sink(keep))
    async with fg.open_run(g) as run:
        pass
    assert sorted(seen) == list(range(100))
    started = run._nodes["call"].started
    assert 10 <= started <= 12, started


async def test_five_thousand_busy_workers_are_cancelled_about_as_fast_as_bare_tasks() -> None:
    """Cancelling a run whose 5,000 workers all wait takes about what cancelling 5,000 bare
    sleeping tasks takes (the floor: 0.1-0.4 s on this 2-core VM, depending on the backend)."""

    async def bare(started: anyio.Event) -> None:
        async def sleeper(n: int) -> None:
            if n == 4_999:
                started.set()
            await anyio.sleep_forever()

        async with anyio.create_task_group() as tg:
            for n in range(5_000):
                tg.start_soon(sleeper, n)

    async def graph(started: anyio.Event) -> None:
        async def forever() -> AsyncIterator[int]:
            n = 0
            while True:
                yield n
                n += 1

        busy = 0

        async def hang(x: int) -> int:
            nonlocal busy
            busy += 1
            if busy == 5_000:
                started.set()
            await anyio.sleep_forever()
            return x

        g = fg.Graph("cancel")
        g.chain(g.source(forever), g.transform(hang, workers=5_000), g.sink(discard, name="out"))
        await g.run()

    floor = min([await _cancel_seconds(bare) for _ in range(2)])
    flowgraph = await _cancel_seconds(graph)
    assert flowgraph < 2 * floor + 0.05


def discard(x: object) -> None:
    pass


@settings(max_examples=40)
@given(
    items=st.integers(0, 300),
    workers=st.integers(2, 64),
    buffer=st.sampled_from([0, 1, 16, 32, 100, 500]),
    pauses=st.lists(st.sampled_from([0, 1, 2]), min_size=1, max_size=8),
)
async def test_shared_input_loses_nothing_and_stays_bounded(
    items: int, workers: int, buffer: int, pauses: list[int]
) -> None:
    """Any worker count, buffer and pattern of waits: each item once; at most `workers` at work;
    never more than the buffer, a chunk and the workers between source and sink."""
    seen: Counter[int] = Counter()
    emitted = finished = working = most = 0
    high_water = 0

    async def numbers() -> AsyncIterator[int]:
        nonlocal emitted, high_water
        for i in range(items):
            emitted += 1
            high_water = max(high_water, emitted - finished)
            yield i

    async def work(x: int) -> int:
        nonlocal working, most
        working += 1
        most = max(most, working)
        for _ in range(pauses[x % len(pauses)]):
            await anyio.lowlevel.checkpoint()
        working -= 1
        return x

    async def keep(x: int) -> None:
        nonlocal finished
        seen[x] += 1
        finished += 1

    g = fg.Graph("bounded")
    g.chain(g.source(numbers), g.transform(work, workers=workers, buffer=buffer), g.sink(keep))
    await g.run()
    assert seen == Counter(range(items))
    assert most <= workers
    # In the work node's stream and queue, its workers, the sink's buffer and its worker, the
    # source's hand: everything the items can be in between emitted and finished.
    assert high_water <= buffer + 32 + workers + 16 + 1 + 2
