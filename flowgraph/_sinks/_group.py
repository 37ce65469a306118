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
from typing import TYPE_CHECKING, Any, Generic, Protocol, Self, TypeVar

import anyio
import anyio.to_thread

from .._core._threads import run_sync_in_thread

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

_T = TypeVar("_T")


class _Closable(Protocol):
    def close(self) -> None: ...


_C = TypeVar("_C", bound=_Closable)


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


class GroupedSink(Generic[_C]):
    """A database sink's one connection: opened by the first ``async with``, closed by the last.

    A run opens a sink once per node that uses it, and a user may open it too:
    the connection and its group are shared by all of them. Subclasses say how
    to open the connection (``_open``, in the group's thread) and what they are
    (``_label``, for the error a call on a closed sink gets).
    """

    def __init__(self) -> None:
        self._connection: _C | None = None
        self._group: Group | None = None
        self._depth = 0

    def _open(self) -> _C:
        raise NotImplementedError

    def _label(self) -> str:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        if self._depth == 0:
            group = Group()
            self._connection = await group.run_sync(self._open)
            self._group = group
        self._depth += 1
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._depth -= 1
        if self._depth == 0 and self._group is not None and self._connection is not None:
            group, connection, self._group, self._connection = (
                self._group,
                self._connection,
                None,
                None,
            )
            with anyio.CancelScope(shield=True):
                await group.run_sync(connection.close)

    def _opened(self) -> Group:
        """The group of an open sink; a clear error for a call before or after the run."""
        if self._group is None:
            raise RuntimeError(
                f"{self._label()} is not open: use it as a sink of a run "
                "(the run opens it) or in `async with`"
            )
        return self._group

    @property
    def _open_connection(self) -> _C:
        """The connection, inside the group's thread: only ever used while open."""
        assert self._connection is not None
        return self._connection
