"""Batches: group a node's input items into lists by size and time.

A node declared with ``batch=`` (or made by ``graph.batch()``) has one extra
task, its batcher, between its input stream and its workers. The batcher
collects items into a list and hands the list to a worker when it holds
``size`` items, when ``within`` seconds have passed since its first item,
and at the end of input, which a graceful stop reaches too: the tail is never
lost and never waits longer than ``within``. Order within a batch is arrival
order.

Acknowledgements stay exact: a batch travels with a :class:`BatchTicket`
holding the tickets of its items, and releases each of them only when the
batch (and everything made from it) has been finished, so no item's position
is committed before the batch that holds it has reached every sink.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, final

import anyio
import anyio.lowlevel
from anyio import EndOfStream, WouldBlock

from ._edges import YIELD_EVERY, Chunk
from ._exceptions import GraphError
from ._validate import int_at_least, to_seconds

if TYPE_CHECKING:
    from datetime import timedelta

    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

    from ._acks import Ticket
    from ._stats import WorkerCounters


@final
@dataclass(frozen=True, init=False, repr=False, slots=True)
class Batch:
    """How a node groups its input into lists: ``fg.Batch(1000, within=0.5)``.

    A batch is handed on when it holds *size* items, or *within* seconds after
    its first item arrived, or at the end of input, whichever comes first.

    Args:
        size: most items in a batch (``None``: no limit; then *within* is needed).
        within: most seconds an item waits in an unfinished batch (``None``:
            batches wait to be full or for the end of input).

    Raises:
        GraphError: if neither is given, or one is out of range.

    Added in 0.2.
    """

    size: int | None
    within: float | None

    def __init__(self, size: int | None = None, *, within: float | timedelta | None = None) -> None:
        if size is None and within is None:
            raise GraphError("a Batch needs size=, within= or both")
        object.__setattr__(self, "size", None if size is None else int_at_least("size", size, 1))
        object.__setattr__(self, "within", None if within is None else to_seconds("within", within))

    def __repr__(self) -> str:
        within = "" if self.within is None else f"within={self.within!r}"
        return f"Batch({', '.join(p for p in (repr(self.size) if self.size else '', within) if p)})"


def check_batch(where: str, value: object) -> Batch | None:
    """``batch=`` takes a :class:`Batch`, or an int as its size."""
    if value is None or isinstance(value, Batch):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return Batch(int_at_least(where, value, 1))
    raise GraphError(f"{where} must be a size or fg.Batch(size, within=...) (got {value!r})")


class BatchTicket:
    """The ticket of a batch: its own holds, and on release to zero, one release per member."""

    __slots__ = ("members", "pending")

    def __init__(self, members: list[Ticket]) -> None:
        self.members = members
        self.pending = 1

    def release(self) -> None:
        self.pending -= 1
        if not self.pending:
            for member in self.members:
                member.release()


async def run_batcher(
    batch: Batch,
    intake: MemoryObjectReceiveStream[Any],
    batches: MemoryObjectSendStream[Any],
    counters: WorkerCounters,
    *,
    tracked: bool,
) -> None:
    """Read *intake* until it ends and send its items to *batches* as lists."""
    size = batch.size or math.inf
    within = batch.within if batch.within is not None else math.inf
    items: list[Any] = []
    tickets: list[Any] = []
    deadline = math.inf
    held = 0  # items in the batch being filled
    budget = YIELD_EVERY

    async def flush() -> None:
        nonlocal items, tickets, deadline
        chunk = Chunk(((BatchTicket(tickets), items) if tracked else items,))
        chunk.room = 0
        items, tickets, deadline = [], [], math.inf
        await batches.send(chunk)

    with batches:
        while True:
            try:
                try:
                    chunk = intake.receive_nowait()
                except WouldBlock:
                    counters.idle = True
                    chunk = await _receive_before(intake, deadline)
                    counters.idle = False
            except EndOfStream:
                break
            if chunk is None:
                held = 0
                await flush()
                continue
            chunk.room = 0
            counters.taken += len(chunk)
            for envelope in chunk:
                if not items:
                    deadline = anyio.current_time() + within
                if tracked:
                    tickets.append(envelope[0])
                    items.append(envelope[1])
                else:
                    items.append(envelope)
                held += 1
                if held >= size:
                    held = 0
                    await flush()
            budget -= 1
            if not budget:
                budget = YIELD_EVERY
                await anyio.lowlevel.checkpoint()
        if items:
            await flush()
    counters.idle = True


async def _receive_before(intake: MemoryObjectReceiveStream[Any], deadline: float) -> Any:
    """The next chunk, or ``None`` if *deadline* passes first; ``EndOfStream`` at the end."""
    with anyio.move_on_after(deadline - anyio.current_time()):
        return await intake.receive()
    return None
