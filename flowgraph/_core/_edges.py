"""Edges: the bounded streams between nodes, the chunks they carry, and the emitters.

Each node that has an upstream owns one input stream. Every worker of every
upstream node holds its own clone of that stream's send side, so the input ends
(``EndOfStream``) exactly when all upstream workers have closed their clones:
end of input propagates through the graph by closing streams, and fan-in needs
no extra bookkeeping.

Streams carry chunks (:class:`Chunk`): lists of items. A worker's :class:`Outlet` sends
a new chunk for an item, then appends the items that follow to that same list,
which is already in the stream, until it is full or a receiver has taken it: a
receiver takes a chunk and sets its ``room`` to 0 in one step, before it reads
an item, so it sees every item appended before and none is appended after. An
item is in its downstream stream the moment it is emitted; chunks only cut the
stream operations per item. Under backpressure a full stream's last chunk keeps
filling, so a full buffer holds full chunks. Sending takes the ``send_nowait``
fast path and awaits ``send`` only when the stream is full.

An emitter is a plain function, not a coroutine function: ``emit(item)`` returns
``None`` when the item was delivered at once, or an awaitable that finishes the
delivery, so the common case creates no coroutine and awaits nothing.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import anyio
from anyio import WouldBlock

if TYPE_CHECKING:
    from anyio.streams.memory import MemoryObjectSendStream

    from ._acks import Ticket
    from ._topology import Route

Emit = Callable[[Any], "Awaitable[None] | None"]
Fail = Callable[[Any, Exception], Awaitable[None]]

MAX_CHUNK = 32
"""The most items one chunk carries."""

YIELD_EVERY = 64
"""A task that moves items without ever having to wait yields to the scheduler after this many.

