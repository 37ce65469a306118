"""The per-node state of a run and the worker loops: the engine's hot path.

A worker takes chunks of items (see ``_edges``) with ``receive_nowait`` and
awaits ``receive`` only when its input is empty; it sends through its outlets,
which await only when a stream is full. A worker that never has to wait still
yields to the scheduler every ``YIELD_EVERY`` items, so other tasks keep
running and cancellation stays prompt at full throughput.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Literal

import anyio
import anyio.lowlevel
from anyio import EndOfStream, WouldBlock

from ._calls import OUTPUTS, Outputs, apply_policies, build_call
from ._edges import YIELD_EVERY, chunk_capacity, chunk_limit
from ._events import ItemDeadLettered, ItemFailed, NodeFinished
from ._exceptions import (
    AttemptsExhausted,
    NodeError,
    PartialOutputError,
    describe_error,
)
from ._executor import collecting, open_executor
from ._functions import FnKind
from ._keys import KeyQueues, consume_by_key
from ._nodes import Node, NodeKind
from ._ordered import Turns, consume_in_order
from ._policy import Failure, FailureHandler, enter_node
from ._produce import produce
from ._shared import SharedInput
from ._skips import SkipLog
from ._stats import (
    LATENCY_EXACT_FIRST,
    Counters,
    NodeStatistics,
    WorkerCounters,
    elapsed_between,
)
from ._threads import BoundThreads, Threads

if TYPE_CHECKING:
    from collections.abc import Callable
    from contextlib import AsyncExitStack

    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

    from ._edges import Emit, Outlet
    from ._executor import BoundCall
    from ._run import Run

logger = logging.getLogger("flowgraph")


class NodeRun:
    """The run-time state of one node: counters, input stream, call and failure policy."""

    def __init__(self, node: Node[..., Any], run: Run) -> None:
        self.node = node
        self.name = node.name
        self.run = run
        self.counters = Counters()
        # A node on threads with several workers runs two tasks per worker, so each thread
        # has its next call waiting in its queue and never idles for a round trip to the
        # event loop. (One worker keeps one task: its items stay in order.)
        in_threads = (
            node.workers > 1
            and not node.runs_on_loop
            and (node.executor in (None, "threads") or isinstance(node.executor, Threads))
        )
        self.tasks = 1 if node.kind is NodeKind.SOURCE else node.workers * (2 if in_threads else 1)
        self.started = 0  # worker tasks started so far
        self.workers_left = 0  # worker tasks started and not yet exited
        self._spawn: Callable[[], object] | None = None
        self.inbox_send: MemoryObjectSendStream[Any] | None = None
        self.inbox: MemoryObjectReceiveStream[Any] | None = None
        self.stop_scope = anyio.CancelScope()
        self.tracking = run.tracking
        self.turns: Turns | None = None
        self.many = node.fn_kind in (FnKind.ASYNC_GEN, FnKind.SYNC_GEN)
        self.chunk_limit = chunk_limit(node.buffer)
        self.inbound: list[Outlet] = []  # the upstream outlets feeding this node
        self.outlets: list[Outlet] = []  # this node's own, shared by its workers
        self.bound: BoundCall | None = None
        self.outputs: list[Outputs] = []  # one per worker of a generator node
        self.threads: BoundThreads | None = None
        self.position: Any = None  # a source's last emitted position, to resume a retry after
        self._skips = SkipLog(self.name)
        self.keys = KeyQueues() if node.ordered == "key" else None
        self.intake: MemoryObjectReceiveStream[Any] | None = None
        self.batches: MemoryObjectSendStream[Any] | None = None
        self.batcher = WorkerCounters()
        if node.kind is not NodeKind.SOURCE:
            capacity = chunk_capacity(node.buffer, self.chunk_limit)
            self.inbox_send, self.inbox = anyio.create_memory_object_stream[Any](capacity)
            if node.batch is not None:
                self.intake = self.inbox
                self.batches, self.inbox = anyio.create_memory_object_stream[Any](1)
            if node.ordered is True and node.workers > 1:
                self.turns = Turns()
        self.shared = (
            SharedInput(self.inbox, self.grow)
            if self.inbox is not None and node.workers > 1
            else None
        )

    async def open(self, stack: AsyncExitStack) -> None:
        """Bind the node to where its function runs, for the run; build its call."""
        node = self.node
        if node.kind is NodeKind.SOURCE:
            if node.fn_kind in (FnKind.SYNC, FnKind.SYNC_GEN):
                threads = Threads(1)
                stack.callback(threads.close)
                self.threads = await stack.enter_async_context(
                    threads.bind(node.fn, node=self.name, workers=1)
                )
            return
        if not node.runs_on_loop:
            executor = await stack.enter_async_context(
                open_executor(node.executor or "threads", node.workers)
            )
            fn = node.fn
            if node.fn_kind is FnKind.SYNC_GEN and (
                self.turns is not None or not isinstance(executor, Threads)
            ):
                fn = collecting(fn)
            self.bound = await stack.enter_async_context(
                executor.bind(fn, node=self.name, workers=node.workers)
            )
            if isinstance(self.bound, BoundThreads):
                self.bound.latency = self.counters.latency  # timed in the thread, not queued
        call, _ = build_call(node, self.bound)
        self.call = apply_policies(call, node, self)

    async def fail(self, item: Any, error: Exception) -> None:
        """Apply the node's ``on_error`` policy to an item that failed; raise to fail the run."""
        attempts = 1
        if isinstance(error, AttemptsExhausted):
            attempts, error = error.attempts, error.error  # type: ignore[assignment]
        if isinstance(error, PartialOutputError):
            sent, error = error.sent, error.error
            error.add_note(f"flowgraph: {sent} output(s) of this item were sent before it failed")
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
            self._skips.skipped(failure)
            return
        handler = policy if isinstance(policy, FailureHandler) else run.dead_letters
        assert handler is not None
        await handler.handle(failure)
        self.counters.dead_lettered += 1
        run.emit(ItemDeadLettered(run, failure))

    def start_workers(self, spawn: Callable[[], object]) -> None:
        """Start the node's first workers; *spawn* starts one more worker task.

        A node whose workers share their input (``_shared``) starts one, and
        more only while items wait with no idle worker to take them, up to its
        ``workers``: a node of 5,000 I/O workers under a light load runs a few
        tasks, not 5,000. Other nodes start all their workers at once.
        """
        self._spawn = spawn
        self.grow(1 if self.shared is not None else self.tasks)

    def grow(self, count: int) -> None:
        """Start up to *count* more worker tasks, never more than the node's ``tasks``."""
        spawn = self._spawn
        assert spawn is not None
        for _ in range(min(count, self.tasks - self.started)):
            self.started += 1
            self.workers_left += 1
            spawn()

    def worker_exited(self) -> None:
        self.workers_left -= 1
        if self.workers_left == 0:
            for outlet in self.outlets:
                for stream in outlet.streams:
                    stream.close()
            self.counters.finished_at = anyio.current_time()
            self._skips.flush()
            self.run.emit(NodeFinished(self.run, self.name, self.statistics()))
            self.run.node_finished()

    def _inbound(self) -> int:
        """Items the upstream outlets have put into this node's input."""
        return sum(outlet.queued() for outlet in self.inbound)

    def statistics(self) -> NodeStatistics:
        c, node = self.counters, self.node
        latency = c.latency
        taken, busy = c.items_in, c.busy
        if isinstance(self.bound, BoundThreads):
            queued, busy = busy - self.bound.busy, self.bound.busy
        else:
            queued = 0
        waiting = self.keys.waiting if self.keys is not None else 0
        items_in = taken if self.intake is None else self.batcher.taken
        if node.kind is NodeKind.SOURCE:
            items_out = c.items_out
        elif self.many and node.kind is NodeKind.TRANSFORM:
            items_out = sum(outputs.sent for outputs in self.outputs)
        else:
            items_out = taken - busy - queued - c.failed - waiting
        return NodeStatistics(
            name=self.name,
            kind=node.kind.value,
            items_in=items_in,
            items_out=items_out,
            errors=c.errors,
            retries=c.retries,
            skipped=c.skipped,
            dead_lettered=c.dead_lettered,
            busy=busy,
            abandoned=self.bound.abandoned if self.bound is not None else 0,
            queue_depth=self._inbound() - items_in + waiting + queued,
            queue_capacity=node.buffer if self.inbox is not None else 0,
            workers=node.workers,
            elapsed=elapsed_between(c.started_at, c.finished_at),
            finished=c.finished_at is not None,
            latency_p50=latency.percentile(0.5),
            latency_p90=latency.percentile(0.9),
            latency_p99=latency.percentile(0.99),
            latency_buckets=latency.buckets(),
            key_skew=self.keys.longest if self.keys is not None else 0,
        )


