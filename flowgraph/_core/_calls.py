"""How the engine calls a node's function: one call shape for every flavour of function.

Whatever a node's function is (async or sync, plain or generator), the worker
sees the same thing at run time: ``await call(item)`` returning the node's
output, plus a flag saying whether that output is one item or a list of items
to emit one by one; then the node's policies wrap that call, the first listed
outermost. Both happen once per node per run, never per item.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread

from ._nodes import Collection, FnKind

if TYPE_CHECKING:
    from ._nodes import Node
    from ._policy import Call


def adapt_call(node: Node[..., Any], limiter: anyio.CapacityLimiter) -> tuple[Call, bool]:
    """Build ``(call, many)`` for a transform or sink: ``await call(item)`` gives its output.

    Generator functions are drained per item into a list (``many`` is true), so a
    retried item never emits half its outputs twice. Sync functions run in a worker
    thread bounded by *limiter*, unless the node is ``inline``.
    """
    fn: Any = node.fn
    kind = node.fn_kind
    if kind is FnKind.ASYNC:
        return fn, False
    if kind is FnKind.ASYNC_GEN:

        async def drain_async(item: Any) -> list[Any]:
            return [out async for out in fn(item)]

        return drain_async, True
    if kind is FnKind.SYNC_GEN:

        def drain(item: Any) -> list[Any]:
            return list(fn(item))

        target, many = drain, True
    else:
        target, many = fn, False
    if node.inline:

        async def call_inline(item: Any) -> Any:
            return target(item)

        return call_inline, many

    run_sync = anyio.to_thread.run_sync

    async def call_in_thread(item: Any) -> Any:
        return await run_sync(target, item, limiter=limiter)

    return call_in_thread, many


def apply_policies(call: Call, node: Node[..., Any], context: Any) -> Call:
    """Wrap *call* in the node's policies, the first listed outermost."""
    for policy in reversed(node.policies):
        call = policy.wrap(call, context)
    return call


async def open_source(node: Node[..., Any], *args: Any) -> Any:
    """Call the source's function with *args* and return its iterable.

    The result is an ``AsyncIterable`` or an ``Iterable``; sync functions that are
    not generator functions are called in a worker thread, since building their
    iterable may block.
    """
    fn: Any = node.fn
    kind = node.fn_kind
    if isinstance(fn, Collection):
        return fn.items
    if kind in (FnKind.ASYNC_GEN, FnKind.SYNC_GEN):
        return fn(*args)
    if kind is FnKind.ASYNC:
        return await fn(*args)
    return await anyio.to_thread.run_sync(fn, *args)
