"""Edges carry chunks: a sender appends to its chunk in the stream until a receiver takes it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given
from hypothesis import strategies as st

import flowgraph as fg
from flowgraph._core._edges import Outlet, chunk_capacity, chunk_limit

if TYPE_CHECKING:
    from anyio.streams.memory import MemoryObjectReceiveStream


@given(buffer=st.integers(0, 100_000))
def test_chunks_never_let_more_than_buffer_items_wait(buffer: int) -> None:
    """Full chunks in the stream plus the rest of one in hand (or queued for the node's
    other workers) stay within the buffer."""
    limit = chunk_limit(buffer)
    capacity = chunk_capacity(buffer, limit)
    assert limit >= 1
    assert capacity >= 0
    assert capacity * limit + limit - 1 <= max(buffer, limit - 1)
    if buffer < 16:
        assert (limit, capacity) == (1, buffer)
    else:
        assert capacity >= 7


async def test_an_outlet_appends_to_its_chunk_in_the_stream_until_a_receiver_takes_it() -> None:
    send, receive = anyio.create_memory_object_stream[Any](4)
    with send, receive:
        outlet = Outlet([send], limit=3)
        for item in (1, 2, 3, 4):
            assert outlet.put(item) is None
        first = receive.receive_nowait()
        first.room = 0  # what every receiver does as it takes a chunk
        assert outlet.put(5) is None
        assert outlet.put(6) is None
        taken = receive.receive_nowait()
        taken.room = 0
        assert outlet.put(7) is None
        assert (first, taken, receive.receive_nowait()) == ([1, 2, 3], [4, 5, 6], [7])
        assert outlet.queued() == 7


async def test_a_full_stream_makes_put_wait_and_the_chunk_fill_once_sent() -> None:
    send, receive = anyio.create_memory_object_stream[Any](0)
    received: list[Any] = []

    async def take() -> None:
        received.append(await receive.receive())

    with send, receive:
        outlet = Outlet([send], limit=8)
        waiting = outlet.put("x")
        assert waiting is not None
        assert outlet.queued() == 0
        async with anyio.create_task_group() as tg:
            tg.start_soon(take)
            await waiting
        assert outlet.queued() == 1
        assert outlet.put("y") is None  # the receiver has not marked it taken
    assert received == [["x", "y"]]


async def test_a_chunk_whose_send_was_cancelled_takes_no_more_items() -> None:
    send, receive = anyio.create_memory_object_stream[Any](0)
    with send, receive:
        outlet = Outlet([send], limit=8)
        waiting = outlet.put("x")
        assert waiting is not None
        with anyio.move_on_after(0.01):
            await waiting
        assert outlet.queued() == 0
        again = outlet.put("y")  # a new chunk, which waits again
        assert again is not None
        with anyio.move_on_after(0.01):
            await again


async def test_an_item_emitted_after_the_receiver_took_the_chunk_still_arrives() -> None:
    """The source suspends between items, so the sink takes chunks that still have room."""
    received: list[int] = []
    g = fg.Graph("sealed")

    @g.source
    async def numbers() -> AsyncIterator[int]:
        for i in range(100):
            yield i
            if i % 5 == 4:
                await anyio.lowlevel.checkpoint()

    @g.sink(buffer=256)
    async def collect(x: int) -> None:
        received.append(x)

    g.connect(numbers, collect)
    await g.run()
    assert received == list(range(100))


async def test_queue_depth_counts_items_not_chunks() -> None:
    """A blocked sink with a buffer of 64 (chunks of 4): every waiting item is counted."""
    started, release = anyio.Event(), anyio.Event()
    g = fg.Graph("held")

    @g.sink(buffer=64)
    async def store(n: int) -> None:
        started.set()
        await release.wait()

    g.connect(g.source(range(1000), name="numbers"), store)
    async with fg.open_run(g) as run:
        await started.wait()
        await anyio.wait_all_tasks_blocked()
        nodes = run.statistics().nodes
        release.set()
    sink = nodes["store"]
    assert (sink.queue_capacity, sink.busy) == (64, 1)
    assert 64 - 4 <= sink.queue_depth <= 64
    assert sink.queue_depth + sink.busy == nodes["numbers"].items_out


async def _put(outlet: Outlet, item: Any, order: list[Any]) -> None:
    order.append(item)  # the order workers put in (trio starts tasks in random order)
    if (waiting := outlet.put(item)) is not None:
        await waiting


async def _take(receive: MemoryObjectReceiveStream[Any], count: int) -> list[Any]:
    """Receive chunks as a slow node would (one per scheduler round) until *count* items."""
    received: list[Any] = []
    async with receive:
        while len(received) < count:
            chunk = await receive.receive()
            chunk.room = 0
            received.extend(chunk)
            await anyio.lowlevel.checkpoint()
    return received


@pytest.mark.parametrize(("capacity", "limit"), [(0, 1), (1, 3), (2, 4), (4, 8)])
async def test_a_burst_behind_a_full_stream_arrives_whole_and_in_line_order(
    capacity: int, limit: int
) -> None:
    """200 workers put at once into a full stream: the line delivers every item once, in
    the order the workers queued, as fast as the receiver makes room."""
    send, receive = anyio.create_memory_object_stream[Any](capacity)
    outlet = Outlet([send], limit=limit)
    order: list[Any] = []
    async with anyio.create_task_group() as tg:
        for item in range(200):
            tg.start_soon(_put, outlet, item, order)
        await anyio.lowlevel.checkpoint()  # every worker has put or queued its item
        received = await _take(receive, 200)
    send.close()
    assert received == order
    assert sorted(received) == list(range(200))
    assert outlet.queued() == 200


async def test_a_worker_cancelled_in_line_delivers_nothing_and_the_line_moves_on() -> None:
    """Cancelled while waiting its turn, a worker's item never arrives; the others do."""
    send, receive = anyio.create_memory_object_stream[Any](0)
    outlet = Outlet([send], limit=2)
    order: list[Any] = []
    async with anyio.create_task_group() as tg:
        scopes = {}
        for item in range(10):
            scope = anyio.CancelScope()
            scopes[item] = scope

            async def put_in(scope: anyio.CancelScope = scope, item: int = item) -> None:
                with scope:
                    await _put(outlet, item, order)

            tg.start_soon(put_in)
        await anyio.lowlevel.checkpoint()
        for item in (3, 4, 7):
            scopes[item].cancel()
        await anyio.lowlevel.checkpoint()
        received = await _take(receive, 7)
    send.close()
    assert received == [item for item in order if item not in (3, 4, 7)]
    assert sorted(received) == [0, 1, 2, 5, 6, 8, 9]
