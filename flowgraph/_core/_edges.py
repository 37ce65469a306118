"""Edges: the bounded streams between nodes, the chunks they carry, and the emitters.

Each node that has an upstream owns one input stream. Every worker of every
upstream node holds its own clone of that stream's send side, so the input ends
(``EndOfStream``) exactly when all upstream workers have closed their clones:
end of input propagates through the graph by closing streams, and fan-in needs
no extra bookkeeping.

Streams carry *chunks*: lists of items. A worker's :class:`Outlet` sends a new
chunk for an item, then appends the items that follow to that same list, which
is already in the stream, until the chunk is full or the worker suspends. A
receiver can only take the chunk while the worker is suspended, and
:class:`SealOnSuspend` seals every open chunk of a worker the moment it
suspends, so no append is ever missed, and an item is in its downstream stream
the moment it is emitted: chunks cut the stream operations per item without
holding any item back. Sending takes the ``send_nowait`` fast path and awaits
``send`` only when the stream is full.

An emitter is a plain function, not a coroutine function: ``emit(item)`` returns
``None`` when the item was delivered at once, or an awaitable that finishes the
delivery, so the common case creates no coroutine and awaits nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator, Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from anyio import WouldBlock

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from anyio.streams.memory import MemoryObjectSendStream

    from ._acks import Ticket
    from ._graph import Route

Emit = Callable[[Any], "Awaitable[None] | None"]
Fail = Callable[[Any, Exception], Awaitable[None]]

MAX_CHUNK = 32
"""The most items one chunk carries."""


def chunk_limit(buffer: int, workers: int) -> int:
    """Items per chunk on the edges into a node with this *buffer* and *workers*.

    A chunk goes to one worker, so a node with several workers gets one item
    per chunk and its workers share the load item by item. Otherwise a chunk
    holds up to a sixteenth of the buffer, so the stream still holds about 16
    chunks: a producer that sends small chunks still finds room for many.
    Buffers under 32 (the default is 16) carry one item per chunk.
    """
    if workers > 1:
        return 1
    return max(1, min(MAX_CHUNK, buffer // 16))


def chunk_capacity(buffer: int, limit: int) -> int:
    """Chunks the stream may hold, so that they and what is left of the chunk a
    worker has in hand never hold more than *buffer* items."""
    return (buffer - limit + 1) // limit


class Outlet:
    """One worker's send side of one edge, or of every edge of a fan-out: it sends chunks.

    ``sent`` counts the items of the chunks it no longer appends to; with the
    open chunk's items that is everything it put into its streams.
    """

    __slots__ = ("chunk", "limit", "sent", "streams")

    def __init__(self, streams: Sequence[MemoryObjectSendStream[Any]], limit: int) -> None:
        self.streams = streams
        self.limit = limit
        self.chunk: list[Any] | None = None
        self.sent = 0

    def put(self, item: Any) -> Awaitable[None] | None:
        """Deliver *item*; return an awaitable when a full stream makes the delivery wait."""
        chunk = self.chunk
        if chunk is not None and len(chunk) < self.limit:
            chunk.append(item)
            return None
        return self.open(item)

    def open(self, item: Any) -> Awaitable[None] | None:
        """Send a new chunk that starts with *item*."""
        self.seal()
        chunk = [item]
        for index, stream in enumerate(self.streams):
            try:
                stream.send_nowait(chunk)
            except WouldBlock:
                return self._send_from(index, chunk)
        self.chunk = chunk
        return None

    async def _send_from(self, index: int, chunk: list[Any]) -> None:
        """Finish sending *chunk* from ``streams[index]``, which was full; count it once sent."""
        streams = self.streams
        await streams[index].send(chunk)
        for stream in streams[index + 1 :]:
            try:
                stream.send_nowait(chunk)
            except WouldBlock:
                await stream.send(chunk)
        self.sent += len(chunk)

    def seal(self) -> None:
        """Stop appending to the open chunk: a receiver may take it from now on."""
        chunk = self.chunk
        if chunk is not None:
            self.sent += len(chunk)
            self.chunk = None

    def queued(self) -> int:
        """Items this outlet put into its streams."""
        chunk = self.chunk
        return self.sent + (len(chunk) if chunk is not None else 0)


def sealer(outlets: Sequence[Outlet]) -> Callable[[], None]:
    """A function that seals every one of *outlets*."""
    if len(outlets) == 1:
        return outlets[0].seal

    def seal_all() -> None:
        for outlet in outlets:
            outlet.seal()

    return seal_all


class SealOnSuspend:
    """Await a coroutine, calling ``on_suspend()`` each time it suspends.

    Awaiting a coroutine delegates every ``send`` and ``throw`` of the event
    loop to it; this does the same by hand, so it sees each suspension as it
    passes it up. That costs nothing per item: only suspensions pass here.
    """

    __slots__ = ("coro", "on_suspend")

    def __init__(self, coro: Coroutine[Any, Any, Any], on_suspend: Callable[[], None]) -> None:
        self.coro = coro
        self.on_suspend = on_suspend

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, on_suspend = self.coro, self.on_suspend
        message: Any = None
        error: BaseException | None = None
        while True:
            try:
                if error is None:
                    suspended = coro.send(message)
                else:
                    suspended = coro.throw(error)
                    error = None
            except StopIteration as stop:
                return stop.value
            on_suspend()
            try:
                message = yield suspended
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:
                error = exc


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