def _untimed(seconds: float) -> None:
    pass


async def run_worker(nr: NodeRun, emit: Emit | None) -> None:
    """Run one worker of *nr*; whatever happens, mark it exited (the last one closes the
    node's output streams)."""
    enter_node(nr)
    try:
        if nr.node.kind is NodeKind.SOURCE:
            assert emit is not None
            with nr.stop_scope:
                await produce(nr, emit)
        elif nr.turns is not None:
            await consume_in_order(nr, nr.turns, emit)
        elif nr.keys is not None:
            await consume_by_key(nr, emit)
        else:
            await _consume(nr, emit, _direct(nr, emit))
    finally:
        nr.worker_exited()


def _direct(nr: NodeRun, emit: Emit | None) -> Outlet | None:
    """The outlet whose plain ``put`` is the worker's emitter, if its node has one output
    per item: the worker puts into it itself. Routing and tracked fan-out wrap ``put``."""
    return None if nr.many else _direct_outlet(nr, emit)


def _direct_outlet(nr: NodeRun, emit: Emit | None) -> Outlet | None:
    """The node's one outlet, when *emit* is its plain ``put``: callers may put into it
    themselves. Routing and tracked fan-out wrap ``put``, so they get ``None``."""
    outlets = nr.outlets
    if len(outlets) != 1 or emit != outlets[0].put:
        return None
    return outlets[0]


