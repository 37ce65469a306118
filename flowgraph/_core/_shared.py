"""The input of a node with several workers: chunks from its stream, shared item by item.

Thousands of tasks parked on one anyio stream cost the engine dearly: every
hand-off wakes a receiver through the stream's waiter machinery, and a full
stream wakes its sender once per freed slot. So a node's workers do not all
wait on the stream. They take items from a small queue of the node's own; the
one worker that finds it empty receives the next chunk from the stream (at
most one worker ever waits there), keeps its first item and queues the rest,
waking one idle worker per queued item and one more to take over the stream.
A busy node's workers go from item to item without waking anyone, and the
stream carries full chunks, so its sender wakes once per chunk, not per item.

No item is held back: whenever items wait in the queue, as many idle workers
as there are items have been woken, and when there are not enough, more
worker tasks are started, up to the node's ``workers``: a node's tasks grow
with its load. The queue holds at most one chunk's items, so the node's
buffer bound still holds.

Items leave the queue one at a time in arrival order, which ordered nodes rely
on: a worker numbers (``ordered=True``) or keys (``ordered="key"``) each item as
it takes it, with no await in between.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

import anyio
from anyio import EndOfStream, WouldBlock

if TYPE_CHECKING:
    from collections.abc import Callable

    from anyio.streams.memory import MemoryObjectReceiveStream


class SharedInput:
    """A node's input stream, shared item by item among its workers."""

    __slots__ = ("ended", "grow", "idle", "inbox", "pending", "pulling")

    def __init__(self, inbox: MemoryObjectReceiveStream[Any], grow: Callable[[int], None]) -> None:
        self.inbox = inbox
        self.grow = grow
        self.pending: deque[Any] = deque()
        self.idle: deque[anyio.Event] = deque()
        self.pulling = False
        self.ended = False

    def take_nowait(self) -> list[Any] | None:
        """The next item (as a one-item list) if one is ready; ``None`` otherwise."""
        if self.pending:
            return [self.pending.popleft()]
        if self.pulling or self.ended:
            return None
        try:
            chunk = self.inbox.receive_nowait()
        except WouldBlock:
            return None
        except EndOfStream:
            self._end()
            return None
        return self._share(chunk)

    async def take(self) -> list[Any] | None:
        """Wait for the next item (as a one-item list); ``None`` once the input has ended."""
        while True:
            if self.pending:
                return [self.pending.popleft()]
            if self.ended:
                return None
            if not self.pulling:
                self.pulling = True
                try:
                    chunk = await self.inbox.receive()
                except EndOfStream:
                    self._end()
                    return None
                finally:
                    self.pulling = False
                return self._share(chunk)
            turn = anyio.Event()
            self.idle.append(turn)
            try:
                await turn.wait()
            except BaseException:
                if turn.is_set():
                    self._wake(1)  # pass on the wake-up this worker will not use
                else:
                    self.idle.remove(turn)
                raise

    def _share(self, chunk: Any) -> list[Any]:
        chunk.room = 0
        first = chunk[0]
        if len(chunk) > 1:
            self.pending.extend(chunk[1:])
        wanted = len(self.pending) + 1  # one per queued item, one to take the stream over
        missing = wanted - self._wake(wanted)
        if missing:
            self.grow(missing)  # no idle worker for them: start more, up to the node's workers
        return [first]

    def _wake(self, count: int) -> int:
        """Wake up to *count* idle workers; return how many."""
        idle = self.idle
        woken = 0
        while woken < count and idle:
            idle.popleft().set()
            woken += 1
        return woken

    def _end(self) -> None:
        self.ended = True
        self._wake(len(self.idle))


async def take_items(shared: SharedInput | None, inbox: MemoryObjectReceiveStream[Any]) -> Any:
    """The next items for one worker: one item from *shared* if the node shares its input,
    else the next chunk of *inbox* (taken: closed to more items); ``None`` at the end."""
    if shared is not None:
        return shared.take_nowait() or await shared.take()
    try:
        chunk = await inbox.receive()
    except EndOfStream:
        return None
    chunk.room = 0
    return chunk
