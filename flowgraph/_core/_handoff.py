"""Sync iterators read in a worker thread and handed to the event loop in batches.

Sync generator functions and sync sources run in a thread as one long job
(see ``_threads``) and hand their items over in batches: at once when the
event loop is waiting for them, and reading at most :data:`READ_AHEAD` items
ahead of what the graph has taken.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, final

import anyio

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    from ._threads import BoundThreads, LoopInbox

READ_AHEAD = 64
"""Most items a sync iterator in a thread reads beyond those the graph has taken: up to half
of them wait in the hand-off while the loop passes on the batch it took, at most the other half."""


class _Handoff:
    """Items passed from a producing thread to the event loop, at most READ_AHEAD waiting."""

    def __init__(self, inbox: LoopInbox) -> None:
        self.inbox = inbox
        self.condition = threading.Condition()
        self.items: list[Any] = []
        self.finished = False
        self.error: BaseException | None = None
        self.closed = False
        self.waiter: anyio.Event | None = None

    def produce(self, fn: Callable[..., Iterable[Any]], *args: Any) -> None:
        """In a thread: read ``fn(*args)`` until it ends, fails or the loop side closes."""
        iterator: Any = iter(())
        try:
            iterator = iter(fn(*args))
            for item in iterator:
                with self.condition:
                    while len(self.items) >= READ_AHEAD // 2 and not self.closed:
                        self.condition.wait()
                    if self.closed:
                        break
                    self.items.append(item)
                    wake = self._wake_locked()
                if wake is not None:
                    self.inbox.put(wake.set)
        except BaseException as exc:
            self.error = exc
        finally:
            close = getattr(iterator, "close", None)
            if self.closed and close is not None:
                close()
            with self.condition:
                self.finished = True
                wake = self._wake_locked()
            if wake is not None:
                self.inbox.put(wake.set)

    def _wake_locked(self) -> anyio.Event | None:
        waiter, self.waiter = self.waiter, None
        return waiter

    def take(self) -> tuple[list[Any], bool, anyio.Event | None]:
        """On the loop: the items waiting, whether the producer is done, and an event to
        wait on if there is nothing yet."""
        with self.condition:
            items, self.items = self.items, []
            if items:
                self.condition.notify()
                return items, False, None
            if self.finished:
                return [], True, None
            self.waiter = anyio.Event()
            return [], False, self.waiter

    def close(self) -> None:
        with self.condition:
            self.closed = True
            self.condition.notify()


@final
class ThreadIterator:
    """An async iterator over a sync iterable read in a worker thread.

    The thread reads ahead of the loop by at most :data:`READ_AHEAD` items; the
    loop takes whatever has arrived in one go. If the iterable raises, the items
    read before the error are yielded, then the error is raised. Closing the
    iterator (or cancelling the task reading it) makes the thread stop at the
    next item and close the underlying generator in the thread.
    """

    def __init__(
        self, bound: BoundThreads, fn: Callable[..., Iterable[Any]], args: tuple[Any, ...]
    ) -> None:
        self._handoff = _Handoff(bound.inbox)
        self._job = bound.start(self._handoff.produce, fn, *args)
        self._bound = bound
        self._batch: Iterator[Any] = iter(())

    def __aiter__(self) -> ThreadIterator:
        return self

    async def __anext__(self) -> Any:
        for item in self._batch:
            return item
        return await self._next_batch()

    async def _next_batch(self) -> Any:
        handoff = self._handoff
        while True:
            items, finished, waiter = handoff.take()
            if items:
                self._batch = iter(items)
                return next(self._batch)
            if finished:
                await self._job.done.wait()
                if handoff.error is not None:
                    raise handoff.error
                raise StopAsyncIteration
            assert waiter is not None
            try:
                await waiter.wait()
            except BaseException:
                await self.aclose()
                raise

    async def aclose(self) -> None:
        """Stop the thread at its next item; the generator is closed in the thread."""
        self._handoff.close()
        self._bound.abandon(self._job)
