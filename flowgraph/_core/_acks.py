"""Acknowledgement tracking: when has every item derived from a source item been finished?

With a checkpoint store, every item on an edge travels as ``(ticket, item)``.
A ticket belongs to one source item and counts its holds: one per copy of it,
or of an item derived from it, that a node has yet to finish with. Sending an
item hands the sender's hold to the receiving node (a fan-out to k nodes adds
k - 1 holds, a generator with k outputs turns its input's hold into k), and a
node releases its hold when it has consumed the item in a sink, filtered it
out, skipped or dead-lettered it. When the count reaches zero the source item
is acknowledged. Holds are added before the send they cover, so a send that is
cancelled, delivered or not, can only delay an acknowledgement, never advance it.

Per source, a low watermark advances over acknowledged items in emission order:
the committed position is that of the highest item such that it and every
earlier item are acknowledged, so items finishing out of order never let the
checkpoint skip one that is still in flight.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import anyio

from ._events import CheckpointCommitted

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ._run import Run

logger = logging.getLogger("flowgraph.checkpoints")

FINAL_COMMIT_GRACE = 10.0
"""Seconds the last commit of a failed, stopped or cancelled run may take, shielded."""


@runtime_checkable
class CheckpointStore(Protocol):
    """Where a run loads and commits source positions (``fg.Checkpoints`` is one).

    Commits are batched: after ``every`` acknowledgements or ``interval``
    seconds, whichever comes first, and once more when the run ends.
    """

    every: int
    interval: float

    async def load(self, graph: str) -> Mapping[str, Any]: ...

    async def commit(self, graph: str, positions: Mapping[str, Any]) -> None: ...


class Ticket:
    """One source item's count of holds: deliveries and derived items not yet finished."""

    __slots__ = ("pending", "position", "seq", "tracker")

    def __init__(self, tracker: SourceTracker | None, seq: int, position: Any) -> None:
        self.tracker = tracker
        self.seq = seq
        self.position = position
        self.pending = 1  # the source's hold, which its emit passes to the delivery

    def release(self) -> None:
        self.pending -= 1
        if not self.pending and self.tracker is not None:
            self.tracker.ack(self.seq, self.position)


UNTRACKED = Ticket(None, -1, None)
"""The ticket of items from sources without checkpoints: never acknowledged."""


class SourceTracker:
    """The low watermark of one checkpointed source, and its cap on items in flight."""

    def __init__(self, tracking: Tracking, source: str, max_in_flight: int) -> None:
        self.tracking = tracking
        self.source = source
        self.max_in_flight = max_in_flight
        self.next_seq = 0
        self.lowest_unacked = 0
        self.acked: dict[int, Any] = {}  # seq -> position, only above lowest_unacked
        self.watermark: Any = None
        self.advanced = False
        self.room: anyio.Event | None = None  # set while the source waits for room

    def issue_nowait(self, position: Any) -> Ticket | None:
        """A ticket for the next item, or ``None`` if ``max_in_flight`` items are unacknowledged."""
        # Invariant: next_seq - lowest_unacked <= max_in_flight, so a crash
        # replays at most max_in_flight items of this source beyond the commit lag.
        if self.next_seq - self.lowest_unacked >= self.max_in_flight:
            return None
        ticket = Ticket(self, self.next_seq, position)
        self.next_seq += 1
        return ticket

    async def issue(self, position: Any) -> Ticket:
        """A ticket for the next item, waiting while ``max_in_flight`` items are unacknowledged."""
        ticket = self.issue_nowait(position)
        while ticket is None:
            self.room = anyio.Event()
            await self.room.wait()
            ticket = self.issue_nowait(position)
        return ticket

    def ack(self, seq: int, position: Any) -> None:
        if seq != self.lowest_unacked:
            self.acked[seq] = position
        else:
            self.watermark = position
            seq += 1
            acked = self.acked
            if acked:
                while seq in acked:
                    self.watermark = acked.pop(seq)
                    seq += 1
            self.lowest_unacked = seq
            self.advanced = True
            if self.room is not None:
                self.room.set()
                self.room = None
        tracking = self.tracking
        tracking.acks_since_commit += 1
        if tracking.acks_since_commit == tracking.every:
            tracking.due.set()


class Tracking:
    """Every source tracker of one run, and the batched commits of their watermarks."""

    def __init__(self, run: Run, store: CheckpointStore, resume: Mapping[str, Any]) -> None:
        self.run = run
        self.store = store
        self.resume = dict(resume)
        self.sources: dict[str, SourceTracker] = {}
        self.acks_since_commit = 0
        self.every = store.every
        self.due = anyio.Event()

    def tracker(self, source: str, max_in_flight: int) -> SourceTracker:
        tracker = self.sources[source] = SourceTracker(self, source, max_in_flight)
        return tracker

    async def commit_periodically(self) -> None:
        """Commit every ``every`` acks or ``interval`` seconds until every node has finished."""
        while True:
            with anyio.move_on_after(self.store.interval):
                await self.due.wait()
            if self.run.all_finished:
                return
            await self.commit()

    async def commit(self) -> None:
        """Commit the watermarks that moved since the last commit."""
        if self.due.is_set():
            self.due = anyio.Event()
        self.acks_since_commit = 0
        moved = {name: t.watermark for name, t in self.sources.items() if t.advanced}
        if not moved:
            return
        for name in moved:
            self.sources[name].advanced = False
        await self.store.commit(self.run.graph.name, moved)
        logger.info("checkpoint %s: %s", self.run.graph.name, moved)
        self.run.emit(CheckpointCommitted(self.run, moved))

    async def commit_finally(self) -> None:
        """The last commit of a run, shielded so that a stop or cancellation still records it."""
        with anyio.move_on_after(FINAL_COMMIT_GRACE, shield=True):
            await self.commit()
