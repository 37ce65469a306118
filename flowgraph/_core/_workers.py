"""The per-node state of a run and the worker loops: the engine's hot path.

A worker takes chunks of items (see ``_edges``) with ``receive_nowait`` and
awaits ``receive`` only when its input is empty; it sends through its outlets,
which await only when a stream is full. A worker that never has to wait still
yields to the scheduler every ``YIELD_EVERY`` items, so other tasks keep
running and cancellation stays prompt at full throughput.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterable, Iterator
from itertools import islice
from typing import TYPE_CHECKING, Any, Literal

import anyio
import anyio.lowlevel
import anyio.to_thread
from anyio import EndOfStream, WouldBlock

from ._acks import UNTRACKED
from ._calls import adapt_call, apply_policies, open_source
from ._edges import chunk_capacity, chunk_limit
from ._events import ItemDeadLettered, ItemFailed, NodeFinished
from ._exceptions import AttemptsExhausted, NodeError, describe_error, describe_item
from ._nodes import Node, NodeKind, Positioned
from ._policy import Failure, FailureHandler
from ._stats import (
    LATENCY_EXACT_FIRST,
    Counters,
    NodeStatistics,
    elapsed_between,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

    from ._acks import SourceTracker, Ticket
    from ._edges import Emit, Outlet
    from ._run import Run

YIELD_EVERY = 64
"""A worker that never has to wait yields to the scheduler after this many items.

One scheduler round-trip per 64 items instead of per item, while a heartbeat
task beside a full-speed graph still ticks within a millisecond or so.
"""


class NodeRun:
    """The run-time state of one node: counters, input stream, call and failure policy."""

    def __init__(self, node: Node[..., Any], run: Run) -> None:
        self.node = node
        self.name = node.name
        self.run = run
        self.counters = Counters()
        self.workers_left = 1 if node.kind is NodeKind.SOURCE else node.workers
        self.inbox_send: MemoryObjectSendStream[Any] | None = None
        self.inbox: MemoryObjectReceiveStream[Any] | None = None
        self.stop_scope = anyio.CancelScope()
        self.tracking = run.tracking
        self.turns: Turns | None = None
        self.many = False
        self.chunk_limit = chunk_limit(node.buffer, node.workers)
        self.inbound: list[Outlet] = []
        if node.kind is not NodeKind.SOURCE:
            capacity = chunk_capacity(node.buffer, self.chunk_limit)
            self.inbox_send, self.inbox = anyio.create_memory_object_stream[Any](capacity)
            call, self.many = adapt_call(node, anyio.CapacityLimiter(node.workers))
            self.call = apply_policies(call, node, self)
            if node.ordered and node.workers > 1:
                self.turns = Turns()

    async def fail(self, item: Any, error: Exception) -> None:
        """Apply the node's ``on_error`` policy to an item that failed; raise to fail the run."""
        attempts = 1
        if isinstance(error, AttemptsExhausted):
            attempts, error = error.attempts, error.error  # type: ignore[assignment]
        self.counters.errors += 1
        run, policy = self.run, self.node.on_error
        action: Literal["raise", "skip", "dead_letter"] = (
            policy if isinstance(policy, str) else "dead_letter"
        )
        failure = Failure(self.name, item, error, attempts, run.graph.name, run.run_id)
        run.emit(ItemFailed(run, failure, action))
        if action == "raise":
            raise NodeError(self.name, item, attempts, cause=describe_error(error)) from error
        if action == "skip":
            self.counters.skipped += 1
            return
        handler = policy if isinstance(policy, FailureHandler) else run.dead_letters
        assert handler is not None
        await handler.handle(failure)
        self.counters.dead_lettered += 1
        run.emit(ItemDeadLettered(run, failure))

    def worker_exited(self) -> None:
        self.workers_left -= 1
        if self.workers_left == 0:
            self.counters.finished_at = anyio.current_time()
            self.run.emit(NodeFinished(self.run, self.name, self.statistics()))
            self.run.node_finished()

    def statistics(self) -> NodeStatistics:
        c, node = self.counters, self.node
        latency = c.latency
        items_in, in_flight = c.items_in, c.in_flight
        counted_out = node.kind is NodeKind.SOURCE or (
            self.many and node.kind is NodeKind.TRANSFORM
        )
        return NodeStatistics(
            name=self.name,
            kind=node.kind.value,
            items_in=items_in,
            items_out=c.items_out if counted_out else items_in - in_flight - c.failed,
            errors=c.errors,
            retries=c.retries,
            skipped=c.skipped,
            dead_lettered=c.dead_lettered,
            in_flight=in_flight,
            queue_depth=sum(outlet.queued() for outlet in self.inbound) - items_in,
            queue_capacity=node.buffer if self.inbox is not None else 0,
            workers=node.workers,
            elapsed=elapsed_between(c.started_at, c.finished_at),
            finished=c.finished_at is not None,
            latency_p50=latency.percentile(0.5),
            latency_p90=latency.percentile(0.9),
            latency_p99=latency.percentile(0.99),
            latency_buckets=latency.buckets(),
        )


