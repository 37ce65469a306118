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

The replay after a crash is bounded: a source holds at most ``max_in_flight``
unacknowledged items, and never runs more than ``max_in_flight + every`` items
past its last *committed* position. When commits fall behind (a slow or locked
store), acknowledged items pile up uncommitted and the source waits for the
commit, so a crash replays at most ``max_in_flight + every`` items per source,
whatever the store's latency.

Commits follow activity, never a clock of their own: after ``every``
acknowledgements, or ``interval`` seconds after the first acknowledgement not
yet committed, and once more when the run ends. A run with nothing to commit
sleeps until something is acknowledged.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import anyio

from ._events import CheckpointCommitted

if TYPE_CHECKING:
    from collections.abc import Mapping
    from contextlib import AbstractAsyncContextManager, AsyncExitStack

    from ._graph import Graph
    from ._run import Run

logger = logging.getLogger("flowgraph.checkpoints")

FINAL_COMMIT_GRACE = 10.0
"""Seconds the last commit of a failed, stopped or cancelled run may take, shielded."""


@runtime_checkable
class CheckpointStore(Protocol):
    """Where a run loads and commits source positions (``fg.Checkpoints`` is one).

    Commits are batched: after ``every`` acknowledgements or ``interval``
    seconds after the first uncommitted one, whichever comes first, and once
    more when the run ends. A store may also hand out leases (:class:`Leases`).
    """

    every: int
    interval: float

    async def load(self, graph: str) -> Mapping[str, Any]: ...

    async def commit(self, graph: str, positions: Mapping[str, Any]) -> None: ...


@runtime_checkable
class Leases(Protocol):
    """A checkpoint store that lets one run at a time hold a graph (``fg.Checkpoints`` does)."""

    def open_lease(self, graph: str) -> AbstractAsyncContextManager[object]: ...


async def claim(
    resources: AsyncExitStack, checkpoints: CheckpointStore, graph: Graph
) -> Mapping[str, Any]:
    """Take *graph*'s lease in *checkpoints*, held until *resources* closes; load its positions.

    Only a graph with checkpointed sources commits, so only such a graph takes
    the lease, before any of its sources starts: a second run of it against
    the same store fails here, having done nothing.

    Raises:
        StoreError: if another run holds the lease, or the positions cannot be read.
    """
    if isinstance(checkpoints, Leases) and any(n.checkpoint for n in graph.nodes.values()):
        await resources.enter_async_context(checkpoints.open_lease(graph.name))
    return await checkpoints.load(graph.name)


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
    """The low watermark of one checkpointed source, and its caps on items ahead of it."""

    def __init__(self, tracking: Tracking, source: str, max_in_flight: int) -> None:
        self.tracking = tracking
        self.source = source
        self.max_in_flight = max_in_flight
        self.max_ahead = max_in_flight + tracking.every
        self.next_seq = 0
        self.lowest_unacked = 0
        self.committed = 0  # the lowest seq the last successful commit does not cover
        self.acked: dict[int, Any] = {}  # seq -> position, only above lowest_unacked
        self.watermark: Any = None
        self.room: anyio.Event | None = None  # set while the source waits for room

    def issue_nowait(self, position: Any) -> Ticket | None:
        """A ticket for the next item, or ``None`` if the source must wait for room."""
        # Invariants: next_seq - lowest_unacked <= max_in_flight, and
        # next_seq - committed <= max_in_flight + every: a crash replays at most
        # max_in_flight + every items of this source, however slow the commits.
        seq = self.next_seq
        if (
            seq - self.lowest_unacked >= self.max_in_flight
            or seq - self.committed >= self.max_ahead
        ):
            return None
        ticket = Ticket(self, seq, position)
        self.next_seq = seq + 1
        return ticket

    async def issue(self, position: Any) -> Ticket:
        """A ticket for the next item, waiting for acknowledgements or a commit to make room."""
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
            self._wake()
        tracking = self.tracking
        acks = tracking.acks_since_commit = tracking.acks_since_commit + 1
        if acks == 1 or acks == tracking.every:
            tracking.due.set()

    def committed_up_to(self, seq: int) -> None:
        """Record that every item below *seq* is committed: the source may run further."""
        self.committed = seq
        self._wake()

    def _wake(self) -> None:
        if self.room is not None:
            self.room.set()
            self.room = None


class Tracking:
    """Every source tracker of one run, and the batched commits of their watermarks."""

    def __init__(self, run: Run, store: CheckpointStore, resume: Mapping[str, Any]) -> None:
        self.run = run
        self.store = store
        self.resume = dict(resume)
        self.sources: dict[str, SourceTracker] = {}
        self.acks_since_commit = 0
        self.every = store.every
        # Set by the first and the every-th acknowledgement since the last commit
        # began, and when every node has finished: the only things that wake commits.
        self.due = anyio.Event()

    def tracker(self, source: str, max_in_flight: int) -> SourceTracker:
        if source not in self.resume:
            logger.info(
                "no checkpoint for source %r in %s: starting from the beginning",
                source,
                str(self.store),  # now: the store may be closed when the record is formatted
            )
        tracker = self.sources[source] = SourceTracker(self, source, max_in_flight)
        return tracker

    async def commit_periodically(self) -> None:
        """Commit after ``every`` acks or ``interval`` s after the first, until the end."""
        run = self.run
        while True:
            await self.due.wait()  # the first ack since the last commit began, or the end
            if not run.all_finished and self.acks_since_commit < self.every:
                self.due = anyio.Event()
                with anyio.move_on_after(self.store.interval):
                    await self.due.wait()  # the every-th ack, or the end
            if run.all_finished:
                return
            await self.commit()

    async def commit(self) -> None:
        """Commit the watermarks that moved since the last successful commit."""
        self.due = anyio.Event()
        self.acks_since_commit = 0
        marks = [
            (t, t.lowest_unacked) for t in self.sources.values() if t.lowest_unacked > t.committed
        ]
        if not marks:
            return
        moved = {t.source: t.watermark for t, _ in marks}
        await self.store.commit(self.run.graph.name, moved)
        for tracker, seq in marks:
            tracker.committed_up_to(seq)
        logger.info("checkpoint %s: %s", self.run.graph.name, moved)
        self.run.emit(CheckpointCommitted(self.run, moved))

    async def commit_finally(self) -> None:
        """The last commit of a run, shielded so that a stop or cancellation still records it."""
        with anyio.move_on_after(FINAL_COMMIT_GRACE, shield=True) as scope:
            await self.commit()
        if scope.cancelled_caught:
            logger.warning(
                "the last checkpoint commit of %s did not finish within %gs; a restart "
                "resumes from the previous one",
                self.run.graph.name,
                FINAL_COMMIT_GRACE,
            )
