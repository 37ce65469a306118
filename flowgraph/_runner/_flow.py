"""Flows: graphs that trigger graphs, with the errors of every graph reaching the caller.

A :class:`Flow` runs several graphs in one event loop. A graph added with
``after=`` starts once the graphs it follows have finished successfully;
graphs that follow nothing start at once, concurrently. A graph that fails
does not stop the others: they run on, its followers do not start, and the
flow raises every failure at the end, one error as itself, several as an
``ExceptionGroup``.

A side graph (``alongside=main``) starts with *main* and is fed by main's hooks
through its inlets (:meth:`Graph.inlet`); when *main* ends, well or not, the
flow closes the side graph's inlets and the side graph finishes what they hold.
Its failure never touches *main*, and still reaches the caller at the end.
"""

from __future__ import annotations

import logging
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Unpack, cast, final

import anyio

from .._core._exceptions import GraphError
from .._core._graph import Graph
from .._core._inlet import Inlet
from .._core._options import check_run_options
from .._core._stats import elapsed_between
from ._replay import check_replay, open_graph_run

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping

    from anyio.abc import TaskGroup

    from .._core._options import RunOptions
    from .._core._run import Run, RunResult

logger = logging.getLogger("flowgraph")

GraphOutcome = Literal["succeeded", "failed", "stopped", "not run"]


@final
@dataclass(frozen=True, slots=True)
class FlowResult:
    """What a finished flow reports: ``result["merge"].statistics``.

    Attributes:
        flow: the flow's name.
        results: the result of every graph that ran, by graph name.
        not_run: graphs that did not start because the flow was stopped, or a
            graph they follow was stopped.
        elapsed: seconds the flow took.

    Added in 0.2.
    """

    flow: str
    results: Mapping[str, RunResult]
    not_run: tuple[str, ...] = ()
    elapsed: float = 0.0

    def __getitem__(self, graph: str) -> RunResult:
        return self.results[graph]

    @property
    def stopped(self) -> bool:
        """Whether a graph was stopped, or left out because of a stop."""
        return bool(self.not_run) or any(r.stopped for r in self.results.values())


@dataclass(slots=True)
class _Entry:
    graph: Graph
    after: tuple[str, ...]
    alongside: str | None
    sides: list[str] = field(default_factory=list)

    @property
    def inlets(self) -> list[Inlet]:
        return [n.fn for n in self.graph.nodes.values() if isinstance(n.fn, Inlet)]


@final
class Flow:
    """Graphs run together, each once the graphs it follows have finished successfully.

    ::

        flow = fg.Flow("nightly")
        flow.add(extract)
        flow.add(report, after=extract)     # starts once extract succeeded
        flow.add(failures, alongside=extract)  # fed by extract's hooks
        result = await flow.run()           # or fg.run(flow)

    Args:
        name: names the flow in errors and logs.

    Added in 0.2.
    """

    def __init__(self, name: str = "flow") -> None:
        if not isinstance(name, str) or not name:
            raise GraphError(f"flow name must be a non-empty string (got {name!r})")
        self.name = name
        self._entries: dict[str, _Entry] = {}

    def __repr__(self) -> str:
        return f"<Flow {self.name!r}: {', '.join(map(repr, self._entries))}>"

    @property
    def graphs(self) -> Mapping[str, Graph]:
        """The graphs by name, in the order they were added."""
        return {name: entry.graph for name, entry in self._entries.items()}

    def add(
        self,
        graph: Graph,
        *,
        after: Graph | Iterable[Graph] = (),
        alongside: Graph | None = None,
    ) -> Graph:
        """Add *graph*; it runs once every graph in *after* has finished successfully.

        With *alongside*, *graph* is a side graph: it starts when *alongside*
        starts, and its inlets close when *alongside* ends, so that it then
        finishes what they hold. A graph with inlets needs *alongside*, or the
        flow would never know when its input ends.

        Returns:
            *graph*, unchanged.

        Raises:
            GraphError: if *graph* is not a Graph, its name is taken in the flow,
                a graph in *after* or *alongside* is not in the flow yet, or it
                has inlets and no *alongside*.
        """
        if not isinstance(graph, Graph):
            raise GraphError(f"a flow runs graphs (got {graph!r})")
        if graph.name in self._entries:
            raise GraphError(
                f"flow {self.name!r} already has a graph named {graph.name!r}: "
                "graphs of a flow need names of their own"
            )
        follows = (after,) if isinstance(after, Graph) else tuple(after)
        for other in (*follows, *([alongside] if alongside is not None else [])):
            if not isinstance(other, Graph) or self._entries.get(other.name, None) is None:
                raise GraphError(
                    f"graph {graph.name!r} refers to {other!r}, which is not in flow "
                    f"{self.name!r}: add it first"
                )
            if self._entries[other.name].graph is not other:
                raise GraphError(f"flow {self.name!r} holds another graph named {other.name!r}")
        side_of = alongside.name if alongside is not None else None
        entry = _Entry(graph, tuple(g.name for g in follows), side_of)
        if entry.inlets and alongside is None:
            names = ", ".join(repr(inlet.name) for inlet in entry.inlets)
            raise GraphError(
                f"graph {graph.name!r} has inlets ({names}): add it with alongside= the "
                "graph that feeds them, so that its input ends when that graph ends"
            )
        self._entries[graph.name] = entry
        if alongside is not None:
            self._entries[alongside.name].sides.append(graph.name)
        return graph

    async def run(
        self, *, replay_dead_letters: bool = False, **options: Unpack[RunOptions]
    ) -> FlowResult:
        """Run the flow in the current event loop; return every graph's result.

        Every graph runs with *options* (:class:`~flowgraph.RunOptions`: one
        dead-letter store, one checkpoint store, the same hooks), and with
        ``replay_dead_letters=True`` each first takes back its stored dead
        letters (see :func:`flowgraph.run`).

        Raises:
            GraphError: if a graph or an option is not valid; nothing has started then.
            Exception: the error of the one graph that failed (a ``NodeError``,
                say), with a note naming the graph; ``ExceptionGroup`` of them
                if several failed.
        """
        async with open_flow(self, replay_dead_letters=replay_dead_letters, **options) as run:
            pass
        return run.result


