"""Edges: the bounded streams between nodes, and the emitters that write to them.

Each node that has an upstream owns one input stream. Every worker of every
upstream node holds its own clone of that stream's send side, so the input ends
(``EndOfStream``) exactly when all upstream workers have closed their clones:
end of input propagates through the graph by closing streams, and fan-in needs
no extra bookkeeping.

Sending takes the ``send_nowait`` fast path and awaits ``send`` only when the
buffer is full, so an item costs a scheduler round-trip only under backpressure.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from anyio import WouldBlock

if TYPE_CHECKING:
    from anyio.streams.memory import MemoryObjectSendStream

    from ._graph import Route

Emit = Callable[[Any], Awaitable[None]]
Fail = Callable[[Any, Exception], Awaitable[None]]


def make_emitter(
    node: str,
    outputs: Mapping[str, MemoryObjectSendStream[Any]],
    route: Route | None,
    fail: Fail,
    *,
    tracked: bool = False,
) -> Emit:
    """Return ``await emit(item)`` that sends *item* downstream.

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
    async def emit(envelope: tuple[Any, Any]) -> None:
        ticket = envelope[0]
        for stream in streams:
            ticket.pending += 1
            try:
                stream.send_nowait(envelope)
            except WouldBlock:
                await stream.send(envelope)

    return emit


def _single_emitter(stream: MemoryObjectSendStream[Any]) -> Emit:
    send_nowait, send = stream.send_nowait, stream.send

    async def emit(item: Any) -> None:
        try:
            send_nowait(item)
        except WouldBlock:
            await send(item)

    return emit


def _fan_out_emitter(streams: Sequence[MemoryObjectSendStream[Any]]) -> Emit:
    async def emit(item: Any) -> None:
        for stream in streams:
            try:
                stream.send_nowait(item)
            except WouldBlock:
                await stream.send(item)

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

    async def emit(item: Any) -> None:
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
            await fail(value, exc)
            return
        if tracked:
            item[0].pending += 1
        try:
            stream.send_nowait(item)
        except WouldBlock:
            await stream.send(item)

    return emit
