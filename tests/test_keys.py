"""Per-key order: ordered="key" processes one item per key at a time, in arrival order (#15)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import flowgraph as fg
from flowgraph.testing import VirtualClock


@settings(max_examples=50)
@given(
    keys=st.lists(st.integers(0, 5), min_size=1, max_size=80),
    delays=st.lists(st.sampled_from([0.0, 0.001, 0.01, 0.05]), min_size=1, max_size=20),
    workers=st.integers(1, 8),
    buffer=st.sampled_from([1, 16, 64, 512]),
)
async def test_items_of_one_key_are_processed_in_arrival_order_one_at_a_time(
    virtual_clock: VirtualClock, keys: list[int], delays: list[float], workers: int, buffer: int
) -> None:
    """Random keys and durations with many workers: per-key sequences are kept, none overlap.

    Buffers from 1 to 512 carry chunks of 1 to 32 items: a chunk never ties its
    items to one worker."""
    items = list(enumerate(keys))
    running: set[int] = set()
    overlaps: list[int] = []
    order: dict[int, list[int]] = defaultdict(list)

    async def apply(item: tuple[int, int]) -> tuple[int, int]:
        index, key = item
        if key in running:
            overlaps.append(key)
        running.add(key)
        await anyio.sleep(delays[index % len(delays)])
        order[key].append(index)
        running.discard(key)
        return item

    done: list[tuple[int, int]] = []

    async def keep(item: tuple[int, int]) -> None:
        done.append(item)

    g = fg.Graph("keyed")
    g.chain(
        g.source(items, name="src"),
        g.transform(apply, workers=workers, ordered="key", key=lambda item: item[1], buffer=buffer),
        g.sink(keep),
    )
    result = await g.run()
    assert overlaps == []
    for key, indexes in order.items():
        assert indexes == [i for i, k in items if k == key]
    assert sorted(done) == items
    stats = result.statistics["apply"]
    assert (stats.items_in, stats.items_out, stats.queue_depth) == (len(items), len(items), 0)


@pytest.mark.parametrize("buffer", [1, 16, 256])
async def test_different_keys_run_in_parallel(virtual_clock: VirtualClock, buffer: int) -> None:
    """Four keys, four workers, one second each: four items take one second, not four,
    even when they arrive in one chunk."""

    async def slow(item: int) -> None:
        await anyio.sleep(1)

    g = fg.Graph("parallel")
    g.chain(
        g.source([0, 1, 2, 3], name="src"),
        g.sink(slow, workers=4, ordered="key", key=lambda x: x, buffer=buffer),
    )
    await g.run()
    assert anyio.current_time() == pytest.approx(1.0)


async def test_a_hot_key_shows_as_key_skew(virtual_clock: VirtualClock) -> None:
    """Items queued behind one key are counted: the largest queue is the node's key_skew."""

    async def slow(item: int) -> None:
        await anyio.sleep(1)

    g = fg.Graph("skew")
    g.chain(
        g.source([7] * 5 + [1, 2], name="src"),
        g.sink(slow, workers=3, ordered="key", key=lambda x: x),
    )
    result = await g.run()
    assert result.statistics["slow"].key_skew >= 3
    assert anyio.current_time() == pytest.approx(5.0)


async def test_a_key_function_that_fails_fails_its_item() -> None:
    """An item whose key cannot be computed gets the node's on_error like any failure."""
    seen: list[Any] = []

    async def keep(x: Any) -> None:
        seen.append(x)

    g = fg.Graph("badkey")
    g.chain(
        g.source([{"id": 1}, {}, {"id": 2}], name="src"),
        g.sink(keep, workers=2, ordered="key", key=lambda row: row["id"], on_error="skip"),
    )
    result = await g.run()
    assert sorted(row["id"] for row in seen) == [1, 2]
    assert result.statistics["keep"].skipped == 1


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"ordered": "key"}, r"^transform 'echo': ordered='key' and key= go together"),
        ({"key": lambda x: x}, r"^transform 'echo': ordered='key' and key= go together"),
        (
            {"ordered": "key", "key": lambda x: x, "batch": 10},
            r"^transform 'echo': ordered='key' keeps items apart; it cannot have batch=$",
        ),
        ({"ordered": "yes"}, r"^ordered of transform 'echo' must be True, False or 'key'"),
    ],
)
def test_keyed_order_is_declared_whole(options: dict[str, Any], message: str) -> None:
    """ordered='key' needs key=, and the other way round; batches have no keys."""

    async def echo(x: int) -> int:
        return x

    with pytest.raises(fg.GraphError, match=message):
        fg.Graph("g").transform(echo, **options)
