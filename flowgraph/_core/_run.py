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
import uuid
import warnings
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Unpack, final

import anyio

from ._acks import CheckpointStore, Tracking, claim
from ._barriers import BarrierRun
from ._batch import run_batcher
from ._edges import make_emitter, make_outlets
from ._events import (
    Event,
    HookTable,
    NodeFinished,
    NodeStarted,
    RunFinished,
    RunStarted,
    add_hook,
    call_isolated,
    call_sync_isolated,
    is_async,
)
from ._options import HookSpec, RunOptions, check_run_options
from ._stats import RunStatistics, elapsed_between
from ._validate import to_seconds
from ._workers import NodeRun, run_worker

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping

    from anyio.abc import TaskGroup
    from anyio.streams.memory import MemoryObjectSendStream

    from ._graph import Graph
    from ._policy import FailureHandler

logger = logging.getLogger("flowgraph")


@final
@dataclass(frozen=True, slots=True)
class RunResult:
    """What a finished run reports.

    Attributes:
        graph: the graph's name.
        run_id: a unique id of this run (also recorded with dead letters).
        statistics: the final statistics; ``result.statistics["fetch"].items_out``.
        elapsed: seconds the run took.
        stopped: whether the run was stopped (``Run.stop``) rather than finishing
            its input; items still in flight after the grace period were cancelled.
    """

    graph: str
    run_id: str
    statistics: RunStatistics
    elapsed: float
    stopped: bool = False

    @property
    def stats(self) -> RunStatistics:
        """Deprecated name of :attr:`statistics`."""
        warnings.warn(
            "RunResult.stats is now RunResult.statistics", DeprecationWarning, stacklevel=2
        )
        return self.statistics


