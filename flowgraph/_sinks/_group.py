"""Group hand-off: calls that arrive while a write runs go to the worker thread together.

A database sink owns one connection, used by one worker thread at a time. With
several workers on the sink, calls queue up while a write runs; the next call
to get the connection takes every queued call with it, so one thread hop (and,
for Upsert, one transaction) serves them all. What each call's work does and
how its failure is isolated is the sink's choice: the group's write records on
each call whether it is done or its error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import anyio.to_thread

from .._core._threads import run_sync_in_thread

if TYPE_CHECKING:
    from collections.abc import Callable

_T = TypeVar("_T")


@dataclass(slots=True)
class Call:
    """One call's work, waiting to be written by whichever call takes the connection first."""

    item: Any
    work: Any
    taken: bool = False  # a write has taken it: withdrawing it is too late
    done: bool = False  # its write finished (committed)
    error: BaseException | None = None


class Group:
    """One connection's queue of calls, and the one worker thread that uses it."""

    def __init__(self) -> None:
        self.pending: list[Call] = []
        self.lock = anyio.Lock()
        self.limiter = anyio.CapacityLimiter(1)

    async def run_sync(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run *fn* in the connection's thread (opening and closing the connection)."""
        return await run_sync_in_thread(fn, *args, limiter=self.limiter)

    async def submit(self, item: Any, work: Any, write: Callable[[list[Call]], None]) -> None:
        """Queue *work*; write it, with the calls queued beside it, or wait for the call that does.

        Cancellation: a call cancelled while queued is withdrawn; once taken, its
        write runs to the end (the thread is never abandoned). Raises the call's
        own error, as *write* recorded it.
        """
        call = Call(item, work)
        self.pending.append(call)
        try:
            async with self.lock:
                if not call.taken:
                    group, self.pending = self.pending, []
                    for each in group:
                        each.taken = True
                    await run_sync_in_thread(write, group, limiter=self.limiter)
        except BaseException:
            if not call.taken:
                self.pending.remove(call)
            raise
        if not call.done:
            assert call.error is not None
            raise call.error
