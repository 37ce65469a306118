"""The benchmark workloads, each as a flowgraph graph and as hand-written anyio code.

Both versions of a workload do the same work: the same source items, the same
user function awaited once per item and stage, the same bounded buffers. Every
pipeline counts and sums what reaches its sink in a :class:`Tally`, so the
caller can check that every item arrived.

Hand-written code comes in two styles:

- *naive*: what most people write first, ``await send.send(x)`` and
  ``async for x in receive``. Each of those is a checkpoint, so every item
  costs two scheduler round-trips per stage.
- *fast*: ``send_nowait``/``receive_nowait``, awaiting only on ``WouldBlock``,
  and one ``anyio.lowlevel.checkpoint()`` per 64 items: the technique
  flowgraph's engine uses, written out by hand.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
from anyio import EndOfStream, WouldBlock
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

import flowgraph as fg

BUFFER = 100
"""Capacity of every stream between two stages, in every workload."""

YIELD_EVERY = 64
"""Items a fast hand-written task handles between two checkpoints (as the engine does)."""

Fn = Callable[[Any], Awaitable[Any]]
Send = MemoryObjectSendStream[Any]
Receive = MemoryObjectReceiveStream[Any]


class Tally:
    """Count and sum of what reached a sink; byte strings are summed by length."""

    __slots__ = ("count", "total")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0

    def add(self, item: Any) -> None:
        self.count += 1
        self.total += item if isinstance(item, int) else len(item)

    def check(self, count: int, total: int | None = None) -> None:
        """Raise ``AssertionError`` unless exactly the expected items arrived."""
        if self.count != count or (total is not None and self.total != total):
            raise AssertionError(
                f"sink got {self.count} items summing to {self.total}; "
                f"expected {count} items summing to {total}"
            )


async def identity(item: Any) -> Any:
    """The trivial async transform of W1 and W2."""
    return item


async def io_call(item: Any) -> Any:
    """The I/O-bound stage of W3: 10 ms of waiting, no CPU."""
    await anyio.sleep(0.01)
    return item


def blocking_call(item: Any) -> Any:
    """The blocking sync stage of W4: 2 ms that hold a thread but not the GIL."""
    time.sleep(0.002)
    return item


def _numbers(n: int | None) -> Iterable[int]:
    return range(n) if n is not None else itertools.count()


# -- flowgraph ------------------------------------------------------------------------


def _counting_graph(name: str, n: int | None, tally: Tally) -> tuple[fg.Graph, Any, Any]:
    graph = fg.Graph(name)

    @graph.source
    async def numbers() -> AsyncIterator[int]:
        for i in _numbers(n):
            yield i

    @graph.sink(buffer=BUFFER)
    async def count(item: Any) -> None:
        tally.add(item)

    return graph, numbers, count


def linear_graph(n: int | None, tally: Tally, *, stages: int = 3) -> fg.Graph:
    """W1: source -> *stages* trivial async transforms -> counting sink (endless if n is None)."""
    graph, source, sink = _counting_graph("w1_linear", n, tally)
    middle = [graph.transform(identity, name=f"t{i}", buffer=BUFFER) for i in range(stages)]
    graph.chain(source, *middle, sink)
    return graph


class MemoryCheckpoints:
    """A checkpoint store in memory: W1 checkpointed measures tracking, not a database."""

    def __init__(self, every: int = 100, interval: float = 1.0) -> None:
        self.every = every
        self.interval = interval
        self.positions: dict[str, Any] = {}

    async def load(self, graph: str) -> dict[str, Any]:
        return {}

    async def commit(self, graph: str, positions: Mapping[str, Any]) -> None:
        self.positions.update(positions)


def checkpointed_linear_graph(n: int, tally: Tally, *, stages: int = 3) -> fg.Graph:
    """W1 with a checkpointed source: every item carries a ticket until the sink has it."""
    graph = fg.Graph("w1_checkpointed")

    @graph.source(checkpoint=True)
    async def numbers(after: int | None) -> AsyncIterator[fg.Positioned]:
        for i in range(n):
            yield fg.Positioned(i, i)

    @graph.sink(buffer=BUFFER)
    async def count(item: Any) -> None:
        tally.add(item)

    middle = [graph.transform(identity, name=f"t{i}", buffer=BUFFER) for i in range(stages)]
    graph.chain(numbers, *middle, count)
    return graph


def fan_graph(n: int, tally: Tally) -> fg.Graph:
    """W2: source -> two trivial async branches -> one merging sink (gets 2n items)."""
    graph, source, sink = _counting_graph("w2_fan", n, tally)
    left = graph.transform(identity, name="left", buffer=BUFFER)
    right = graph.transform(identity, name="right", buffer=BUFFER)
    graph.connect(source, left, right)
    graph.connect(left, sink)
    graph.connect(right, sink)
    return graph


def worker_graph(n: int, tally: Tally, fn: Callable[[Any], Any], workers: int) -> fg.Graph:
    """W3 and W4: source -> one stage of *fn* with *workers* workers -> counting sink."""
    graph, source, sink = _counting_graph("w_workers", n, tally)
    middle = graph.transform(fn, name="work", workers=workers, buffer=BUFFER)
    graph.chain(source, middle, sink)
    return graph


def memory_graph(n: int, tally: Tally, *, flatmap: bool = False) -> fg.Graph:
    """W5: source of fresh 1 KiB blobs -> trivial transform -> sink slower than the source.

    With *flatmap*, the source yields one item and the transform is a generator that
    yields all *n* blobs from it: a flat-map's outputs must stream, not pile up.
    """
    graph = fg.Graph("w5_memory")

    @graph.source
    async def blobs() -> AsyncIterator[bytes]:
        for _ in range(1 if flatmap else n):
            yield bytes(1024)

    async def explode(blob: bytes) -> AsyncIterator[bytes]:
        for _ in range(n):
            yield bytes(1024)

    @graph.sink(buffer=BUFFER)
    async def slow_sink(blob: bytes) -> None:
        tally.add(blob)
        await anyio.lowlevel.checkpoint()  # anyio.sleep(0): one scheduler round-trip

    touch = graph.transform(explode if flatmap else identity, name="touch", buffer=BUFFER)
    graph.chain(blobs, touch, slow_sink)
    return graph


# -- hand-written anyio, naive --------------------------------------------------------


async def _naive_source(n: int, sends: list[Send]) -> None:
    try:
        for i in range(n):
            for send in sends:
                await send.send(i)
    finally:
        for send in sends:
            send.close()


async def _naive_stage(fn: Fn, receive: Receive, send: Send) -> None:
    with receive, send:
        async for item in receive:
            await send.send(await fn(item))


async def _naive_sink(receive: Receive, tally: Tally) -> None:
    with receive:
        async for item in receive:
            tally.add(item)


# -- hand-written anyio, fast ---------------------------------------------------------


async def _fast_source(n: int, sends: list[Send]) -> None:
    checkpoint = anyio.lowlevel.checkpoint
    budget = YIELD_EVERY
    try:
        for i in range(n):
            for send in sends:
                try:
                    send.send_nowait(i)
                except WouldBlock:
                    await send.send(i)
            budget -= 1
            if not budget:
                budget = YIELD_EVERY
                await checkpoint()
    finally:
        for send in sends:
            send.close()


async def _fast_stage(fn: Fn, receive: Receive, send: Send) -> None:
    checkpoint = anyio.lowlevel.checkpoint
    budget = YIELD_EVERY
    with receive, send:
        while True:
            try:
                item = receive.receive_nowait()
            except WouldBlock:
                try:
                    item = await receive.receive()
                except EndOfStream:
                    return
                budget = YIELD_EVERY
            except EndOfStream:
                return
            out = await fn(item)
            try:
                send.send_nowait(out)
            except WouldBlock:
                await send.send(out)
            budget -= 1
            if not budget:
                budget = YIELD_EVERY
                await checkpoint()


async def _fast_sink(receive: Receive, tally: Tally) -> None:
    checkpoint = anyio.lowlevel.checkpoint
    budget = YIELD_EVERY
    with receive:
        while True:
            try:
                item = receive.receive_nowait()
            except WouldBlock:
                try:
                    item = await receive.receive()
                except EndOfStream:
                    return
                budget = YIELD_EVERY
            except EndOfStream:
                return
            tally.add(item)
            budget -= 1
            if not budget:
                budget = YIELD_EVERY
                await checkpoint()


STYLES = {
    "naive": (_naive_source, _naive_stage, _naive_sink),
    "fast": (_fast_source, _fast_stage, _fast_sink),
}


def _stream() -> tuple[Send, Receive]:
    return anyio.create_memory_object_stream[Any](BUFFER)


async def hand_linear(style: str, n: int, tally: Tally, *, stages: int = 3) -> None:
    """W1 by hand: a chain of tasks joined by memory object streams."""
    source, stage, sink = STYLES[style]
    async with anyio.create_task_group() as tg:
        send, receive = _stream()
        tg.start_soon(source, n, [send])
        for _ in range(stages):
            next_send, next_receive = _stream()
            tg.start_soon(stage, identity, receive, next_send)
            receive = next_receive
        tg.start_soon(sink, receive, tally)


async def hand_fan(style: str, n: int, tally: Tally) -> None:
    """W2 by hand: the source sends each item to two branches; both feed one sink stream."""
    source, stage, sink = STYLES[style]
    async with anyio.create_task_group() as tg:
        sink_send, sink_receive = _stream()
        branch_sends = []
        for _ in range(2):
            send, receive = _stream()
            branch_sends.append(send)
            tg.start_soon(stage, identity, receive, sink_send.clone())
        sink_send.close()
        tg.start_soon(source, n, branch_sends)
        tg.start_soon(sink, sink_receive, tally)


async def hand_workers(n: int, tally: Tally, fn: Fn, workers: int) -> None:
    """W3 and W4 by hand: *workers* tasks share one input stream and one output stream."""
    async with anyio.create_task_group() as tg:
        send, receive = _stream()
        out_send, out_receive = _stream()
        for _ in range(workers):
            tg.start_soon(_naive_stage, fn, receive.clone(), out_send.clone())
        receive.close()
        out_send.close()
        tg.start_soon(_naive_source, n, [send])
        tg.start_soon(_naive_sink, out_receive, tally)


async def bare_workers(n: int, tally: Tally, fn: Fn, workers: int) -> None:
    """The floor of W3 and W4: *workers* tasks call *fn* on their share of items, no streams.

    Nothing here can be removed, so no pipeline doing the same work can be faster
    than this on the same machine (up to noise).
    """

    async def lane(first: int) -> None:
        for item in range(first, n, workers):
            tally.add(await fn(item))

    async with anyio.create_task_group() as tg:
        for first in range(workers):
            tg.start_soon(lane, first)


def in_threads(fn: Callable[[Any], Any], workers: int) -> Fn:
    """Wrap sync *fn* so each call runs in a worker thread, at most *workers* at once."""
    limiter = anyio.CapacityLimiter(workers)

    async def call(item: Any) -> Any:
        return await anyio.to_thread.run_sync(fn, item, limiter=limiter)

    return call


# -- W6: batches -------------------------------------------------------------------------

BATCH = 1000


async def double_all(batch: list[int]) -> list[int]:
    """The W6 stage: a trivial transform over a whole batch."""
    return [x * 2 for x in batch]


def batched_graph(n: int, tally: Tally) -> fg.Graph:
    """W6: source -> batch(1,000) -> 3 transforms over batches -> unbatch -> counting sink."""
    graph, source, sink = _counting_graph("w6_batches", n, tally)
    stages = [graph.transform(double_all, name=f"t{i}", buffer=BUFFER) for i in range(3)]
    graph.chain(source, graph.batch(BATCH), *stages, graph.unbatch(), sink)
    return graph


async def hand_batched(n: int, tally: Tally) -> None:
    """W6 by hand: the source fills lists, three stages map lists, the sink counts their items."""
    streams = [_stream() for _ in range(4)]

    async def source(send: Send) -> None:
        async with send:
            batch: list[int] = []
            for i in range(n):
                batch.append(i)
                if len(batch) == BATCH:
                    await send.send(batch)
                    batch = []
            if batch:
                await send.send(batch)

    async def stage(receive: Receive, send: Send) -> None:
        async with receive, send:
            async for batch in receive:
                await send.send(await double_all(batch))

    async def sink(receive: Receive) -> None:
        async with receive:
            async for batch in receive:
                for item in batch:
                    tally.add(item)

    async with anyio.create_task_group() as tg:
        tg.start_soon(source, streams[0][0])
        for (_, receive), (send, _) in itertools.pairwise(streams):
            tg.start_soon(stage, receive, send)
        tg.start_soon(sink, streams[-1][1])


def plain_threads(n: int, workers: int) -> float:
    """W4's floor without any event loop: *workers* threads each sleep their share."""

    def lane(first: int) -> None:
        for _ in range(first, n, workers):
            time.sleep(0.002)

    threads = [threading.Thread(target=lane, args=(i,)) for i in range(workers)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started