@asynccontextmanager
async def open_flow(
    flow: Flow, *, replay_dead_letters: bool = False, **options: Any
) -> AsyncIterator[FlowRun]:
    """Start running *flow*; the block waits for every graph, then raises their errors."""
    if not flow._entries:
        raise GraphError(f"flow {flow.name!r} has no graphs")
    for entry in flow._entries.values():
        check_run_options(entry.graph, cast("RunOptions", options))
    if replay_dead_letters:
        check_replay(options)
    async with AsyncExitStack() as stack:
        # Shared stores open once, here, rather than by each run at the same moment.
        for name in ("dead_letters", "checkpoints"):
            if isinstance(options.get(name), AbstractAsyncContextManager):
                await stack.enter_async_context(options[name])
        run = FlowRun(flow, dict(options, replay_dead_letters=replay_dead_letters))
        async with anyio.create_task_group() as task_group:
            run._task_group = task_group
            for entry in flow._entries.values():
                task_group.start_soon(run.run_graph, entry, name=f"graph {entry.graph.name!r}")
            yield run
    run.raise_errors()


@final
class FlowRun:
    """A flow running in the current event loop: stop it, or wait for every graph."""

    def __init__(self, flow: Flow, options: dict[str, Any]) -> None:
        self.flow = flow
        self.options = options
        self.stopping = False
        self.runs: dict[str, Run] = {}
        self.outcomes: dict[str, GraphOutcome] = {}
        self.errors: dict[str, Exception] = {}
        self._grace: float | None = None
        self._task_group: TaskGroup | None = None
        self._started_at = anyio.current_time()
        self._finished_at: float | None = None
        self._decided = {name: anyio.Event() for name in flow._entries}
        self._done = {name: anyio.Event() for name in flow._entries}
        self._scopes = {name: anyio.CancelScope() for name in flow._entries}
        for entry in flow._entries.values():
            if entry.alongside is not None:
                for inlet in entry.inlets:
                    inlet.open()  # before the graph that feeds them starts

    def stop(self, grace: float | None = None) -> None:
        """Stop the running graphs gracefully (as ``Run.stop``) and start no more.

        Side graphs are not stopped: they finish what their inlets hold once the
        graphs they run alongside have ended, cancelled after *grace* seconds.
        """
        self.stopping = True
        if grace is not None:
            self._grace = grace if self._grace is None else min(grace, self._grace)
        for name, run in self.runs.items():
            if self.flow._entries[name].alongside is None:
                run.stop(grace)
            elif grace is not None:
                scope = self._scopes[name]
                scope.deadline = min(scope.deadline, anyio.current_time() + grace)

    def start_soon(
        self, fn: Callable[..., Awaitable[Any]], *args: Any, name: str | None = None
    ) -> None:
        """Start side work beside the graphs; an exception in it is logged, never raised."""
        assert self._task_group is not None
        self._task_group.start_soon(_isolated, fn, args, name=name)

    async def wait_finished(self) -> None:
        """Wait until every graph has finished or been left out."""
        for done in self._done.values():
            await done.wait()

    @property
    def result(self) -> FlowResult:
        """The flow's result, once :func:`open_flow`'s block has exited without error."""
        ran = ("succeeded", "stopped")
        results = {
            name: self.runs[name].result
            for name in self.flow._entries
            if self.outcomes.get(name) in ran
        }
        not_run = tuple(n for n, outcome in self.outcomes.items() if outcome == "not run")
        elapsed = elapsed_between(self._started_at, self._finished_at)
        return FlowResult(self.flow.name, results, not_run, elapsed)

    async def run_graph(self, entry: _Entry) -> None:
        name = entry.graph.name
        try:
            blocked = await self._wait_turn(entry)
            self._decided[name].set()
            if blocked is not None:
                self.outcomes[name] = "not run"
                if blocked:
                    logger.warning(
                        "flow %r: graph %r did not run: %s", self.flow.name, name, blocked
                    )
                for inlet in entry.inlets:
                    async with inlet:  # closes the buffer the flow opened for it
                        pass
                return
            await self._run(entry)
        finally:
            self._decided[name].set()
            self._done[name].set()
            for side in entry.sides:
                for inlet in self.flow._entries[side].inlets:
                    inlet.close()
            if all(done.is_set() for done in self._done.values()):
                self._finished_at = anyio.current_time()

    async def _wait_turn(self, entry: _Entry) -> str | None:
        """Wait for the graphs *entry* follows; say why it must not run, if it must not."""
        for name in entry.after:
            await self._done[name].wait()
        if entry.alongside is not None:
            await self._decided[entry.alongside].wait()
        failed = [n for n in entry.after if self.outcomes[n] == "failed"]
        if failed:
            return ""  # the failure, with a note naming this graph, tells the caller
        if entry.alongside is not None and self.outcomes.get(entry.alongside) == "not run":
            return f"{entry.alongside!r}, which it runs alongside, did not run"
        if self.stopping and entry.alongside is None:
            return "the flow was stopped"
        stopped = [n for n in entry.after if self.outcomes[n] in ("stopped", "not run")]
        if stopped:
            return f"{', '.join(map(repr, stopped))} did not finish"
        return None

    async def _run(self, entry: _Entry) -> None:
        name = entry.graph.name
        try:
            with self._scopes[name]:
                async with open_graph_run(entry.graph, **self.options) as run:
                    self.runs[name] = run
                    if self.stopping and entry.alongside is None:
                        run.stop(self._grace)
        except Exception as exc:
            exc.add_note(f"flowgraph: graph {name!r} of flow {self.flow.name!r} failed")
            self.errors[name] = exc
            self.outcomes[name] = "failed"
            return
        if name not in self.runs:  # cancelled by the flow's grace before it started
            self.outcomes[name] = "not run"
            return
        stopped = self.runs[name].stopping or self._scopes[name].cancelled_caught
        self.outcomes[name] = "stopped" if stopped else "succeeded"

    def raise_errors(self) -> None:
        """Raise the failure of every graph that failed: one as itself, several in a group."""
        if not self.errors:
            return
        for name, error in self.errors.items():
            skipped = [n for n in self._followers(name) if self.outcomes.get(n) == "not run"]
            if skipped:
                error.add_note(
                    f"flowgraph: so {', '.join(map(repr, skipped))} did not run "
                    f"(flow {self.flow.name!r})"
                )
        failed = [name for name in self.flow._entries if name in self.errors]
        errors = [self.errors[name] for name in failed]
        if len(errors) == 1:
            raise errors[0]
        names = ", ".join(map(repr, failed))
        raise ExceptionGroup(
            f"{len(errors)} graphs of flow {self.flow.name!r} failed: {names}", errors
        )

    def _followers(self, name: str) -> list[str]:
        """The graphs that follow *name*, directly or not, or run alongside one that does."""
        reached = [name]
        for current in reached:
            for other, entry in self.flow._entries.items():
                if other not in reached and (current in entry.after or entry.alongside == current):
                    reached.append(other)
        return reached[1:]


async def _isolated(fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> None:
    try:
        await fn(*args)
    except Exception:
        logger.exception("side work %r failed", fn)
