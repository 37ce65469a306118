"""How the engine calls a node's function: one call shape for every flavour and executor.

Whatever a node's function is (async or sync, plain or generator) and wherever
it runs (the event loop, threads, processes, a cluster), the worker awaits
``call(item)``, wrapped by the node's policies, the first listed outermost.
Both are built once per node per run, never per item.

A plain function's call returns its one output. A generator's call streams:
each output goes downstream as it is yielded, under backpressure, through the
worker's :class:`Outputs` (found in a context variable the worker sets once),
and the call returns how many it sent. So one item that yields a million rows
never holds them all. A generator that fails after sending outputs is not
silently re-run from the start (a retry would send them again): it raises
:class:`PartialOutputError`, which retries pass through, unless the node is
declared ``idempotent=True``. Generators on processes and clusters run to the
end where they run, and their list of outputs is then sent the same way.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, final

import anyio
import anyio.lowlevel

from ._edges import YIELD_EVERY
from ._exceptions import PartialOutputError
from ._functions import FnKind
from ._nodes import Collection
from ._policy import wait_downstream
from ._threads import BoundThreads

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from ._acks import Ticket
    from ._edges import Emit, Outlet
    from ._executor import BoundCall
    from ._nodes import Node
    from ._policy import Call


@final
class Outputs:
    """Where one worker's generator calls send outputs: its emitter (and the outlet it puts
    into, when the emitter is that outlet's plain ``put``), the input's ticket, and how
    many outputs it has sent in all (the node's ``items_out``)."""

    __slots__ = ("direct", "emit", "sent", "ticket")

    def __init__(self, emit: Emit | None, direct: Outlet | None = None) -> None:
        self.emit = emit
        self.direct = direct
        self.ticket: Ticket | None = None
        self.sent = 0


OUTPUTS: ContextVar[Outputs] = ContextVar("flowgraph_outputs")


def build_call(node: Node[..., Any], bound: BoundCall | None) -> tuple[Call, bool]:
    """``(call, many)`` for a transform or sink; *bound* is its executor, ``None`` on the loop.

    ``many`` says the call is a generator's: it sends its outputs itself and
    returns their count (or, for an ``ordered`` node, returns them as a list).
    """
    fn: Any = node.fn
    kind = node.fn_kind
    if kind is FnKind.ASYNC:
        return fn, False
    if kind is FnKind.SYNC:
        if bound is None:

            async def call_on_loop(item: Any) -> Any:
                return fn(item)

            return call_on_loop, False
        return bound, False
    if node.ordered and node.workers > 1:
        return _collect(node, bound), True
    if kind is FnKind.ASYNC_GEN:
        return _streaming(node, fn), True
    if isinstance(bound, BoundThreads):
        return _streaming(node, lambda item: bound.iterate(fn, item)), True
    if bound is None:
        return _streaming_sync(node, fn, remote=False), True
    return _streaming_sync(node, bound, remote=True), True


def _streaming(node: Node[..., Any], outputs: Callable[[Any], AsyncIterator[Any]]) -> Call:
    """The call of a generator whose outputs come asynchronously; see the module docstring."""
    idempotent = node.idempotent

    async def stream(item: Any) -> int:
        port = OUTPUTS.get()
        emit, ticket = port.emit, port.ticket
        before = port.sent  # the node's items_out counts each output as it leaves
        iterator = outputs(item)
        try:
            async for out in iterator:
                port.sent += 1
                if emit is not None:
                    if ticket is not None:
                        ticket.pending += 1
                        out = (ticket, out)
                    if (waiting := emit(out)) is not None:
                        await wait_downstream(waiting)
        except Exception as exc:
            if (sent := port.sent - before) and not idempotent:
                raise PartialOutputError(exc, sent) from exc
            raise
        finally:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                await aclose()
        return port.sent - before

    return stream


def _streaming_sync(node: Node[..., Any], outputs: Callable[[Any], Any], *, remote: bool) -> Call:
    """The call of a generator run on the event loop, or (*remote*) of one an executor ran
    to the end, whose outputs come back as a list: like :func:`_streaming` without an
    await per output, yielding to the loop every ``YIELD_EVERY`` outputs when nothing
    made it wait."""
    idempotent = node.idempotent
    yield_to_loop = anyio.lowlevel.checkpoint

    async def stream(item: Any) -> int:
        port = OUTPUTS.get()
        emit, ticket, direct = port.emit, port.ticket, port.direct
        before, budget = port.sent, YIELD_EVERY
        iterable = await outputs(item) if remote else outputs(item)
        try:
            for out in iterable:
                port.sent += 1
                if direct is not None and ticket is None:
                    chunk = direct.chunk
                    if chunk.room:
                        chunk.room -= 1
                        chunk.append(out)
                    elif (waiting := direct.open(out)) is not None:
                        await waiting
                        budget = YIELD_EVERY
                        continue
                elif emit is not None:
                    if ticket is not None:
                        ticket.pending += 1
                        out = (ticket, out)
                    if (waiting := emit(out)) is not None:
                        await wait_downstream(waiting)
                        budget = YIELD_EVERY
                        continue
                budget -= 1
                if not budget:
                    budget = YIELD_EVERY
                    await yield_to_loop()
        except Exception as exc:
            if (sent := port.sent - before) and not idempotent:
                raise PartialOutputError(exc, sent) from exc
            raise
        return port.sent - before

    return stream


def _collect(node: Node[..., Any], bound: BoundCall | None) -> Call:
    """An ordered generator node's call: its outputs as a list, sent when its turn comes."""
    fn: Any = node.fn
    if node.fn_kind is FnKind.ASYNC_GEN:

        async def collect_async(item: Any) -> list[Any]:
            return [out async for out in fn(item)]

        return collect_async
    if bound is None:

        async def collect_on_loop(item: Any) -> list[Any]:
            return list(fn(item))

        return collect_on_loop
    return bound


def apply_policies(call: Call, node: Node[..., Any], context: Any) -> Call:
    """Wrap *call* in the node's policies, the first listed outermost."""
    for policy in reversed(node.policies):
        call = policy.wrap(call, context)
    return call


async def open_source(node: Node[..., Any], threads: BoundThreads | None, *args: Any) -> Any:
    """The source's items: an async iterable, or a collection to read on the loop.

    Sync functions and generators run in *threads*: building their iterable
    may block, and so may reading it.
    """
    fn: Any = node.fn
    if isinstance(fn, Collection):
        return fn.items
    kind = node.fn_kind
    if kind is FnKind.ASYNC_GEN:
        return fn(*args)
    if kind is FnKind.ASYNC:
        return await fn(*args)
    assert threads is not None
    return threads.iterate(_iterable_of, fn, *args)


def _iterable_of(fn: Callable[..., Any], *args: Any) -> Any:
    iterable = fn(*args)
    if not hasattr(iterable, "__iter__"):
        raise TypeError(f"must produce an iterable, got {type(iterable).__name__}")
    return iterable