async def run_worker(nr: NodeRun, emit: Emit | None, outlets: list[Outlet]) -> None:
    """Run one worker of *nr*; whatever happens, close its output streams and mark it exited."""
    try:
        if nr.node.kind is NodeKind.SOURCE:
            assert emit is not None
            with nr.stop_scope:
                await _produce(nr, emit)
        elif nr.turns is not None:
            await _consume_in_order(nr, nr.turns, emit)
        else:
            await _consume(nr, emit, _direct(nr, emit, outlets))
    finally:
        for outlet in outlets:
            for stream in outlet.streams:
                stream.close()
        nr.worker_exited()


def _direct(nr: NodeRun, emit: Emit | None, outlets: list[Outlet]) -> Outlet | None:
    """The outlet whose plain ``put`` is the worker's emitter, if its node has one output
    per item: the worker puts into it itself. Routing and tracked fan-out wrap ``put``."""
    if nr.many or len(outlets) != 1 or emit != outlets[0].put:
        return None
    return outlets[0]


async def _consume(nr: NodeRun, emit: Emit | None, direct: Outlet | None) -> None:
    """Take chunks until the input ends; call the node on each item; emit its outputs.

    A worker whose emitter is *direct*'s plain ``put`` does the put itself, which
    saves a call per item on the hottest path.

    When the run tracks acknowledgements, items are ``(ticket, item)``
    envelopes and outputs carry the same ticket. The input's hold on it passes
    to its one output, or becomes one hold per output of a generator, or is
    released when the item is consumed by a sink, dropped, skipped or dead-lettered.
    """
    inbox = nr.inbox
    assert inbox is not None
    call, many, counters, fail = nr.call, nr.many, nr.counters, nr.fail
    tracked = nr.tracking is not None
    record_latency, perf_counter = counters.latency.record, time.perf_counter
    receive_nowait, receive = inbox.receive_nowait, inbox.receive
    checkpoint = anyio.lowlevel.checkpoint
    # Every YIELD_EVERY items the budget runs out: the worker yields and times that
    # call. A worker that had to wait for an item has just yielded: it times the
    # call too, so slow nodes get every call timed. The node's first calls, shared
    # among its workers, are all timed (budget 1), still yielding every YIELD_EVERY.
    budget, taken, yielded = 1, 0, True
    exact = max(1, LATENCY_EXACT_FIRST // nr.node.workers)
    worker = counters.worker()
    worker.idle = False  # from here on, idle only while waiting for input or done
    if direct is not None:
        open_chunk = direct.open
    while True:
        try:
            chunk = receive_nowait()
        except WouldBlock:
            worker.idle = True
            try:
                chunk = await receive()
            except EndOfStream:
                return
            worker.idle = False
            budget, yielded = 1, True
        except EndOfStream:
            worker.idle = True
            return
        chunk.room = 0
        for item in chunk:
            if tracked:
                ticket, item = item
            taken += 1
            worker.taken = taken
            budget -= 1
            try:
                if budget:
                    result = await call(item)
                else:
                    if taken > exact:
                        budget = YIELD_EVERY
                        if not yielded:
                            await checkpoint()
                    else:
                        budget = 1
                        if not yielded and not taken % YIELD_EVERY:
                            await checkpoint()
                    yielded = False
                    started = perf_counter()
                    result = await call(item)
                    record_latency(perf_counter() - started)
            except Exception as exc:
                await fail(item, exc)
                counters.failed += 1
                if tracked:
                    ticket.release()
            else:
                if direct is not None:
                    out = (ticket, result) if tracked else result
                    open_ = direct.chunk
                    if open_.room:
                        open_.room -= 1
                        open_.append(out)
                    elif (waiting := open_chunk(out)) is not None:
                        await waiting
                elif emit is None:
                    if tracked:
                        ticket.release()
                elif many:
                    await _emit_each(emit, result, ticket if tracked else None)
                    counters.items_out += len(result)
                elif (waiting := emit((ticket, result) if tracked else result)) is not None:
                    await waiting


class Turns:
    """Hands out tickets on receipt and lets workers emit strictly in ticket order.

    A worker holds at most one finished item while it waits for its turn, so the
    reorder buffer never holds more than ``workers`` items.
    """

    def __init__(self) -> None:
        self.lock = anyio.Lock()
        self.next_ticket = 0
        self.now_serving = 0
        self.waiting: dict[int, anyio.Event] = {}

    def take(self, count: int) -> int:
        """Take *count* consecutive tickets; return the first."""
        ticket = self.next_ticket
        self.next_ticket += count
        return ticket

    async def wait(self, ticket: int) -> None:
        if ticket != self.now_serving:
            event = self.waiting[ticket] = anyio.Event()
            await event.wait()

    def done(self) -> None:
        self.now_serving += 1
        event = self.waiting.pop(self.now_serving, None)
        if event is not None:
            event.set()


async def _consume_in_order(nr: NodeRun, turns: Turns, emit: Emit | None) -> None:
    """Like ``_consume``, but outputs leave in input order whatever order items finish in."""
    inbox = nr.inbox
    assert inbox is not None
    call, many, counters = nr.call, nr.many, nr.counters
    tracked = nr.tracking is not None
    ticket: Any = None
    worker = counters.worker()
    while True:
        async with turns.lock:
            try:
                chunk = await inbox.receive()
            except EndOfStream:
                return
            chunk.room = 0
            first = turns.take(len(chunk))
        for turn, item in enumerate(chunk, first):
            if tracked:
                ticket, item = item
            worker.taken += 1
            worker.idle = False
            started = time.perf_counter()
            try:
                result = await call(item)
            except Exception as exc:
                await turns.wait(turn)
                try:
                    await nr.fail(item, exc)
                finally:
                    turns.done()
                counters.failed += 1
                if tracked:
                    ticket.release()
            else:
                counters.latency.record(time.perf_counter() - started)
                await turns.wait(turn)
                outs = result if many else (result,)
                if emit is not None:
                    await _emit_each(emit, outs, ticket if tracked else None)
                elif tracked:
                    ticket.release()
                if many:
                    counters.items_out += len(outs)
                turns.done()
            worker.idle = True


async def _emit_each(emit: Emit, outs: Sequence[Any], ticket: Ticket | None) -> None:
    """Emit every output of one item; a ticket's hold becomes one hold per output."""
    if ticket is not None:
        ticket.pending += len(outs)
    for out in outs:
        if (waiting := emit(out if ticket is None else (ticket, out))) is not None:
            await waiting
    if ticket is not None:
        ticket.release()


async def _produce(nr: NodeRun, emit: Emit) -> None:
    """Read the source's iterable and emit every item, yielding now and then."""
    counters, node, tracking = nr.counters, nr.node, nr.tracking
    try:
        if node.checkpoint:
            resume = tracking.resume.get(nr.name) if tracking is not None else None
            iterable = await open_source(node, resume)
        else:
            iterable = await open_source(node)
        tracker = (
            tracking.tracker(nr.name, node.max_in_flight)
            if tracking is not None and node.checkpoint
            else None
        )
        items = _open_items(iterable, nr.name)
        try:
            if tracker is not None:
                await _emit_tracked(items, tracker, emit, nr)
            else:
                await _emit(items, emit, nr, tracked=tracking is not None)
        finally:
            aclose = getattr(items, "aclose", None)
            if aclose is not None:
                await aclose()
    except NodeError:
        raise
    except Exception as exc:
        counters.errors += 1
        raise NodeError.for_source(nr.name, counters.items_out, exc) from exc


async def _emit(items: AsyncIterator[Any], emit: Emit, nr: NodeRun, *, tracked: bool) -> None:
    """Emit a source's items (in untracked envelopes if the run tracks other sources)."""
    counters, checkpointed = nr.counters, nr.node.checkpoint
    checkpoint = anyio.lowlevel.checkpoint
    budget = YIELD_EVERY
    async for value in items:
        item = _positioned(value, nr.name).item if checkpointed else value
        if (waiting := emit((UNTRACKED, item) if tracked else item)) is not None:
            await waiting
        counters.items_out += 1
        budget -= 1
        if not budget:
            budget = YIELD_EVERY
            await checkpoint()


async def _emit_tracked(
    items: AsyncIterator[Any], tracker: SourceTracker, emit: Emit, nr: NodeRun
) -> None:
    """Emit a checkpointed source's items, each with a ticket of its tracker."""
    counters, name = nr.counters, nr.name
    issue_nowait, issue = tracker.issue_nowait, tracker.issue
    checkpoint = anyio.lowlevel.checkpoint
    budget = YIELD_EVERY
    async for value in items:
        if type(value) is not Positioned:
            _positioned(value, name)
        ticket = issue_nowait(value.position) or await issue(value.position)
        item = value.item
        if (waiting := emit((ticket, item))) is not None:
            await waiting
        counters.items_out += 1
        budget -= 1
        if not budget:
            budget = YIELD_EVERY
            await checkpoint()


def _positioned(value: Any, name: str) -> Positioned:
    if not isinstance(value, Positioned):
        raise TypeError(
            f"checkpointed source {name!r} produced {describe_item(value)}; "
            "it must yield fg.Positioned(item, position)"
        )
    return value


def _open_items(iterable: Any, name: str) -> AsyncIterator[Any]:
    """The source's items as an async iterator; an async iterable is used as it is.

    Wrapping the user's async generator in a second one would cost a second
    generator step per item, so only sync iterables get a wrapper.
    """
    if isinstance(iterable, AsyncIterable):
        return aiter(iterable)
    if isinstance(iterable, Iterator):
        return _iterate_in_thread(iterable)
    if isinstance(iterable, Iterable):
        return _iterate_on_loop(iterable)
    raise TypeError(
        f"source {name!r} must produce an iterable or async iterable, got {type(iterable).__name__}"
    )


async def _iterate_on_loop(iterable: Iterable[Any]) -> AsyncGenerator[Any, None]:
    for item in iterable:
        yield item


async def _iterate_in_thread(iterator: Iterator[Any]) -> AsyncGenerator[Any, None]:
    """Read a sync iterator in a worker thread, in chunks that grow while items come quickly.

    A chunk ends early when the iterator is exhausted or raises; the items read
    before an error are still emitted, then the error propagates.
    """
    size = 1
    while True:
        chunk, error, seconds = await anyio.to_thread.run_sync(_take, iterator, size)
        for item in chunk:
            yield item
        if error is not None:
            raise error
        if len(chunk) < size:
            return
        if seconds < 0.001:
            size = min(size * 2, 256)
        elif seconds > 0.01:
            size = max(size // 2, 1)


def _take(iterator: Iterator[Any], size: int) -> tuple[list[Any], Exception | None, float]:
    started = time.perf_counter()
    chunk: list[Any] = []
    try:
        chunk.extend(islice(iterator, size))
    except Exception as exc:
        return chunk, exc, time.perf_counter() - started
    return chunk, None, time.perf_counter() - started
