"""``fg.run``: run a graph in a new event loop, with state, progress and signal handling.

The plain-function entry point for scripts and the CLI. It adds three things
around :func:`open_run`, all optional: one state store for both checkpoints
and dead letters (``state=URL``), a live progress display
(:func:`open_progress`), and a graceful stop on SIGINT/SIGTERM, the way a
daemon under a process supervisor is expected to behave:

1. the first signal stops the sources; items in flight drain through the
   graph for up to *grace* seconds;
2. when *grace* runs out, or on a second signal, what is left is cancelled
   (``run.stop(grace=0)``).

Either way the run's last checkpoint commit records how far every source got,
so a restart resumes right after it. The signal handler (``_signals.Stopper``)
is a task of the run, reading ``anyio.open_signal_receiver``, so it works the
same on asyncio and trio.
"""

from __future__ import annotations

import functools
import logging
import signal
import sys
import threading
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar, Unpack, final, overload

import anyio

from .._core._exceptions import GraphError
from .._core._options import RUN_OPTIONS, RunOptions, check_names
from .._core._run import Run, RunResult
from .._core._validate import int_at_least, to_seconds
from .._stores import Checkpoints, DeadLetters, StateStore, open_store, parse_store_url
from ._flow import Flow, FlowResult, open_flow
from ._progress import open_progress, require_rich
from ._replay import open_graph_run
from ._signals import STOP_SIGNALS, Stopper, restore_handlers

if TYPE_CHECKING:
    import os
    from collections.abc import Callable
    from datetime import timedelta

    from .._core._graph import Graph

R = TypeVar("R", RunResult, FlowResult)

logger = logging.getLogger("flowgraph")

DEFAULT_GRACE = 30.0
"""Seconds items in flight may take to drain after a stop signal, by default."""

DEFAULT_CHECKPOINT_EVERY = 100
"""Acknowledgements between two checkpoint commits, by default (as ``fg.Checkpoints``)."""

DEFAULT_CHECKPOINT_INTERVAL = 1.0
"""Longest time between two checkpoint commits, by default (as ``fg.Checkpoints``)."""


class ProgramOptions(RunOptions, total=False):
    """The options of :func:`flowgraph.run`: those of :class:`RunOptions`, and these.

    Attributes:
        backend: ``"asyncio"`` (the default) or ``"trio"``.
        backend_options: passed to ``anyio.run``, such as a trio ``clock=``.
        progress: show a live progress display on stderr (needs rich).
        handle_signals: stop gracefully on SIGINT and SIGTERM (main thread only).
        grace: seconds items in flight may take after a stop signal (default 30).
        state: a state store URL (``sqlite:///state.db``, a file path,
            ``postgresql://...``) for checkpoints and dead letters.
        checkpoint_every: with *state*, commit after this many acknowledgements
            (default 100).
        checkpoint_interval: with *state*, commit at least this often (seconds,
            default 1) while items are acknowledged.
        replay_dead_letters: feed the stored dead letters of the graph back in
            (needs *state* or ``dead_letters=fg.DeadLetters(...)``).
    """

    backend: str
    backend_options: dict[str, Any] | None
    progress: bool
    handle_signals: bool
    grace: float | timedelta
    state: str | os.PathLike[str] | None
    checkpoint_every: int
    checkpoint_interval: float | timedelta
    replay_dead_letters: bool


PROGRAM_OPTIONS: Final = frozenset(ProgramOptions.__optional_keys__)


@overload
def run(graph: Graph, **options: Unpack[ProgramOptions]) -> RunResult: ...
@overload
def run(graph: Flow, **options: Unpack[ProgramOptions]) -> FlowResult: ...
def run(graph: Graph | Flow, **options: Unpack[ProgramOptions]) -> RunResult | FlowResult:
    """Run *graph* (or a :class:`Flow` of graphs) in a new event loop of *backend*.

    The plain-function entry point for scripts; inside an async program use
    ``await graph.run()`` (or :func:`open_run`) instead. Other keyword options
    (``dead_letters=``, ``checkpoints=``, ``hooks=``, ``log_interval=`` ...)
    go to :func:`open_run`.

    With ``state=URL``, one store is opened at *URL* for the run and holds both
    its checkpoints (``fg.Checkpoints(store, every=checkpoint_every,
    interval=checkpoint_interval)``) and its dead letters
    (``fg.DeadLetters(store)``); an explicit ``checkpoints=`` or
    ``dead_letters=`` takes the place of its part. Checkpoint commits are
    logged at INFO on the ``flowgraph.checkpoints`` logger.

    With ``handle_signals=True``, SIGINT (Ctrl-C) and SIGTERM stop the run
    gracefully instead of interrupting it: the sources stop, items in flight
    drain for up to *grace* seconds, then what is left is cancelled; a second
    signal cancels at once (the same signal again within half a second is the
    same request delivered twice, as GNU ``timeout`` does, and counts once).
    The result then has ``stopped=True``. Each signal is logged as a warning on
    the ``flowgraph`` logger.

    With ``replay_dead_letters=True``, the dead letters the store holds for
    the graph are fed back into their nodes first, beside the new input, and
    each is removed once its item is fully processed; an item that fails
    again is stored anew, and a stop or a kill loses no letter (see the
    "Scheduled jobs" page).

    A :class:`Flow` runs its graphs with the same options, and the result is a
    :class:`FlowResult`; a stop signal stops the graphs running and starts no more.

    Args:
        graph: the graph (or flow) to run.
        **options: any of :class:`ProgramOptions`.

    Raises:
        NodeError: if a node failed under the ``"raise"`` policy.
        GraphError: if the graph is not valid, or *grace* is negative, or a
            checkpoint setting is out of range, or ``replay_dead_letters=True``
            has no store of dead letters, or ``progress=True`` with a flow.
        ValueError: if *state* is not a store URL; nothing has started then.
        StoreError: if the store cannot be opened or fails.
        ImportError: if ``progress=True`` and rich is not installed, or *state*
            is a PostgreSQL URL and psycopg is not installed.
        RuntimeError: if an event loop is already running in this thread (use
            ``await graph.run()`` there), or ``handle_signals=True`` outside the
            main thread.

    Added in 0.1. *replay_dead_letters* and flows added in 0.2.
    """
    return execute(graph, **options).result


