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

    When *tracked*, items are ``(ticket, item)`` envelopes and every delivery
    adds one to the ticket's pending count (see ``_acks``).
    """
    if route is not None:
        return _routing_emitter(node, outputs, route, fail, tracked)
    streams = list(outputs.values())
    if tracked:
        return _tracked_emitter(streams)
    if len(streams) == 1:
        return _single_emitter(streams[0])
    return _fan_out_emitter(streams)


def _tracked_emitter(streams: Sequence[MemoryObjectSendStream[Any]]) -> Emit:
    def emit(envelope: tuple[Any, Any]) -> Awaitable[None] | None:
        ticket = envelope[0]
        for index, stream in enumerate(streams):
            ticket.pending += 1
            try:
                stream.send_nowait(envelope)
            except WouldBlock:
                ticket.pending -= 1
                return _send_tracked_from(streams, index, envelope)
        return None

    return emit


async def _send_tracked_from(
    streams: Sequence[MemoryObjectSendStream[Any]], index: int, envelope: tuple[Any, Any]
) -> None:
    ticket = envelope[0]
    for stream in streams[index:]:
        ticket.pending += 1
        try:
            stream.send_nowait(envelope)
        except WouldBlock:
            await stream.send(envelope)


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
            return fail(value, exc)
        if tracked:
            item[0].pending += 1
        try:
            stream.send_nowait(item)
        except WouldBlock:
            return stream.send(item)
        return None

    return emit
