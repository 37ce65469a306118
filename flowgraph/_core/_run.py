"""Running a graph: one task group, bounded streams and workers; nothing outlives the run.

``open_run`` owns every task, stream and cancel scope of one run. Every worker
of every node runs in a single task group, so a node that fails under the
``"raise"`` policy cancels the whole graph and the run raises one
:class:`NodeError`; cancelling the caller cancels every node; sync functions run
in worker threads that are always waited for, so no thread outlives the run.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterable, Iterator
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING, Any, final

import anyio
import anyio.lowlevel
import anyio.to_thread
from anyio import EndOfStream, WouldBlock

from ._edges import Emit, make_emitter
from ._exceptions import AttemptsExhausted, GraphError, NodeError, describe_error
from ._nodes import Node, NodeKind, adapt_call, apply_policies, source_iterable
from ._policy import Failure, FailureHandler
from ._stats import Counters, NodeStatistics, RunStatistics, elapsed_between

if TYPE_CHECKING:
    from anyio.abc import TaskGroup
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

    from ._graph import Graph

logger = logging.getLogger("flowgraph")

YIELD_EVERY = 64
"""A worker that never has to wait yields to the scheduler after this many items.

This keeps unrelated tasks running and cancellation prompt at full throughput
while costing one scheduler round-trip per this many items instead of per item.
"""


@final
@dataclass(frozen=True, slots=True)
class RunResult:
    """What a finished run reports.

    Attributes:
        graph: the graph's name.
        run_id: a unique id of this run (also recorded with dead letters).
        stats: the final statistics; ``result.stats["fetch"].items_out``.
        elapsed: seconds the run took.
    """

    graph: str
    run_id: str
    stats: RunStatistics
    elapsed: float


class _NodeRun:
    """The run-time state of one node: counters, input stream, call and failure policy."""

    def __init__(self, node: Node[..., Any], run: Run) -> None:
        self.node = node
        self.name = node.name
        self.run = run
        self.counters = Counters()
        self.workers_left = 1 if node.kind is NodeKind.SOURCE else node.workers
        self.inbox_send: MemoryObjectSendStream[Any] | None = None
        self.inbox: MemoryObjectReceiveStream[Any] | None = None
        if node.kind is not NodeKind.SOURCE:
            self.inbox_send, self.inbox = anyio.create_memory_object_stream[Any](node.buffer)
            call, self.many = adapt_call(node, anyio.CapacityLimiter(node.workers))
            self.call = apply_policies(call, node, self)
            self.turns = _Turns() if node.ordered and node.workers > 1 else None

    async def fail(self, item: Any, error: Exception) -> None:
        """Apply the node's ``on_error`` policy to an item that failed; raise to fail the run."""
        attempts = 1
        if isinstance(error, AttemptsExhausted):
            attempts, error = error.attempts, error.error  # type: ignore[assignment]
        self.counters.errors += 1
        policy = self.node.on_error
        if policy == "raise":
            raise NodeError(self.name, item, attempts, cause=describe_error(error)) from error
        if policy == "skip":
            self.counters.skipped += 1
            logger.warning(
                "node %r skipped an item after %d attempt(s): %r", self.name, attempts, error
            )
            return
        handler = self.run.dead_letters if policy == "dead_letter" else policy
        assert isinstance(handler, FailureHandler)
        failure = Failure(
            node=self.name,
            item=item,
            error=error,
            attempts=attempts,
            graph=self.run.graph.name,
            run_id=self.run.run_id,
        )
        await handler.handle(failure)
        self.counters.dead_lettered += 1

    def worker_exited(self) -> None:
        self.workers_left -= 1
        if self.workers_left == 0:
            self.counters.finished_at = anyio.current_time()

    def statistics(self) -> NodeStatistics:
        c, node = self.counters, self.node
        queue = self.inbox.statistics() if self.inbox is not None else None
        return NodeStatistics(
            name=self.name,
            kind=node.kind.value,
            items_in=c.items_in,
            items_out=c.items_out,
            errors=c.errors,
            retries=c.retries,
            skipped=c.skipped,
            dead_lettered=c.dead_lettered,
            in_flight=c.in_flight,
            queue_depth=queue.current_buffer_used if queue else 0,
            queue_capacity=int(queue.max_buffer_size) if queue else 0,
            workers=node.workers,
            elapsed=elapsed_between(c.started_at, c.finished_at),
            finished=c.finished_at is not None,
        )