@final
class Run:
    """A graph running in the current event loop; get one from :func:`open_run`."""

    def __init__(
        self,
        graph: Graph,
        *,
        dead_letters: FailureHandler | None = None,
        hooks: Iterable[HookSpec] = (),
        checkpoints: CheckpointStore | None = None,
        resume: Mapping[str, Any] | None = None,
    ) -> None:
        self.graph = graph
        self.run_id = uuid.uuid4().hex
        self.dead_letters = dead_letters
        self._hooks: HookTable = {kind: list(fns) for kind, fns in graph.hooks.items()}
        for event_type, hook in hooks:
            add_hook(self._hooks, event_type, hook)
        self._started_at = anyio.current_time()
        self._finished_at: float | None = None
        self._scope = anyio.CancelScope()
        self._task_group: TaskGroup | None = None
        self._all_finished = anyio.Event()
        self._barriers = [BarrierRun(barrier, self) for barrier in graph.barriers.values()]
        for barrier in self._barriers:
            add_hook(self._hooks, NodeFinished, barrier.node_finished)
        self._nodes_left = len(graph.nodes) + len(self._barriers)
        self.stopping = False
        self.tracking = (
            Tracking(self, checkpoints, resume or {})
            if checkpoints is not None and any(n.checkpoint for n in graph.nodes.values())
            else None
        )
        self._nodes: dict[str, NodeRun] = {}
        try:
            for name, node in graph.nodes.items():
                self._nodes[name] = NodeRun(node, self)
        except BaseException:
            self._close()
            raise

    # -- public -----------------------------------------------------------------------

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
        return RunResult(self.graph.name, self.run_id, stats, stats.elapsed, self.stopping)

    def stop(self, grace: float | None = None) -> None:
        """Stop the sources and let in-flight items finish within *grace* seconds.

        Sources stop at once; the items already taken drain through the graph.
        Items still running after *grace* seconds are cancelled (they stay
        unacknowledged, so a checkpointed source replays them on restart). With
        ``grace=None`` the drain may take as long as it needs. Calling ``stop``
        again shortens the grace period; ``stop(grace=0)`` cancels at once.
        """
        self.stopping = True
        for nr in self._nodes.values():
            nr.stop_scope.cancel()
        if grace is not None:
            self._scope.deadline = min(self._scope.deadline, anyio.current_time() + grace)

    def start_soon(
        self, fn: Callable[..., Awaitable[Any]], *args: Any, name: str | None = None
    ) -> None:
        """Start side work in the run's task group: the run waits for it before it returns.

        An exception in the side work is logged and never breaks the run; the
        side work is cancelled if the run fails or is cancelled.

        Raises:
            RuntimeError: if the run's task group is not open (before start or after end).
        """
        if self._task_group is None:
            raise RuntimeError("the run is not running: cannot start side work")
        self._task_group.start_soon(_isolated, fn, args, name=name)

    async def wait_finished(self) -> None:
        """Wait until every node has finished (sources exhausted, every sink drained)
        and every barrier (``graph.after``) has run."""
        await self._all_finished.wait()

    # -- engine -------------------------------------------------------------------------

    def emit(self, event: Event) -> None:
        """Dispatch *event* to its hooks: sync ones now, async ones as tasks of the run."""
        hooks = self._hooks.get(type(event))
        if not hooks:
            return
        for hook in hooks:
            if is_async(hook) and self._task_group is not None:
                self._task_group.start_soon(call_isolated, hook, event)
            else:
                call_sync_isolated(hook, event)

    @property
    def all_finished(self) -> bool:
        """Whether every node has finished."""
        return self._all_finished.is_set()

    def node_finished(self) -> None:
        self._nodes_left -= 1
        if self._nodes_left == 0:
            self._all_finished.set()
            if self.tracking is not None:
                self.tracking.due.set()

    def _start(self, task_group: TaskGroup) -> None:
        """Wire every node's workers to their streams and start them."""
        self._task_group = task_group
        self.emit(RunStarted(self))
        graph = self.graph
        for name, nr in self._nodes.items():
            nr.counters.started_at = self._started_at
            self.emit(NodeStarted(self, name))
            downstream = graph.downstream(name)
            route = graph.route_of(name)
            limits = {d: self._nodes[d].chunk_limit for d in downstream}
            outputs = {d: self._inbox_sender(d).clone() for d in downstream}
            outlets = make_outlets(outputs, limits, routed=route is not None)
            for target, outlet in outlets.items():
                self._nodes[target].inbound.append(outlet)
            emit = (
                make_emitter(name, outlets, route, nr.fail, tracked=self.tracking is not None)
                if outputs
                else None
            )
            nr.outlets = list(dict.fromkeys(outlets.values()))
            nr.start_workers(
                functools.partial(task_group.start_soon, run_worker, nr, emit, name=name)
            )
        for nr in self._nodes.values():
            if nr.inbox_send is not None:
                nr.inbox_send.close()
            if nr.batches is not None:
                assert nr.node.batch is not None
                assert nr.intake is not None
                task_group.start_soon(
                    functools.partial(
                        run_batcher,
                        nr.node.batch,
                        nr.intake,
                        nr.batches,
                        nr.batcher,
                        tracked=self.tracking is not None,
                    ),
                    name=f"{nr.name} batcher",
                )
        for barrier in self._barriers:
            task_group.start_soon(barrier.wait_and_call, name=barrier.barrier.describe())
        if self.tracking is not None:
            task_group.start_soon(self.tracking.commit_periodically)

    async def _report(self, interval: float) -> None:
        """Log one line per node every *interval* seconds until every node has finished."""
        while not self._all_finished.is_set():
            with anyio.move_on_after(interval):
                await self._all_finished.wait()
            if not self._all_finished.is_set():
                for stats in self.statistics().nodes.values():
                    logger.info("%s: %s", self.graph.name, stats.describe())

    def _close(self) -> None:
        # Inputs close only here: closing one when its node fails would make its
        # upstreams raise BrokenResourceError before the cancellation reaches them.
        self._task_group = None
        self._finished_at = anyio.current_time()
        for nr in self._nodes.values():
            for stream in (nr.inbox, nr.intake):
                if stream is not None:
                    stream.close()

    def _inbox_sender(self, name: str) -> MemoryObjectSendStream[Any]:
        sender = self._nodes[name].inbox_send
        assert sender is not None
        return sender


