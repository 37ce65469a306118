"""One node's calls to work that runs elsewhere (a process, a cluster), awaited on the loop.

Every executor of this package hands a call to something that finishes it on
another thread (a pool's pipe reader, Dask's event loop, Ray's callback
thread) and calls back ``deliver(ok, value)`` from there. :class:`BoundRemote`
turns that into an ``await``: the delivery goes through the run's
:class:`LoopInbox`, which wakes the event loop once for all the results that
arrived together, so no thread ever waits for one call.

A call whose task is cancelled (its timeout passed, the run stopped) is
abandoned: the executor is asked to cancel it (skip it if it has not started,
kill or cancel it where it runs), and it counts in ``abandoned`` until its
executor reports that it has ended. While any call is out, virtual clocks
(``flowgraph.testing``) let time flow at the real rate, as they do for threads,
so a timeout means the same under a virtual clock as in real time.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import anyio

from .._core import _threads
from .._core._executor import loop_inbox
from .._core._threads import ABANDON_AFTER

if TYPE_CHECKING:
    from collections.abc import Callable

logger = logging.getLogger("flowgraph")

T_Handle = TypeVar("T_Handle")


class _Waiter:
    """One call's wait on the loop: set once its executor has delivered the outcome."""

    __slots__ = ("abandoned", "event", "ok", "value")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.ok = False
        self.value: Any = None
        self.abandoned = False


class BoundRemote(Generic[T_Handle]):
    """Await calls that complete on other threads; subclasses say how to start and cancel one.

    Subclasses implement :meth:`start`, which begins ``fn(item)`` and arranges
    for ``deliver(ok, value)`` to be called exactly once, from any thread, when
    it has ended (``ok`` false: *value* is the exception), and :meth:`cancel`,
    called on the loop for a call given up on.
    """

    def __init__(self, node: str) -> None:
        self.node = node
        self.inbox = loop_inbox()
        self.abandoned = 0
        self.outstanding = 0
        self._given_up = False
        self._idle = anyio.Event()
        self._idle.set()

    def start(self, item: Any, deliver: Callable[[bool, Any], None]) -> T_Handle:
        """Begin the call on *item*; return what :meth:`cancel` needs to stop it."""
        raise NotImplementedError

    def cancel(self, handle: T_Handle) -> None:
        """Stop the call where it runs, if it can be; it still delivers when it has ended."""
        raise NotImplementedError

    async def __call__(self, item: Any) -> Any:
        waiter = _Waiter()
        put = self.inbox.put

        def deliver(ok: bool, value: Any) -> None:
            waiter.ok, waiter.value = ok, value
            put(lambda: self._ended(waiter))

        self._begin()
        try:
            handle = self.start(item, deliver)
        except BaseException:
            self._end()
            raise
        try:
            await waiter.event.wait()
        except BaseException:
            if not waiter.event.is_set():
                waiter.abandoned = True
                self.abandoned += 1
                self.cancel(handle)
            raise
        if waiter.ok:
            return waiter.value
        raise waiter.value

    def _begin(self) -> None:
        if not self.outstanding:
            self._idle = anyio.Event()
            hook = _threads.BUSY_HOOK
            if hook is not None:
                hook(1, True)
        self.outstanding += 1

    def _end(self) -> None:
        self.outstanding -= 1
        if not self.outstanding and not self._given_up:
            self._idle.set()
            hook = _threads.BUSY_HOOK
            if hook is not None:
                hook(-1, True)

    def _ended(self, waiter: _Waiter) -> None:
        """On the loop: the executor delivered a call's outcome."""
        if waiter.abandoned:
            self.abandoned -= 1
        waiter.event.set()
        self._end()

    async def wait_idle(self) -> None:
        """Wait up to a second for abandoned calls to end; say how many are left behind."""
        with anyio.move_on_after(ABANDON_AFTER, shield=True):
            await self._idle.wait()
        if self.outstanding:
            # Stop holding virtual time for calls nobody waits for any more.
            self._given_up = True
            hook = _threads.BUSY_HOOK
            if hook is not None:
                hook(-1, True)
            logger.warning(
                "node %r: abandoning %d call(s) still running after %gs",
                self.node,
                self.outstanding,
                ABANDON_AFTER,
            )
