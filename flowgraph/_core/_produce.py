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
from ._exceptions import NodeError, describe_item
from ._nodes import Positioned

if TYPE_CHECKING:
    from ._acks import SourceTracker
    from ._edges import Emit
    from ._workers import NodeRun

YIELD_EVERY = 64
"""A worker that never has to wait yields to the scheduler after this many items."""


async def produce(nr: NodeRun, emit: Emit) -> None:
    """Read the source's iterable and emit every item, yielding now and then."""
    counters, node, tracking = nr.counters, nr.node, nr.tracking
    try:
        if node.checkpoint:
            resume = tracking.resume.get(nr.name) if tracking is not None else None
            iterable = await open_source(node, nr.threads, resume)
        else:
            iterable = await open_source(node, nr.threads)
        tracker = (
            tracking.tracker(nr.name, node.max_in_flight)
            if tracking is not None and node.checkpoint
            else None
        )
        items = _open_items(iterable, nr.name)
        try:
            if tracker is not None:
                await _emit_tracked(items, tracker, emit, nr)
            else:
                await _emit(items, emit, nr, tracked=tracking is not None)
        finally:
            aclose = getattr(items, "aclose", None)
            if aclose is not None:
                await aclose()
    except NodeError:
        raise
    except Exception as exc:
        counters.errors += 1
        raise NodeError.for_source(nr.name, counters.items_out, exc) from exc


async def _emit(items: AsyncIterator[Any], emit: Emit, nr: NodeRun, *, tracked: bool) -> None:
    """Emit a source's items (in untracked envelopes if the run tracks other sources)."""
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