async def _consume(nr: NodeRun, emit: Emit | None, direct: Outlet | None) -> None:
    """Take chunks until the input ends; call the node on each item; emit its outputs.

    A worker whose emitter is *direct*'s plain ``put`` does the put itself, which
    saves a call per item on the hottest path.

    A generator's call sends its outputs itself, through the worker's
    :class:`Outputs`, and returns how many it sent.

    When the run tracks acknowledgements, items are ``(ticket, item)``
    envelopes and outputs carry the same ticket. The input's hold on it passes
    to its one output; a generator's outputs each take a hold of their own and
    the input's is released once the generator ends; a hold is also released
    when the item is consumed by a sink, dropped, skipped or dead-lettered.
    """
    inbox = nr.inbox
    assert inbox is not None
    call, many, counters, fail = nr.call, nr.many, nr.counters, nr.fail
    tracked = nr.tracking is not None
    record_latency, perf_counter = counters.latency.record, time.perf_counter
    if isinstance(nr.bound, BoundThreads):
        record_latency = _untimed  # the threads time each call themselves
    receive_nowait, receive = inbox.receive_nowait, inbox.receive
    yield_to_loop = anyio.lowlevel.checkpoint
    port = Outputs(emit, _direct_outlet(nr, emit))
    if many:
        nr.outputs.append(port)
        OUTPUTS.set(port)
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
    shared = nr.shared
    while True:
        if shared is not None:
            chunk = shared.take_nowait()
            if chunk is None:
                worker.idle = True
                chunk = await shared.take()
                if chunk is None:
                    return
                worker.idle = False
                budget, yielded = 1, True
        else:
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
                port.ticket = ticket
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
                            await yield_to_loop()
                    else:
                        budget = 1
                        if not yielded and not taken % YIELD_EVERY:
                            await yield_to_loop()
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
                elif emit is None or many:
                    if tracked:
                        ticket.release()
                elif (waiting := emit((ticket, result) if tracked else result)) is not None:
                    await waiting