async def _isolated(fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> None:
    try:
        await fn(*args)
    except Exception:
        logger.exception("side work %r failed", fn)


@asynccontextmanager
async def open_run(graph: Graph, **options: Unpack[RunOptions]) -> AsyncIterator[Run]:
    """Start running *graph* in the current event loop; the block waits for it to finish.

    The body of the ``async with`` runs beside the graph: read
    ``run.statistics()`` there at any time, or call ``run.stop()``. Leaving the
    block waits until every sink has drained. If the body raises or is
    cancelled, the graph is cancelled; if a node fails, the body is cancelled and
    the block raises the node's error. The graph cannot be changed while it runs.

    Resources open for the run's duration: the dead-letter and checkpoint
    stores, and every node function that is an async context manager (a sink
    holding a database connection, say), in that order, closed in reverse.
    Every check happens before the first of them is opened.

    Args:
        graph: the graph to run; it is validated first.
        **options: see :class:`RunOptions`: ``dead_letters``, ``checkpoints``,
            ``hooks``, ``log_interval``.

    Raises:
        GraphError: if the graph or an option is not valid; nothing has started then.
        NodeError: if a node failed under the ``"raise"`` policy.
    """
    check_run_options(graph, options)
    log_interval = options.get("log_interval")
    if log_interval is not None:
        log_interval = to_seconds("log_interval", log_interval)
    dead_letters = options.get("dead_letters")
    checkpoints = options.get("checkpoints")
    async with AsyncExitStack() as resources:
        for resource in (dead_letters, checkpoints, *(n.fn for n in graph.nodes.values())):
            handle: Any = resource
            if isinstance(handle, AbstractAsyncContextManager):
                await resources.enter_async_context(handle)
        resume = await claim(resources, checkpoints, graph) if checkpoints is not None else None
        run = Run(
            graph,
            dead_letters=dead_letters,
            hooks=options.get("hooks", ()),
            checkpoints=checkpoints,
            resume=resume,
        )
        resources.enter_context(graph.running())
        for nr in run._nodes.values():
            await nr.open(resources)
        async with _open_run(run, log_interval) as running:
            yield running


@asynccontextmanager
async def _open_run(run: Run, log_interval: float | None) -> AsyncIterator[Run]:
    graph = run.graph
    error: BaseException | None = None
    try:
        with run._scope:
            async with anyio.create_task_group() as task_group:
                run._start(task_group)
                if log_interval is not None:
                    task_group.start_soon(run._report, log_interval)
                yield run
    except BaseExceptionGroup as group:
        error = _single_error(group)
        if error is None:
            error = group
            raise
        raise error from error.__cause__
    except BaseException as exc:
        error = exc
        raise
    finally:
        if run.tracking is not None:
            await run.tracking.commit_finally()
        run._close()
        for stats in run.statistics().nodes.values():
            logger.info("%s: %s", graph.name, stats.describe())
        await _finish(run, error)


FINISH_HOOKS_GRACE = 5.0
"""Seconds RunFinished hooks may take after a failed or cancelled run, shielded."""


async def _finish(run: Run, error: BaseException | None) -> None:
    """Call the RunFinished hooks, after the task group has closed."""
    hooks = run._hooks.get(RunFinished)
    if hooks:
        event = RunFinished(run, None if error else run.result, error)
        with anyio.move_on_after(FINISH_HOOKS_GRACE, shield=error is not None):
            for hook in hooks:
                await call_isolated(hook, event)


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


async def run_graph(graph: Graph, **options: Unpack[RunOptions]) -> RunResult:
    """Run *graph* to completion in the current event loop and return its result."""
    async with open_run(graph, **options) as run:
        pass
    return run.result