One scheduler round-trip per 64 items instead of per item, while a heartbeat
task beside a full-speed graph still ticks within a millisecond or so.
"""


def chunk_limit(buffer: int) -> int:
    """Items per chunk on the edges into a node with this *buffer*.

    A chunk holds up to an eighth of the buffer, so the stream still holds
    about 8 chunks: a producer that sends small chunks still finds room for
    several. Buffers under 16 carry one item per chunk, the default buffer (16)
    two. A node with several workers shares each chunk's items among them
    (``_shared``). An eighth rather than a sixteenth: W1 moves 15% more items a
    second (``benchmarks/bench_core.py``), with the same buffers.
    """
    return max(1, min(MAX_CHUNK, buffer // 8))


def chunk_capacity(buffer: int, limit: int) -> int:
    """Chunks the stream may hold, so that they and what is left of the chunk a
    worker has in hand never hold more than *buffer* items."""
    return (buffer - limit + 1) // limit


class Chunk(list[Any]):
    """Items that travel together; ``room``: how many more may join (0 once taken)."""

    __slots__ = ("room",)
    room: int


_NO_CHUNK = Chunk()
_NO_CHUNK.room = 0
"""An outlet's chunk before its first one and while a full stream holds up the next: it
takes no item and counts none."""


class Outlet:
    """A node's send side of one edge, or of every edge of a fan-out: it sends chunks.

    Every worker of the node puts into the same outlet, so the items of many
    workers fill one chunk (a thousand workers still send full chunks), and one
    clone of each stream serves the whole node. While a full stream holds up a
    chunk (``sending``), a worker that needs a new chunk waits in line with its
    item: when the send finishes, the items at the head of the line go into the
    chunk just sent while it has room, then into new chunks while the stream
    takes them at once (their workers are woken, done); the next in line gets
    the turn to wait for room. A burst of a thousand results thus moves as far
    as the stream has room in one step, not one item per loop iteration, and
    each waiting worker is woken once.

    ``sent`` counts the items of the chunks it has moved on from; with its
    current chunk's items that is everything it put into its streams.
    """

    __slots__ = ("chunk", "limit", "line", "sending", "sent", "streams")

    def __init__(self, streams: Sequence[MemoryObjectSendStream[Any]], limit: int) -> None:
        self.streams = streams
        self.limit = limit
        self.chunk = _NO_CHUNK
        self.sent = 0
        self.sending = False
        self.line: deque[_Waiter] = deque()

    def put(self, item: Any) -> Awaitable[None] | None:
        """Deliver *item*; return an awaitable when a full stream makes the delivery wait."""
        chunk = self.chunk
        if chunk.room:
            chunk.room -= 1
            chunk.append(item)
            return None
        return self.open(item)

    def open(self, item: Any) -> Awaitable[None] | None:
        """Send a new chunk that starts with *item*, or wait in line behind a send in progress."""
        if self.sending or self.line:
            return self._open_in_turn(item)
        return self._open_now(item)

    def _open_now(self, item: Any) -> Awaitable[None] | None:
        self.sent += len(self.chunk)
        self.chunk = _NO_CHUNK
        chunk = Chunk((item,))
        chunk.room = self.limit - 1
        for index, stream in enumerate(self.streams):
            try:
                stream.send_nowait(chunk)
            except WouldBlock:
                self.sending = True
                return self._send_from(index, chunk)
        self.chunk = chunk
        return None

    async def _open_in_turn(self, item: Any) -> None:
        """Wait in line with *item*: it is put by whoever has the turn, or this worker gets
        the turn and puts it itself, then lets the line move on."""
        waiter = _Waiter(item)
        self.line.append(waiter)
        try:
            await waiter.event.wait()
        except BaseException:
            if not waiter.event.is_set():
                self.line.remove(waiter)
            elif not waiter.delivered:
                self._next_turn()  # pass on the turn this worker will not use
            raise
        if waiter.delivered:
            return
        chunk = self.chunk
        if chunk.room:
            chunk.room -= 1
            chunk.append(item)
            self._next_turn()
        elif (waiting := self._open_now(item)) is not None:
            await waiting  # this worker sends now; the send moves the line on
        else:
            self._next_turn()

    def _next_turn(self) -> None:
        """Deliver the items at the head of the line, into the open chunk while it has room
        and into new chunks while the stream takes them at once; then give the turn to
        the next in line, which waits for room itself."""
        line = self.line
        while line:
            chunk = self.chunk
            if chunk.room:
                chunk.room -= 1
                chunk.append(line[0].item)
            elif self.sending or not self._open_at_once(line[0].item):
                line.popleft().event.set()
                return
            waiter = line.popleft()
            waiter.delivered = True
            waiter.event.set()

    def _open_at_once(self, item: Any) -> bool:
        """Send a new chunk that starts with *item* if the outlet's one stream has room now.

        Anything else (a fan-out's several streams, a full or closed stream) is left to
        the worker whose item it is, which sends, waits or raises in its own task.
        """
        if len(self.streams) != 1:
            return False
        chunk = Chunk((item,))
        chunk.room = self.limit - 1
        try:
            self.streams[0].send_nowait(chunk)
        except Exception:
            return False
        self.sent += len(self.chunk)
        self.chunk = chunk
        return True

    async def _send_from(self, index: int, chunk: Chunk) -> None:
        """Finish sending *chunk* from ``streams[index]``, which was full."""
        try:
            await self.streams[index].send(chunk)
            for stream in self.streams[index + 1 :]:
                try:
                    stream.send_nowait(chunk)
                except WouldBlock:
                    await stream.send(chunk)
        except BaseException:
            chunk.room = 0  # maybe not in every stream: nothing more may join it
            raise
        else:
            self.chunk = chunk
        finally:
            self.sending = False
            self._next_turn()

    def queued(self) -> int:
        """Items this outlet put into its streams."""
        return self.sent + len(self.chunk)


class _Waiter:
    """A worker waiting in an outlet's line, with the item it is delivering."""

    __slots__ = ("delivered", "event", "item")

    def __init__(self, item: Any) -> None:
        self.item = item
        self.event = anyio.Event()
        self.delivered = False


def make_outlets(
    outputs: Mapping[str, MemoryObjectSendStream[Any]],
    limits: Mapping[str, int],
    *,
    routed: bool,
) -> dict[str, Outlet]:
    """One outlet per output when *routed*, else one outlet shared by all (fan-out).

    The keys are the names of the nodes each outlet feeds.
    """
    if routed:
        return {name: Outlet([stream], limits[name]) for name, stream in outputs.items()}
    if not outputs:
        return {}
    shared = Outlet(list(outputs.values()), min(limits[name] for name in outputs))
    return dict.fromkeys(outputs, shared)


def make_emitter(
    node: str,
    outlets: Mapping[str, Outlet],
    route: Route | None,
    fail: Fail,
    *,
    tracked: bool = False,
) -> Emit:
    """Return ``emit(item)`` that sends *item* downstream (see the module docstring).

    With no route the item goes to every output (fan-out). With a route it goes
    to the output that ``route.by(item)`` names; an item the route cannot place
    is handed to *fail*, like an item whose function failed.

    When *tracked*, items are ``(ticket, item)`` envelopes. The caller's hold on
    the ticket passes to the delivery, and a fan-out adds one hold per extra
    delivery (see ``_acks``), all before the first send: a send that is
    cancelled keeps its hold, so the item is never acknowledged unless it was
    delivered and finished.
    """
    if route is not None:
        return _routing_emitter(node, outlets, route, fail, tracked)
    outlet = next(iter(outlets.values()))
    extra = len(outlet.streams) - 1
    if not tracked or not extra:
        return outlet.put
    put = outlet.put

    def emit(envelope: tuple[Any, Any]) -> Awaitable[None] | None:
        envelope[0].pending += extra
        return put(envelope)

    return emit


def _routing_emitter(
    node: str,
    outlets: Mapping[str, Outlet],
    route: Route,
    fail: Fail,
    tracked: bool,
) -> Emit:
    by = route.by
    table: dict[Hashable, Outlet] = {key: outlets[target] for key, target in route.targets.items()}
    fallback = None if route.default is None else outlets[route.default]

    def emit(item: Any) -> Awaitable[None] | None:
        value = item[1] if tracked else item
        try:
            key = by(value)
            outlet = table.get(key, fallback)
            if outlet is None:
                raise LookupError(
                    f"route of {node!r} has no target for key {key!r} "
                    f"(known keys: {', '.join(map(repr, table))})"
                )
        except Exception as exc:
            return _fail_and_release(fail, value, exc, item[0]) if tracked else fail(value, exc)
        return outlet.put(item)

    return emit


async def _fail_and_release(fail: Fail, item: Any, error: Exception, ticket: Ticket) -> None:
    """An item the route cannot place is handled like a failed one, then lets go of its ticket."""
    await fail(item, error)
    ticket.release()
