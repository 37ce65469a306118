"""Graph: declare nodes and the edges between them, and refuse graphs that cannot run.

A ``Graph`` is inert data. Declaring it starts nothing; it can be validated,
drawn and run any number of times. Every mistake that can be caught without
running is caught here, as early as possible: bad options when a node is
declared, cycles and misuse of sources and sinks when an edge is added, and
dangling nodes when the graph is validated (which every run does first).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, Unpack, overload

from . import _derive
from ._barriers import Barrier
from ._batch import Batch
from ._events import E, Event, Hook, HookTable, add_hook
from ._exceptions import GraphError
from ._functions import fn_kind
from ._inlet import Inlet, WhenFull
from ._nodes import Collection, Node, NodeKind
from ._options import (
    DEFAULT_BUFFER,
    GRAPH_DEFAULTS,
    SOURCE_OPTIONS,
    TRANSFORM_OPTIONS,
    GraphDefaults,
    SourceOptions,
    TransformOptions,
    check_names,
    check_option,
)
from ._topology import NodeRef, Topology

if TYPE_CHECKING:
    from datetime import timedelta

    from ._options import RunOptions
    from ._run import RunResult

P = ParamSpec("P")
R = TypeVar("R")
F = TypeVar("F", bound=Callable[..., Any])


def _batch_buffer(batch: Batch | int) -> int:
    """The input buffer of a batching node that sets none: room for a batch, so its stream
    carries full chunks, up to 1,024 items."""
    size = batch if isinstance(batch, int) else batch.size
    return DEFAULT_BUFFER if size is None else max(DEFAULT_BUFFER, min(size, 1024))


def _pass_batch(items: list[Any]) -> list[Any]:
    return items


def _unbatch(items: Iterable[Any]) -> Iterator[Any]:
    yield from items


class Graph(Topology):
    """A directed acyclic graph of nodes joined by bounded streams.

    Args:
        name: names the graph in errors, statistics and checkpoint stores.
        **defaults: options for every node that does not set them itself
            (``buffer=100``, ``workers=4``, ``retry=fg.Retry()``...); see
            :class:`~flowgraph.GraphDefaults`.

    Raises:
        GraphError: if the name is empty, or a default is unknown or invalid.
    """

    def __init__(self, name: str = "graph", **defaults: Unpack[GraphDefaults]) -> None:
        if not isinstance(name, str) or not name:
            raise GraphError(f"graph name must be a non-empty string (got {name!r})")
        label = f"graph {name!r}"
        check_names(f"{label} has no default", defaults, GRAPH_DEFAULTS)
        for option, value in defaults.items():
            check_option(label, option, value)
        super().__init__(name)
        self.defaults: Mapping[str, Any] = dict(defaults)
        self._hooks: HookTable = {}
        self._barriers: dict[str, Barrier] = {}

    def __repr__(self) -> str:
        return f"<Graph {self.name!r}: {len(self._nodes)} nodes>"

    # -- declaring nodes -------------------------------------------------------------

    @overload
    def source(self, fn: Callable[P, R], /, **options: Unpack[SourceOptions]) -> Node[P, R]: ...
    @overload
    def source(
        self, fn: Iterable[Any] | AsyncIterable[Any], /, **options: Unpack[SourceOptions]
    ) -> Node[[], Any]: ...
    @overload
    def source(
        self, fn: None = None, /, **options: Unpack[SourceOptions]
    ) -> Callable[[Callable[P, R]], Node[P, R]]: ...
    def source(self, fn: Any = None, /, **options: Unpack[SourceOptions]) -> Any:
        """Declare a source: a node that produces items and has no upstream.

        *fn* is an async or sync generator function, a function (async or sync)
        returning an iterable or async iterable, or an iterable given directly
        (then ``name=`` is required). Sync iterators are read in a worker thread;
        lists, ranges and other re-iterable collections are read on the event loop.
        Works as ``@graph.source``, ``@graph.source(name=...)`` or a plain call.

        A ``checkpoint=True`` source is called with the position to resume after
        (``None`` the first time) and yields ``fg.Positioned(item, position)``;
        a run with a checkpoint store records, per source, the position up to
        which every item has been fully processed. At most ``max_in_flight`` of its
        items are unacknowledged at once: the bound on duplicates after a crash.

        Policies work on sources as on transforms: ``rate=`` and ``timeout=``
        apply to taking each next item, ``retry=`` runs a failed source again (a
        checkpointed one resumes after the last item it emitted; another one that
        had emitted items is not run again unless ``idempotent=True``), and
        ``on_error="skip"`` or ``"dead_letter"`` ends a source that gives up while
        the graph drains what it emitted, counting the error.

        Keyword Args:
            name (str): node name, unique in the graph (default: the function's name).
            checkpoint (bool): hand the source its resume position; track its items.
            max_in_flight (int): most unacknowledged items of a checkpointed source.
            retry (Policy | None): retry a failed source, as for :meth:`transform`.
            rate (Policy | None): limit how fast the source's items are taken.
            timeout (float | timedelta | None): seconds each next item may take.
            on_error (str): what to do when the source gives up, as for :meth:`transform`.
            idempotent (bool): a failed source that had emitted items may run again.

        Raises:
            GraphError: if an option is unknown or invalid, or the name is taken.
        """
        if fn is None:
            return lambda f: self.source(f, **options)
        if not callable(fn):
            if not isinstance(fn, Iterable | AsyncIterable):
                raise GraphError(
                    f"a source must be a function or an iterable (got {type(fn).__name__})"
                )
            if "name" not in options:
                raise GraphError("a source given as an iterable needs name=")
            fn = Collection(fn)
        return self._declare(NodeKind.SOURCE, fn, dict(options))

    @overload
    def transform(
        self, fn: Callable[P, R], /, **options: Unpack[TransformOptions]
    ) -> Node[P, R]: ...
    @overload
    def transform(
        self, fn: None = None, /, **options: Unpack[TransformOptions]
    ) -> Callable[[Callable[P, R]], Node[P, R]]: ...
    def transform(self, fn: Any = None, /, **options: Unpack[TransformOptions]) -> Any:
        """Declare a transform: each input item becomes zero, one or many output items.

        An async or sync function returns one output item per input; a generator
        function (async or sync) yields any number. Sync functions run in worker
        threads, at most *workers* at once, unless ``inline=True`` says they are
        quick enough to run on the event loop. Options the node does not set come
        from the graph's defaults (``fg.Graph("g", workers=4)``).

        Keyword Args:
            name (str): node name, unique in the graph (default: the function's name).
            workers (int): how many items the node processes concurrently.
            buffer (int): how many items may wait in the node's input stream; a full
                buffer pushes back on the upstream nodes. ``0`` hands items over one
                at a time.
            ordered (bool): emit outputs in input order even with several workers.
            inline (bool): run a sync function on the event loop instead of in a thread.
            retry (Policy | None): a retry policy such as ``fg.Retry(attempts=5)``.
            rate (Policy | None): a rate limit such as ``fg.Rate(10, per=1.0)``; one
                budget for every node given the same object.
            limit (Policy | None): a concurrency limit shared with other nodes, ``fg.Limit(4)``.
            timeout (float | timedelta | None): seconds one item may take, all attempts included.
            on_error (str): what to do with an item that still fails: ``"raise"`` fails
                the run, ``"skip"`` counts and drops it, ``"dead_letter"`` stores it.

        Raises:
            GraphError: if an option is unknown or invalid, or the name is taken.
        """
        return self._declare(NodeKind.TRANSFORM, fn, dict(options))

    @overload
    def sink(self, fn: Callable[P, R], /, **options: Unpack[TransformOptions]) -> Node[P, R]: ...
    @overload
    def sink(
        self, fn: None = None, /, **options: Unpack[TransformOptions]
    ) -> Callable[[Callable[P, R]], Node[P, R]]: ...
    def sink(self, fn: Any = None, /, **options: Unpack[TransformOptions]) -> Any:
        """Declare a sink: a node that consumes items and has no downstream.

        Takes the same options as :meth:`transform`; the function's return value
        is ignored. A run finishes when every sink has drained its input.
        """
        return self._declare(NodeKind.SINK, fn, dict(options))

    def batch(
        self,
        size: int | None = None,
        *,
        within: float | timedelta | None = None,
        name: str | None = None,
    ) -> Node[[list[Any]], list[Any]]:
        """Declare a node that groups its input items into lists: ``graph.batch(1000, within=0.5)``.

        A list is handed on when it holds *size* items, *within* seconds after
        its first item, or at the end of input (a graceful stop included), so
        the tail is never lost; see :class:`~flowgraph.Batch`. Its items are
        acknowledged once the list, and everything made from it, is finished.
        To batch the input of a function that takes a list, give it ``batch=``.

        Raises:
            GraphError: if neither *size* nor *within* is given, or one is out of range.
        """
        node: Node[[list[Any]], list[Any]] = self.transform(
            _pass_batch,
            name=name if name is not None else _derive.unique("batch", self._nodes),
            batch=Batch(size, within=within),
            executor="loop",
        )
        return node

    def unbatch(self, *, name: str | None = None) -> Node[[Iterable[Any]], Iterator[Any]]:
        """Declare a node that emits each item of every list it receives, one by one."""
        node: Node[[Iterable[Any]], Iterator[Any]] = self.transform(
            _unbatch,
            name=name if name is not None else _derive.unique("unbatch", self._nodes),
            executor="loop",
        )
        return node

    def inlet(self, name: str, *, buffer: int = 1000, when_full: WhenFull = "drop") -> Inlet:
        """Declare a source whose items are sent in from outside while the graph runs.

        ``inlet.send_nowait(item)`` hands it an item, from a hook of another
        graph say, and never waits or raises: when the *buffer* is full (or no
        run is reading the inlet) the item is dropped and counted in
        ``inlet.dropped``, with a warning. With ``when_full="wait"``,
        ``await inlet.send(item)`` waits for room instead, holding up only the
        task that sends. The source ends when :meth:`Inlet.close` is called (a
        :class:`~flowgraph.Flow` closes it when the graphs it runs alongside
        end) and it has handed on what it holds. Connect it as a node:
        ``graph.connect(inlet, store)``.

        Raises:
            GraphError: if *buffer* is not an int >= 1, *when_full* is neither
                ``"drop"`` nor ``"wait"``, or the name is taken.

        Added in 0.2.
        """
        inlet = Inlet(name, buffer=buffer, when_full=when_full)
        inlet.node = self.source(inlet, name=name)
        return inlet

    def _declare(self, kind: NodeKind, fn: Any, options: dict[str, Any]) -> Any:
        if fn is None:
            return lambda f: self._declare(kind, f, options)
        if not callable(fn):
            raise GraphError(f"a {kind.value} must be a function (got {type(fn).__name__})")
        takes = SOURCE_OPTIONS if kind is NodeKind.SOURCE else TRANSFORM_OPTIONS
        if fn_kind(fn).is_async:
            takes -= {"executor", "inline"}  # a default for sync functions only
        defaults = {k: v for k, v in self.defaults.items() if k in takes}
        batch = options.get("batch", defaults.get("batch"))
        if isinstance(batch, int | Batch) and "buffer" not in options | defaults:
            options["buffer"] = _batch_buffer(batch)
        return self._add(Node(fn, graph=self, kind=kind, **{**defaults, **options}))

    def feed(
        self, node: NodeRef, items: Iterable[Any] | AsyncIterable[Any], **changes: Any
    ) -> Graph:
        """Return a new graph that feeds *items* into *node* and everything downstream of it.

        The new graph holds copies of *node* and its descendants, with the same
        options, edges, routes and hooks; *changes* override options of *node*'s
        copy (``on_error="raise"`` when replaying dead letters, say). Used to
        replay items into the middle of a pipeline.

        Raises:
            GraphError: if *node* is a source, which takes no input.
        """
        return _derive.feed(self, node, items, **changes)

    def copy(self) -> Graph:
        """Return a copy of the graph to extend without changing this one.

        The copy has the same name, defaults, nodes (with their options and
        functions), edges, routes, hooks and barriers; nodes, edges and hooks
        added to it later are its own. Replaying dead letters runs a copy with
        one more source per node that has letters.

        Added in 0.2.
        """
        return _derive.copy(self)

    # -- drawing -----------------------------------------------------------------------

    def to_mermaid(self) -> str:
        """Draw the graph as a Mermaid flowchart; labels show workers, buffer and policies."""
        from ._draw import to_mermaid

        return to_mermaid(self)

    def to_dot(self) -> str:
        """Draw the graph in Graphviz DOT; labels show workers, buffer and policies."""
        from ._draw import to_dot

        return to_dot(self)

    # -- hooks -----------------------------------------------------------------------

    def on(self, event_type: type[E]) -> Callable[[Hook[E]], Hook[E]]:
        """Register a hook for *event_type* on every run of this graph.

        ``@graph.on(fg.ItemFailed)`` above a sync or async function taking the
        event. Sync hooks run on the event loop and should be quick; async hooks
        run as tasks of the run, which waits for them. A hook's exception is
        logged, never raised into the run.

        Raises:
            GraphError: if *event_type* is not one of flowgraph's events.
        """

        def register(hook: Hook[E]) -> Hook[E]:
            self._check_not_running()
            add_hook(self._hooks, event_type, hook)
            return hook

        return register

    @property
    def hooks(self) -> Mapping[type[Event], list[Callable[[Any], Any]]]:
        """The registered hooks by event type."""
        return {kind: list(fns) for kind, fns in self._hooks.items()}

    # -- barriers --------------------------------------------------------------------

    def after(self, *nodes: NodeRef, name: str | None = None) -> Callable[[F], F]:
        """Call the decorated function once per run, when every one of *nodes* has finished.

        ``@graph.after(a, b, c)`` above an async or sync function taking
        ``{node name: NodeStatistics}`` (a sync one runs in a worker thread).
        The function is part of the run, unlike a hook: the run waits for it,
        and its exception fails the run as a :class:`~flowgraph.NodeError`
        naming the barrier. If the run fails or is cancelled before all of
        *nodes* have finished, it is not called; after a graceful stop it is,
        once they have drained (and cancelled with the rest if the stop's grace
        period runs out). The decorated function is returned unchanged.

        Args:
            *nodes: the nodes to wait for, by reference or name.
            name: names the barrier in errors (default: the function's name).

        Raises:
            GraphError: if no node is given, one is unknown or given twice, the
                function does not take one argument, or the name is taken.

        Added in 0.2.
        """
        self._check_not_running()
        if not nodes:
            raise GraphError("after() needs at least one node to wait for")
        names = [self._resolve(node).name for node in nodes]
        for node in names:
            if names.count(node) > 1:
                raise GraphError(f"after() names node {node!r} twice")

        def register(fn: F) -> F:
            self._check_not_running()
            label = name if name is not None else getattr(fn, "__name__", "")
            if not isinstance(label, str) or not (label if name else label.isidentifier()):
                raise GraphError(f"cannot name the barrier for {fn!r}: pass name=")
            if label in self._barriers:
                raise GraphError(
                    f"graph {self.name!r} already has a barrier named {label!r}; "
                    "pass name= to tell them apart"
                )
            self._barriers[label] = Barrier(label, tuple(names), fn)
            return fn

        return register

    @property
    def barriers(self) -> Mapping[str, Barrier]:
        """The barriers by name, in declaration order."""
        return dict(self._barriers)

    async def run(self, **options: Unpack[RunOptions]) -> RunResult:
        """Run the graph to completion in the current event loop and return its result.

        Takes the options of :func:`~flowgraph.open_run` (:class:`~flowgraph.RunOptions`).
        """
        from ._run import run_graph

        return await run_graph(self, **options)
