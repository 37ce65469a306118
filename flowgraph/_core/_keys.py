"""Per-key order: many workers, one item per key at a time, in arrival order.

A node declared ``ordered="key", key=fn`` gives each item a key. The first
worker to take an item of a key holds that key until it has no more of its
items: an item of a held key, taken by another worker, is queued behind the
holder, which processes it next. So items with the same key are processed one
at a time in the order they arrived, items with different keys in parallel,
and no worker ever waits for another. The longest such queue is the node's
``key_skew`` statistic: a hot key shows there.
"""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING, Any

from ._calls import OUTPUTS, Outputs
from ._shared import take_items

if TYPE_CHECKING:
    from collections.abc import Hashable

    from ._edges import Emit
    from ._workers import NodeRun


class KeyQueues:
    """The keys a node's workers hold, each with the items queued behind its holder."""

    __slots__ = ("held", "longest", "waiting")

    def __init__(self) -> None:
        self.held: dict[Hashable, deque[Any]] = {}
        self.waiting = 0
        self.longest = 0


async def consume_by_key(nr: NodeRun, emit: Emit | None) -> None:
    """Like ``_workers._consume``, holding each item's key while its items are processed."""
    inbox, keys = nr.inbox, nr.keys
    assert inbox is not None
    assert keys is not None
    key_of = nr.node.key
    assert key_of is not None
    tracked = nr.tracking is not None
    worker = nr.counters.worker()
    port = Outputs(emit)
    if nr.many:
        nr.outputs.append(port)
        OUTPUTS.set(port)
    held, shared = keys.held, nr.shared
    while (chunk := await take_items(shared, inbox)) is not None:
        for envelope in chunk:
            worker.taken += 1
            try:
                key = key_of(envelope[1] if tracked else envelope)
            except Exception as exc:
                await _failed(nr, envelope, exc, tracked)
                continue
            queue = held.get(key)
            if queue is not None:
                queue.append(envelope)
                keys.waiting += 1
                keys.longest = max(keys.longest, len(queue))
                continue
            queue = held[key] = deque()
            worker.idle = False
            try:
                await _process(nr, envelope, emit, port, tracked)
                while queue:
                    keys.waiting -= 1
                    await _process(nr, queue.popleft(), emit, port, tracked)
            finally:
                del held[key]
                worker.idle = True


async def _process(
    nr: NodeRun, envelope: Any, emit: Emit | None, port: Outputs, tracked: bool
) -> None:
    """Call the node on one item and pass on its output, as ``_consume`` does per item."""
    ticket = None
    if tracked:
        ticket, item = envelope
        port.ticket = ticket
    else:
        item = envelope
    started = time.perf_counter()
    try:
        result = await nr.call(item)
    except Exception as exc:
        await _failed(nr, envelope, exc, tracked)
        return
    nr.counters.latency.record(time.perf_counter() - started)
    if emit is None or nr.many:
        if ticket is not None:
            ticket.release()
    elif (waiting := emit((ticket, result) if tracked else result)) is not None:
        await waiting


async def _failed(nr: NodeRun, envelope: Any, error: Exception, tracked: bool) -> None:
    await nr.fail(envelope[1] if tracked else envelope, error)
    nr.counters.failed += 1
    if tracked:
        envelope[0].release()
