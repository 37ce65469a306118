"""Sources at run time: read the source's items and emit them, with tickets if checkpointed.

A source's items come from an async iterable as it is, from a collection read
on the event loop, or from a sync iterator read in a worker thread in batches
(see ``_threads``). A source that emits without ever waiting still yields to
the scheduler every ``YIELD_EVERY`` items.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel

from ._acks import UNTRACKED
from ._calls import open_source
from ._edges import YIELD_EVERY
from ._exceptions import AttemptsExhausted, NodeError, PartialOutputError, describe_item
from ._nodes import Positioned

if TYPE_CHECKING:
    from ._acks import SourceTracker
    from ._edges import Emit, Outlet
    from ._policy import Call
    from ._workers import NodeRun


async def produce(nr: NodeRun, emit: Emit) -> None:
    """Read the source's iterable and emit every item, yielding now and then.

    A source with ``retry=``, ``rate=``, ``timeout=`` or an ``on_error`` other
    than ``"raise"`` goes through :func:`_produce_with_policies`; the others
    take the direct path.
    """
    node = nr.node
    if not node.policies and node.on_error == "raise":
        resume = nr.tracking.resume.get(nr.name) if nr.tracking is not None else None
        try:
            await _pass(nr, emit, resume, None)
        except NodeError:
            raise
        except Exception as exc:
            nr.counters.errors += 1
            raise NodeError.for_source(nr.name, nr.counters.items_out, exc) from exc
        return
    await _produce_with_policies(nr, emit)


async def _pass(nr: NodeRun, emit: Emit, resume: Any, pull: Call | None) -> None:
    """Open the source (after *resume*, if checkpointed) and emit its items until it ends.

    *pull*, if given, takes each next item (``await pull(iterator)``): the
    source's rate limit and timeout wrap it.
    """
    node, tracking = nr.node, nr.tracking
    args = (resume,) if node.checkpoint else ()
    iterable = await open_source(node, nr.threads, *args)
    items = _open_items(iterable, nr.name)
    if pull is not None:
        items = _pulled(items, pull, nr)
    try:
        if tracking is not None and node.checkpoint:
            tracker = tracking.sources.get(nr.name) or tracking.tracker(nr.name, node.max_in_flight)
            await _emit_tracked(items, tracker, emit, nr)
        else:
            await _emit(items, emit, nr, tracked=tracking is not None)
    finally:
        aclose = getattr(items, "aclose", None)
        if aclose is not None:
            await aclose()


async def _pulled(items: AsyncIterator[Any], pull: Call, nr: NodeRun) -> AsyncIterator[Any]:
    """*items*, each taken through *pull*; remembers the last position handed on."""
    while True:
        try:
            value = await pull(items)
        except StopAsyncIteration:
            return
        if isinstance(value, Positioned):
            nr.position = value.position
        yield value


async def _produce_with_policies(nr: NodeRun, emit: Emit) -> None:
    """Emit the source's items under its policies: each pull is rate-limited and timed; a
    failed pass is retried, a checkpointed source resuming after the last item it emitted.

    A source that is not checkpointed and failed after emitting is not run again
    (it would emit its items twice) unless it is ``idempotent``. When the source
    gives up, ``on_error`` decides: ``"raise"`` fails the run; otherwise the error
    is counted and handed to the node's failure policy, the source ends, and the
    graph drains what it emitted.
    """
    node, counters = nr.node, nr.counters
    pull: Call = _next_item
    for policy in reversed([p for p in (node.timeout, node.rate) if p is not None]):
        pull = policy.wrap(pull, nr)
    if nr.tracking is not None:
        nr.position = nr.tracking.resume.get(nr.name)

    async def one_pass(_: Any) -> None:
        emitted = counters.items_out
        try:
            await _pass(nr, emit, nr.position, pull)
        except Exception as exc:
            sent = counters.items_out - emitted
            if sent and not node.checkpoint and not node.idempotent:
                raise PartialOutputError(exc, sent) from exc
            raise

    attempt: Call = one_pass if node.retry is None else node.retry.wrap(one_pass, nr)
    try:
        await attempt(None)
    except NodeError:
        raise
    except Exception as exc:
        if node.on_error == "raise":
            counters.errors += 1
            cause: BaseException = exc
            while isinstance(cause, AttemptsExhausted | PartialOutputError):
                cause = cause.error
            raise NodeError.for_source(nr.name, counters.items_out, cause) from cause
        await nr.fail(nr.position, exc)


async def _next_item(items: AsyncIterator[Any]) -> Any:
    return await anext(items)


async def _emit(items: AsyncIterator[Any], emit: Emit, nr: NodeRun, *, tracked: bool) -> None:
    """Emit a source's items (in untracked envelopes if the run tracks other sources)."""
    if not tracked and not nr.node.checkpoint and len(nr.outlets) == 1:
        outlet = nr.outlets[0]
        if emit == outlet.put:
            await _put_each(items, outlet, nr)
            return
    counters, checkpointed = nr.counters, nr.node.checkpoint
    yield_to_loop = anyio.lowlevel.checkpoint
    budget = YIELD_EVERY
    async for value in items:
        item = _positioned(value, nr.name).item if checkpointed else value
        if (waiting := emit((UNTRACKED, item) if tracked else item)) is not None:
            await waiting
        counters.items_out += 1
        budget -= 1
        if not budget:
            budget = YIELD_EVERY
            await yield_to_loop()


