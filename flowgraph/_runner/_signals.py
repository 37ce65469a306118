"""Stop signals: SIGINT and SIGTERM turned into ``run.stop()``, graceful first, then cancelling.

A process supervisor (systemd, Kubernetes, Docker, GNU ``timeout``) stops a
daemon with SIGTERM and expects it to finish what it took. So the first signal
stops the sources and lets items in flight drain for *grace* seconds; when
the grace period runs out, or on a second signal, what is left is cancelled.

Two edges matter in practice:

* **One signal, delivered twice.** GNU ``timeout`` sends its signal to the
  command and then to the command's whole process group, which holds the
  command too: one stop request arrives as two signals a few microseconds
  apart. The kernel merges them if the first is still pending, which hides the
  duplicate most of the time, not always. So the same signal again within
  :data:`DUPLICATE_WINDOW` seconds counts once; another signal, or the same one
  later, cancels.
* **A signal during start-up**, while the target module is imported: before
  the run's own handler exists, :func:`catch_stop_signals` turns it into
  :class:`StopBeforeStart`, and once the graph is loaded :func:`hold_stop_signals`
  keeps it for the run, which then stops before it takes any item.

A sync call running in a thread cannot be cancelled: the engine abandons it
(it logs which, and the thread cannot keep the process alive).
"""

from __future__ import annotations

import logging
import signal
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol, final

import anyio

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from types import FrameType

    from anyio.abc import TaskGroup

logger = logging.getLogger("flowgraph")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

DUPLICATE_WINDOW = 0.5
"""Seconds within which the same stop signal again is the same request (GNU ``timeout``)."""


class StopBeforeStart(BaseException):
    """A stop signal arrived while the command was still loading its graph.

    A ``BaseException``, like ``KeyboardInterrupt``, so that no ``except Exception``
    in the user's module swallows it while it is being imported.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signal = signal.Signals(signum)


@contextmanager
def catch_stop_signals() -> Iterator[None]:
    """Raise :class:`StopBeforeStart` on SIGINT or SIGTERM while the block runs.

    For the start-up of a command, before it can hand signals to a run; the
    previous handlers are put back on exit.
    """

    def handler(signum: int, frame: FrameType | None) -> None:
        raise StopBeforeStart(signum)

    with _handlers(handler):
        yield


@contextmanager
def hold_stop_signals() -> Iterator[list[signal.Signals]]:
    """Record SIGINT and SIGTERM in the list yielded, for a run to act on when it starts.

    Pass the list to ``execute(..., received=...)``: the run stops at once,
    before its sources take anything.
    """
    received: list[signal.Signals] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        received.append(signal.Signals(signum))

    with _handlers(handler):
        yield received


@contextmanager
def _handlers(handler: Any) -> Iterator[None]:
    saved = {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        restore_handlers(saved)


def restore_handlers(saved: dict[signal.Signals, Any]) -> None:
    """Put back the handlers in *saved* (``None``: set outside Python, left as it is)."""
    for signum, handler in saved.items():
        if handler is not None:
            signal.signal(signum, handler)


class Stoppable(Protocol):
    """What a stop signal acts on: a graph's ``Run``, or a flow's run."""

    def stop(self, grace: float | None = None) -> None: ...

    async def wait_finished(self) -> None: ...


@final
class Stopper:
    """Turns stop signals into ``run.stop()``: graceful first, then cancelling."""

    def __init__(self, run: Stoppable, grace: float) -> None:
        self.run = run
        self.grace = grace
        self.signal: signal.Signals | None = None
        self.cancelled = False
        self._last: tuple[signal.Signals, float] | None = None

    def stop(self, signum: signal.Signals) -> None:
        """Stop the run gracefully on *signum*, the first stop signal."""
        self.signal = signum
        self._last = (signum, anyio.current_time())
        logger.warning(
            "received %s: stopping the sources; items in flight have %gs to finish "
            "(send it again to cancel them now)",
            signum.name,
            self.grace,
        )
        self.run.stop()

    async def watch(self, signals: AsyncIterator[int]) -> None:
        """Act on each signal from *signals* until every node has finished."""
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(self._close_when_finished, task_group.cancel_scope)
            if self.signal is not None:
                task_group.start_soon(self._cancel_after_grace, task_group)
            async for signum in signals:
                self._receive(signal.Signals(signum), task_group)

    def _receive(self, signum: signal.Signals, task_group: TaskGroup) -> None:
        now = anyio.current_time()
        last = self._last
        if last is not None and last[0] == signum and now - last[1] < DUPLICATE_WINDOW:
            return  # the same request, delivered twice
        if self.signal is not None:
            self._last = (signum, now)
            self._cancel(f"received {signum.name} while stopping", task_group)
        else:
            self.stop(signum)
            task_group.start_soon(self._cancel_after_grace, task_group)

    async def _close_when_finished(self, scope: anyio.CancelScope) -> None:
        await self.run.wait_finished()
        scope.cancel()

    async def _cancel_after_grace(self, task_group: TaskGroup) -> None:
        with anyio.move_on_after(self.grace):
            await self.run.wait_finished()
            return
        self._cancel(f"the grace period of {self.grace:g}s is over", task_group)

    def _cancel(self, reason: str, task_group: TaskGroup) -> None:
        if not self.cancelled:
            self.cancelled = True
            logger.warning("%s: cancelling the items in flight", reason)
            self.run.stop(grace=0)
