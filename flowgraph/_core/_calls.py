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

from ._exceptions import PartialOutputError
from ._functions import FnKind
from ._nodes import Collection
from ._policy import wait_downstream
from ._threads import BoundThreads

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from ._acks import Ticket
    from ._edges import Emit
    from ._executor import BoundCall
    from ._nodes import Node
    from ._policy import Call


@final
class Outputs:
    """Where one worker's generator calls send outputs: its emitter, and the input's ticket."""

    __slots__ = ("emit", "sent", "ticket")

    def __init__(self, emit: Emit | None) -> None:
        self.emit = emit
        self.ticket: Ticket | None = None
        self.sent = 0

    async def send(self, out: Any) -> None:
        """Send one output; a tracked input's ticket takes one hold for it first."""
        self.sent += 1
        emit = self.emit
        if emit is None:
            return
        ticket = self.ticket
        if ticket is not None:
            ticket.pending += 1
            waiting = emit((ticket, out))
        else:
            waiting = emit(out)
        if waiting is not None:
            await wait_downstream(waiting)


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
        return _streaming(node, lambda item: _aiter(fn(item))), True
    return _streaming(node, lambda item: _alist(bound, item)), True


def _streaming(node: Node[..., Any], outputs: Callable[[Any], AsyncIterator[Any]]) -> Call:
    idempotent = node.idempotent

    async def stream(item: Any) -> int:
        port = OUTPUTS.get()
        first = port.sent
        send = port.send
        iterator = outputs(item)
        try:
            async for out in iterator:
                await send(out)
        except Exception as exc:
            sent = port.sent - first
            if sent and not idempotent:
                raise PartialOutputError(exc, sent) from exc
            raise
        finally:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                await aclose()
        return port.sent - first

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


async def _aiter(iterable: Any) -> AsyncIterator[Any]:
    for out in iterable:
        yield out


async def _alist(bound: BoundCall, item: Any) -> AsyncIterator[Any]:
    for out in await bound(item):
        yield out


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