async def _put_each(items: AsyncIterator[Any], outlet: Outlet, nr: NodeRun) -> None:
    """The plain source's loop: each item straight into *outlet*'s open chunk when it has room."""
    counters = nr.counters
    yield_to_loop = anyio.lowlevel.checkpoint
    open_chunk = outlet.open
    budget = YIELD_EVERY
    async for item in items:
        chunk = outlet.chunk
        if chunk.room:
            chunk.room -= 1
            chunk.append(item)
        elif (waiting := open_chunk(item)) is not None:
            await waiting
        counters.items_out += 1
        budget -= 1
        if not budget:
            budget = YIELD_EVERY
            await yield_to_loop()


async def _emit_tracked(
    items: AsyncIterator[Any], tracker: SourceTracker, emit: Emit, nr: NodeRun
) -> None:
    """Emit a checkpointed source's items, each with a ticket of its tracker."""
    counters, name = nr.counters, nr.name
    issue_nowait, issue = tracker.issue_nowait, tracker.issue
    yield_to_loop = anyio.lowlevel.checkpoint
    budget = YIELD_EVERY
    async for value in items:
        if type(value) is not Positioned:
            _positioned(value, name)
        ticket = issue_nowait(value.position) or await issue(value.position)
        item = value.item
        if (waiting := emit((ticket, item))) is not None:
            await waiting
        counters.items_out += 1
        budget -= 1
        if not budget:
            budget = YIELD_EVERY
            await yield_to_loop()


def _positioned(value: Any, name: str) -> Positioned:
    if not isinstance(value, Positioned):
        raise TypeError(
            f"checkpointed source {name!r} produced {describe_item(value)}; "
            "it must yield fg.Positioned(item, position)"
        )
    return value


def _open_items(iterable: Any, name: str) -> AsyncIterator[Any]:
    """The source's items as an async iterator; an async iterable is used as it is.

    Wrapping the user's async generator in a second one would cost a second
    generator step per item, so only collections (read on the loop) get a wrapper.
    """
    if isinstance(iterable, AsyncIterable):
        return aiter(iterable)
    if isinstance(iterable, Iterable):
        return _iterate_on_loop(iterable)
    raise TypeError(
        f"source {name!r} must produce an iterable or async iterable, got {type(iterable).__name__}"
    )


async def _iterate_on_loop(iterable: Iterable[Any]) -> AsyncGenerator[Any, None]:
    for item in iterable:
        yield item