@final
class Run:
    """A graph running in the current event loop; get one from :func:`open_run`."""

    def __init__(self, graph: Graph, *, dead_letters: FailureHandler | None = None) -> None:
        self.graph = graph
        self.run_id = uuid.uuid4().hex
        self.dead_letters = dead_letters
        self._started_at = anyio.current_time()
        self._finished_at: float | None = None
        for node in graph.nodes.values():
            if node.on_error == "dead_letter" and dead_letters is None:
                raise GraphError(
                    f"{node.kind.value} {node.name!r} has on_error='dead_letter' but the run "
                    "has no dead-letter store: pass dead_letters= to run()"
                )
        self._nodes: dict[str, _NodeRun] = {}
        try:
            for name, node in graph.nodes.items():
                self._nodes[name] = _NodeRun(node, self)
        except BaseException:
            self._close()
            raise

    def statistics(self) -> RunStatistics:
        """Return a snapshot of every node's counters; cheap, callable at any time."""
        return RunStatistics(
            graph=self.graph.name,
            elapsed=elapsed_between(self._started_at, self._finished_at),
            nodes={name: nr.statistics() for name, nr in self._nodes.items()},
        )

    @property
    def result(self) -> RunResult:
        """The run's result, once the ``open_run`` block has exited without error."""
        if self._finished_at is None:
            raise RuntimeError("the run has not finished yet")
        stats = self.statistics()
        return RunResult(self.graph.name, self.run_id, stats, stats.elapsed)

    def _start(self, task_group: TaskGroup) -> None:
        """Wire every node's workers to their streams and start them."""
        graph = self.graph
        for name, nr in self._nodes.items():
            nr.counters.started_at = self._started_at
            downstream = graph.downstream(name)
            route = graph.route_of(name)
            for _ in range(nr.workers_left):
                outputs = {d: self._inbox_sender(d).clone() for d in downstream}
                emit = make_emitter(name, outputs, route, nr.fail) if outputs else None
                worker = _source_task if nr.node.kind is NodeKind.SOURCE else _worker
                task_group.start_soon(_guard, nr, worker, emit, list(outputs.values()), name=name)
        for nr in self._nodes.values():
            if nr.inbox_send is not None:
                nr.inbox_send.close()

    def _close(self) -> None:
        # Inputs close only here: closing one when its node fails would make its
        # upstreams raise BrokenResourceError before the cancellation reaches them.
        self._finished_at = anyio.current_time()
        for nr in self._nodes.values():
            if nr.inbox is not None:
                nr.inbox.close()

    def _inbox_sender(self, name: str) -> MemoryObjectSendStream[Any]:
        sender = self._nodes[name].inbox_send
        assert sender is not None
        return sender


async def _guard(
    nr: _NodeRun, worker: Any, emit: Emit | None, outputs: list[MemoryObjectSendStream[Any]]
) -> None:
    """Run one worker; whatever happens, close its output streams and mark it exited."""
    try:
        await worker(nr, emit)
    finally:
        for stream in outputs:
            stream.close()
        nr.worker_exited()


async def _worker(nr: _NodeRun, emit: Emit | None) -> None:
    """Take items from the node's input until it ends; call the node on each; emit outputs."""
    if nr.turns is not None:
        await _ordered_worker(nr, nr.turns, emit)
        return
    inbox = nr.inbox
    assert inbox is not None
    call, many, counters, fail = nr.call, nr.many, nr.counters, nr.fail
    receive_nowait, receive = inbox.receive_nowait, inbox.receive
    checkpoint = anyio.lowlevel.checkpoint
    budget = YIELD_EVERY
    while True:
        try:
            item = receive_nowait()
        except WouldBlock:
            try:
                item = await receive()
            except EndOfStream:
                return
            budget = YIELD_EVERY
        except EndOfStream:
            return
        counters.items_in += 1
        counters.in_flight += 1
        try:
            result = await call(item)
        except Exception as exc:
            await fail(item, exc)
        else:
            if emit is None:
                counters.items_out += 1
            elif many:
                for out in result:
                    await emit(out)
                counters.items_out += len(result)
            else:
                await emit(result)
                counters.items_out += 1
        counters.in_flight -= 1
        budget -= 1
        if not budget:
            budget = YIELD_EVERY
            await checkpoint()


class _Turns:
    """Hands out sequence numbers on receipt and lets workers emit strictly in that order.

    A worker holds at most one finished item while it waits for its turn, so the
    reorder buffer never holds more than ``workers`` items.
    """

    def __init__(self) -> None:
        self.lock = anyio.Lock()
        self.next_ticket = 0
        self.now_serving = 0
        self.waiting: dict[int, anyio.Event] = {}

    def take(self) -> int:
        ticket = self.next_ticket
        self.next_ticket += 1
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