@final
@dataclass(frozen=True, slots=True)
class Outcome(Generic[R]):
    """How a run started by :func:`execute` ended.

    Attributes:
        result: the run's result.
        signal: the first stop signal received, if any.
        cancelled: whether items in flight had to be cancelled, because the
            grace period ran out or a second signal came.
    """

    result: R
    signal: signal.Signals | None = None
    cancelled: bool = False


@overload
def execute(
    graph: Graph,
    *,
    received: list[signal.Signals] | None = None,
    **options: Unpack[ProgramOptions],
) -> Outcome[RunResult]: ...
@overload
def execute(
    graph: Flow,
    *,
    received: list[signal.Signals] | None = None,
    **options: Unpack[ProgramOptions],
) -> Outcome[FlowResult]: ...
def execute(
    graph: Graph | Flow,
    *,
    received: list[signal.Signals] | None = None,
    **options: Unpack[ProgramOptions],
) -> Outcome[Any]:
    """Like :func:`run`, but also say whether a signal stopped the run and how.

    With *handle_signals*, the signals in *received* (those that arrived
    before, from :func:`hold_stop_signals`) stop the run as soon as it starts.
    """
    library = running_library()
    if library is not None:
        raise RuntimeError(
            f"fg.run() starts an event loop, but {library} is already running in this "
            "thread: in async code, use 'await graph.run()' or 'async with fg.open_run(graph)'"
        )
    check_names("fg.run() has no option", options, PROGRAM_OPTIONS)
    run_options = {key: value for key, value in options.items() if key in RUN_OPTIONS}
    backend = options.get("backend", "asyncio")
    progress = options.get("progress", False)
    handle_signals = options.get("handle_signals", False)
    state = options.get("state")
    grace = to_seconds("grace", options.get("grace", DEFAULT_GRACE), inclusive=True)
    if handle_signals and threading.current_thread() is not threading.main_thread():
        raise RuntimeError(
            "handle_signals=True works only in the main thread, where Python delivers signals"
        )
    if progress:
        if isinstance(graph, Flow):
            raise GraphError(
                "progress=True shows the run of one graph, and a flow runs several: "
                "use log_interval= to follow them"
            )
        require_rich()
    if state is not None:
        parse_store_url(state)  # a bad URL fails here, before the event loop starts
    every = int_at_least(
        "checkpoint_every", options.get("checkpoint_every", DEFAULT_CHECKPOINT_EVERY), 1
    )
    interval = to_seconds(
        "checkpoint_interval", options.get("checkpoint_interval", DEFAULT_CHECKPOINT_INTERVAL)
    )
    main = functools.partial(
        _execute,
        graph,
        progress=progress,
        handle_signals=handle_signals,
        grace=grace,
        state=state,
        checkpoints=functools.partial(Checkpoints, every=every, interval=interval),
        received=received or [],
        options={
            **run_options,
            "replay_dead_letters": options.get("replay_dead_letters", False),
        },
    )
    return anyio.run(main, backend=backend, backend_options=options.get("backend_options"))


def running_library() -> str | None:
    """The async library whose event loop runs in this thread, if any."""
    # Neither loop can run unless its library was imported: no import here.
    asyncio = sys.modules.get("asyncio")
    if asyncio is not None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            return "asyncio"
    trio = sys.modules.get("trio")
    if trio is not None and trio.lowlevel.in_trio_run():
        return "trio"
    return None


async def _execute(
    graph: Graph | Flow,
    *,
    progress: bool,
    handle_signals: bool,
    grace: float,
    state: str | os.PathLike[str] | None,
    checkpoints: Callable[[StateStore], Checkpoints],
    received: list[signal.Signals],
    options: dict[str, Any],
) -> Outcome[Any]:
    async with AsyncExitStack() as stack:
        signals = None
        if handle_signals:
            # asyncio resets the handlers to the defaults on exit: put back whatever was there.
            saved = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
            stack.callback(restore_handlers, saved)
            # Opened before the run starts, so that a signal during start-up is queued, not lost.
            signals = stack.enter_context(anyio.open_signal_receiver(*STOP_SIGNALS))
        if state is not None:
            store = await stack.enter_async_context(open_store(state))
            options = _with_store(store, checkpoints, options)
        opened = (
            open_flow(graph, **options)
            if isinstance(graph, Flow)
            else open_graph_run(graph, **options)
        )
        async with opened as run:
            stopper = Stopper(run, grace)
            if signals is not None:
                if received:  # before the sources take their first step
                    stopper.stop(received[0])
                run.start_soon(stopper.watch, signals, name="flowgraph signal handler")
            if progress:
                assert isinstance(run, Run)  # execute() refuses progress for a flow
                async with open_progress(run):
                    await run.wait_finished()
    return Outcome(run.result, stopper.signal, stopper.cancelled)


def _with_store(
    store: StateStore, checkpoints: Callable[[StateStore], Checkpoints], options: dict[str, Any]
) -> dict[str, Any]:
    """*options* with checkpoints and dead letters kept in *store*, unless they name their own."""
    given = {key: value for key, value in options.items() if value is not None}
    return {"checkpoints": checkpoints(store), "dead_letters": DeadLetters(store), **given}
