"""``fg.run``: run a graph in a new event loop, with a progress display and signal handling.

The plain-function entry point for scripts and the CLI. It adds two things
around :func:`open_run`, both optional: a live progress display
(:func:`open_progress`) and a graceful stop on SIGINT/SIGTERM, the way a
daemon under a process supervisor is expected to behave:

1. the first signal stops the sources; items in flight drain through the
   graph for up to *grace* seconds;
2. when *grace* runs out, or on a second signal, what is left is cancelled
   (``run.stop(grace=0)``).

The signal handler is a task of the run, reading ``anyio.open_signal_receiver``,
so it works the same on asyncio and trio.
"""

from __future__ import annotations

import functools
import logging
import signal
import threading
from contextlib import ExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, final

import anyio

from ._core._policy import to_seconds
from ._core._run import open_run
from ._progress import open_progress, require_rich

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from datetime import timedelta

    from ._core._graph import Graph
    from ._core._run import Run, RunResult

logger = logging.getLogger("flowgraph")

DEFAULT_GRACE = 30.0
"""Seconds items in flight may take to drain after a stop signal, by default."""

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def run(
    graph: Graph,
    *,
    backend: str = "asyncio",
    backend_options: dict[str, Any] | None = None,
    progress: bool = False,
    handle_signals: bool = False,
    grace: float | timedelta = DEFAULT_GRACE,
    **options: Any,
) -> RunResult:
    """Run *graph* in a new event loop of *backend* (``"asyncio"`` or ``"trio"``).

    The plain-function entry point for scripts; inside an async program use
    ``await graph.run()`` (or :func:`open_run`) instead. Other keyword options
    (``dead_letters=``, ``hooks=``, ``log_interval=`` ...) go to :func:`open_run`.

    With ``handle_signals=True``, SIGINT (Ctrl-C) and SIGTERM stop the run
    gracefully instead of interrupting it: the sources stop, items in flight
    drain for up to *grace* seconds, then what is left is cancelled; a second
    signal cancels at once. The result then has ``stopped=True``. Each signal
    is logged as a warning on the ``flowgraph`` logger.

    Args:
        graph: the graph to run.
        backend: ``"asyncio"`` or ``"trio"``.
        backend_options: passed to ``anyio.run``, such as a trio ``clock=``.
        progress: show a live progress display on stderr (needs rich).
        handle_signals: stop gracefully on SIGINT and SIGTERM (main thread only).
        grace: seconds items in flight may take after a stop signal.

    Raises:
        NodeError: if a node failed under the ``"raise"`` policy.
        GraphError: if the graph is not valid, or *grace* is negative.
        ImportError: if ``progress=True`` and rich is not installed.
        RuntimeError: if ``handle_signals=True`` outside the main thread.

    Added in 0.1.
    """
    return execute(
        graph,
        backend=backend,
        backend_options=backend_options,
        progress=progress,
        handle_signals=handle_signals,
        grace=grace,
        **options,
    ).result


@final
@dataclass(frozen=True, slots=True)
class Outcome:
    """How a run started by :func:`execute` ended.

    Attributes:
        result: the run's result.
        signal: the first stop signal received, if any.
        cancelled: whether items in flight had to be cancelled, because the
            grace period ran out or a second signal came.
    """

    result: RunResult
    signal: signal.Signals | None = None
    cancelled: bool = False


def execute(
    graph: Graph,
    *,
    backend: str = "asyncio",
    backend_options: dict[str, Any] | None = None,
    progress: bool = False,
    handle_signals: bool = False,
    grace: float | timedelta = DEFAULT_GRACE,
    **options: Any,
) -> Outcome:
    """Like :func:`run`, but also say whether a signal stopped the run and how."""
    seconds = to_seconds("grace", grace, inclusive=True)
    if handle_signals and threading.current_thread() is not threading.main_thread():
        raise RuntimeError(
            "handle_signals=True works only in the main thread, where Python delivers signals"
        )
    if progress:
        require_rich()
    return anyio.run(
        functools.partial(_execute, graph, progress, handle_signals, seconds, options),
        backend=backend,
        backend_options=backend_options,
    )


async def _execute(
    graph: Graph, progress: bool, handle_signals: bool, grace: float, options: dict[str, Any]
) -> Outcome:
    with ExitStack() as stack:
        signals = None
        if handle_signals:
            # asyncio resets the handlers to the defaults on exit: put back whatever was there.
            saved = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
            stack.callback(_restore_handlers, saved)
            # Opened before the run starts, so that a signal during start-up is queued, not lost.
            signals = stack.enter_context(anyio.open_signal_receiver(*STOP_SIGNALS))
        async with open_run(graph, **options) as run:
            stopper = Stopper(run, grace)
            if signals is not None:
                run.start_soon(stopper.watch, signals, name="flowgraph signal handler")
            if progress:
                async with open_progress(run):
                    await run.wait_finished()
    return Outcome(run.result, stopper.signal, stopper.cancelled)


def _restore_handlers(saved: dict[signal.Signals, Any]) -> None:
    for signum, handler in saved.items():
        if handler is not None:  # None: installed outside Python, which we cannot restore
            signal.signal(signum, handler)


@final
class Stopper:
    """Turns stop signals into ``run.stop()``: graceful first, then cancelling."""

    def __init__(self, run: Run, grace: float) -> None:
        self.run = run
        self.grace = grace
        self.signal: signal.Signals | None = None
        self.cancelled = False

    async def watch(self, signals: AsyncIterator[int]) -> None:
        """Act on each signal from *signals* until every node has finished."""
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(self._close_when_finished, task_group.cancel_scope)
            async for signum in signals:
                name = signal.Signals(signum).name
                if self.signal is not None:
                    self._cancel(f"received {name} while stopping")
                    continue
                self.signal = signal.Signals(signum)
                logger.warning(
                    "received %s: stopping the sources; items in flight have %gs to finish "
                    "(send it again to cancel them now)",
                    name,
                    self.grace,
                )
                self.run.stop()
                task_group.start_soon(self._cancel_after_grace)

    async def _close_when_finished(self, scope: anyio.CancelScope) -> None:
        await self.run.wait_finished()
        scope.cancel()

    async def _cancel_after_grace(self) -> None:
        with anyio.move_on_after(self.grace):
            await self.run.wait_finished()
            return
        self._cancel(f"the grace period of {self.grace:g}s is over")

    def _cancel(self, reason: str) -> None:
        if not self.cancelled:
            self.cancelled = True
            logger.warning("%s: cancelling the items in flight", reason)
            self.run.stop(grace=0)