async def _ordered_worker(nr: _NodeRun, turns: _Turns, emit: Emit | None) -> None:
    inbox = nr.inbox
    assert inbox is not None
    call, many, counters = nr.call, nr.many, nr.counters
    while True:
        async with turns.lock:
            try:
                item = await inbox.receive()
            except EndOfStream:
                return
            ticket = turns.take()
        counters.items_in += 1
        counters.in_flight += 1
        try:
            result = await call(item)
        except Exception as exc:
            await turns.wait(ticket)
            try:
                await nr.fail(item, exc)
            finally:
                turns.done()
        else:
            await turns.wait(ticket)
            outs = result if many else [result]
            if emit is not None:
                for out in outs:
                    await emit(out)
            counters.items_out += len(outs)
            turns.done()
        counters.in_flight -= 1


async def _source_task(nr: _NodeRun, emit: Emit | None) -> None:
    """Read the source's iterable and emit every item, yielding now and then."""
    assert emit is not None
    counters = nr.counters
    try:
        iterable = await source_iterable(nr.node)()
        checkpoint = anyio.lowlevel.checkpoint
        budget = YIELD_EVERY
        async with aclosing(_iterate(iterable, nr.name)) as items:
            async for item in items:
                await emit(item)
                counters.items_out += 1
                budget -= 1
                if not budget:
                    budget = YIELD_EVERY
                    await checkpoint()
    except NodeError:
        raise
    except Exception as exc:
        counters.errors += 1
        raise NodeError.for_source(nr.name, counters.items_out, exc) from exc


async def _iterate(iterable: Any, name: str) -> AsyncGenerator[Any, None]:
    if isinstance(iterable, AsyncIterable):
        iterator = aiter(iterable)
        try:
            async for item in iterator:
                yield item
        finally:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                await aclose()
    elif isinstance(iterable, Iterator):
        async for item in _iterate_in_thread(iterable):
            yield item
    elif isinstance(iterable, Iterable):
        for item in iterable:
            yield item
    else:
        raise TypeError(
            f"source {name!r} must produce an iterable or async iterable, "
            f"got {type(iterable).__name__}"
        )


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


@asynccontextmanager
async def open_run(
    graph: Graph, *, dead_letters: FailureHandler | None = None
) -> AsyncIterator[Run]:
    """Start running *graph* in the current event loop; the block waits for it to finish.

    The body of the ``async with`` runs beside the graph: read
    ``run.statistics()`` there at any time. Leaving the block waits until every
    sink has drained. If the body raises or is cancelled, the graph is cancelled;
    if a node fails, the body is cancelled and the block raises the node's error.

    Raises:
        GraphError: if the graph is not valid; nothing has started then.
        NodeError: if a node failed under the ``"raise"`` policy.
    """
    graph.validate()
    run = Run(graph, dead_letters=dead_letters)
    try:
        async with anyio.create_task_group() as task_group:
            run._start(task_group)
            yield run
    except BaseExceptionGroup as group:
        error = _single_error(group)
        if error is None:
            raise
        raise error from error.__cause__
    finally:
        run._close()


def _single_error(group: BaseExceptionGroup[Any]) -> BaseException | None:
    """The one real error in *group*, ignoring cancellations; ``None`` if there are several."""
    cancelled = anyio.get_cancelled_exc_class()
    errors = [exc for exc in _leaves(group) if not isinstance(exc, cancelled)]
    return errors[0] if len(errors) == 1 else None


def _leaves(group: BaseExceptionGroup[Any]) -> Iterator[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc


async def run_graph(graph: Graph, *, dead_letters: FailureHandler | None = None) -> RunResult:
    """Run *graph* to completion in the current event loop and return its result."""
    async with open_run(graph, dead_letters=dead_letters) as run:
        pass
    return run.result


def run(
    graph: Graph,
    *,
    backend: str = "asyncio",
    backend_options: dict[str, Any] | None = None,
    **options: Any,
) -> RunResult:
    """Run *graph* in a new event loop of *backend* (``"asyncio"`` or ``"trio"``).

    The plain-function entry point for scripts; inside an async program use
    ``await graph.run()`` instead. Accepts the same options as :func:`open_run`.
    """
    return anyio.run(
        functools.partial(run_graph, graph, **options),
        backend=backend,
        backend_options=backend_options,
    )
