"""Edges: the bounded streams between nodes, and the emitters that write to them.

Each node that has an upstream owns one input stream. Every worker of every
upstream node holds its own clone of that stream's send side, so the input ends
(``EndOfStream``) exactly when all upstream workers have closed their clones:
end of input propagates through the graph by closing streams, and fan-in needs
no extra bookkeeping.

Sending takes the ``send_nowait`` fast path and awaits ``send`` only when the
buffer is full, so an item costs a scheduler round-trip only under backpressure.
An emitter is a plain function, not a coroutine function: ``emit(item)`` returns
``None`` when the item was delivered at once, or an awaitable that finishes the
delivery, so the common case creates no coroutine and awaits nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from anyio import WouldBlock

if TYPE_CHECKING:
    from anyio.streams.memory import MemoryObjectSendStream

    from ._acks import Ticket
    from ._graph import Route

Emit = Callable[[Any], "Awaitable[None] | None"]
Fail = Callable[[Any, Exception], Awaitable[None]]


def make_emitter(
    node: str,
    outputs: Mapping[str, MemoryObjectSendStream[Any]],
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
        return _routing_emitter(node, outputs, route, fail, tracked)
    streams = list(outputs.values())
    if len(streams) == 1:
        return _single_emitter(streams[0])
    if tracked:
        return _tracked_fan_out_emitter(streams)
    return _fan_out_emitter(streams)


def _single_emitter(stream: MemoryObjectSendStream[Any]) -> Emit:
    send_nowait, send = stream.send_nowait, stream.send

    def emit(item: Any) -> Awaitable[None] | None:
        try:
            send_nowait(item)
        except WouldBlock:
            return send(item)
        return None

    return emit


def _fan_out_emitter(streams: Sequence[MemoryObjectSendStream[Any]]) -> Emit:
    def emit(item: Any) -> Awaitable[None] | None:
        for index, stream in enumerate(streams):
            try:
                stream.send_nowait(item)
            except WouldBlock:
                return _send_from(streams, index, item)
        return None

    return emit


async def _send_from(streams: Sequence[MemoryObjectSendStream[Any]], index: int, item: Any) -> None:
    """Finish a fan-out that found ``streams[index]`` full."""
    await streams[index].send(item)
    for stream in streams[index + 1 :]:
        try:
            stream.send_nowait(item)
        except WouldBlock:
            await stream.send(item)


def _tracked_fan_out_emitter(streams: Sequence[MemoryObjectSendStream[Any]]) -> Emit:
    extra = len(streams) - 1
    fan_out = _fan_out_emitter(streams)

    def emit(envelope: tuple[Any, Any]) -> Awaitable[None] | None:
        envelope[0].pending += extra
        return fan_out(envelope)

    return emit


def _routing_emitter(
    node: str,
    outputs: Mapping[str, MemoryObjectSendStream[Any]],
    route: Route,
    fail: Fail,
    tracked: bool,
) -> Emit:
    by = route.by
    table: dict[Hashable, MemoryObjectSendStream[Any]] = {
        key: outputs[target] for key, target in route.targets.items()
    }
    fallback = None if route.default is None else outputs[route.default]

    def emit(item: Any) -> Awaitable[None] | None:
        value = item[1] if tracked else item
        try:
            key = by(value)
            stream = table.get(key, fallback)
            if stream is None:
                raise LookupError(
                    f"route of {node!r} has no target for key {key!r} "
                    f"(known keys: {', '.join(map(repr, table))})"
                )
        except Exception as exc:
            return _fail_and_release(fail, value, exc, item[0]) if tracked else fail(value, exc)
        try:
            stream.send_nowait(item)
        except WouldBlock:
            return stream.send(item)
        return None

    return emit


async def _fail_and_release(fail: Fail, item: Any, error: Exception, ticket: Ticket) -> None:
    """An item the route cannot place is handled like a failed one, then lets go of its ticket."""
    await fail(item, error)
    ticket.release()
