"""Ordered nodes: several workers, outputs in input order (``ordered=True``).

Workers take tickets in arrival order and emit strictly in ticket order, so
the reorder buffer never holds more than one finished item per worker.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import anyio

from ._calls import Outputs
from ._shared import take_items

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._acks import Ticket
    from ._edges import Emit
    from ._workers import NodeRun


class Turns:
    """Hands out tickets on receipt and lets workers emit strictly in ticket order.

    A worker holds at most one finished item while it waits for its turn, so the
    reorder buffer never holds more than ``workers`` items.
    """

    def __init__(self) -> None:
        self.next_ticket = 0
        self.now_serving = 0
        self.waiting: dict[int, anyio.Event] = {}

    def take(self, count: int) -> int:
        """Take *count* consecutive tickets; return the first."""
        ticket = self.next_ticket
        self.next_ticket += count
        return ticket

    async def wait(self, ticket: int) -> None:
        if ticket != self.now_serving:
            event = self.waiting[ticket] = anyio.Event()
            await event.wait()

    def done(self) -> None:
        self.now_serving += 1
        event = self.waiting.pop(self.now_serving, None)
        if event is not None:
            event.set()


async def consume_in_order(nr: NodeRun, turns: Turns, emit: Emit | None) -> None:
    """Like ``_consume``, but outputs leave in input order whatever order items finish in."""
    inbox = nr.inbox
    assert inbox is not None
    call, many, counters = nr.call, nr.many, nr.counters
    tracked = nr.tracking is not None
    ticket: Any = None
    worker = counters.worker()
    port = Outputs(emit)
    if many:
        nr.outputs.append(port)
    shared = nr.shared
    while (chunk := await take_items(shared, inbox)) is not None:
        first = turns.take(len(chunk))
        for turn, item in enumerate(chunk, first):
            if tracked:
                ticket, item = item
            worker.taken += 1
            worker.idle = False
            started = time.perf_counter()
            try:
                result = await call(item)
            except Exception as exc:
                await turns.wait(turn)
                try:
                    await nr.fail(item, exc)
                finally:
                    turns.done()
                counters.failed += 1
                if tracked:
                    ticket.release()
            else:
                counters.latency.record(time.perf_counter() - started)
                await turns.wait(turn)
                outs = result if many else (result,)
                if emit is not None:
                    await _emit_each(emit, outs, ticket if tracked else None)
                elif tracked:
                    ticket.release()
                if many:
                    port.sent += len(outs)
                turns.done()
            worker.idle = True


async def _emit_each(emit: Emit, outs: Sequence[Any], ticket: Ticket | None) -> None:
    """Emit every output of one item; a ticket's hold becomes one hold per output."""
    if ticket is not None:
        ticket.pending += len(outs)
    for out in outs:
        if (waiting := emit(out if ticket is None else (ticket, out))) is not None:
            await waiting
    if ticket is not None:
        ticket.release()
