"""Checkpoints: where checkpointed sources resume after a restart, kept in a state store."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, final

from .._core._exceptions import GraphError
from .._core._validate import to_seconds
from ._open import StoreRef, UsesStore, target_repr

if TYPE_CHECKING:
    import os
    from collections.abc import AsyncIterator, Mapping
    from datetime import timedelta

    from ._protocol import StateStore

DEFAULT_STORE = "sqlite:///flowgraph-state.db"


@final
class Checkpoints(UsesStore):
    """A checkpoint store for a run: ``await graph.run(checkpoints=fg.Checkpoints(url))``.

    Before the sources start, the run takes the graph's lease in the store (a
    second run of the same graph against the same store fails at once), and
    each ``checkpoint=True`` source is handed its last committed position.
    While the run goes, the position of each source's low watermark (the
    highest item such that it and every earlier item have been fully processed
    by every sink) is committed after *every* acknowledgements or *interval*
    seconds after the first uncommitted one, whichever comes first, and once
    more when the run ends, is stopped, fails or is cancelled; an idle run does
    not wake up to commit. A process killed outright loses at most the
    uncommitted tail, which is replayed on restart: delivery is at-least-once,
    and a source never runs more than ``max_in_flight + every`` items ahead of
    its committed position (it waits for a slow commit), which bounds the replay.

    Args:
        store: a store URL (``sqlite:///path.db``, ``postgresql://...``), a file
            path, or an open :class:`StateStore`, which is then not closed here.
            One store can hold dead letters and checkpoints together.
        every: commit after this many acknowledgements.
        interval: commit at least this often (seconds) while items are acknowledged.
    """

    def __init__(
        self,
        store: str | os.PathLike[str] | StateStore = DEFAULT_STORE,
        *,
        every: int = 100,
        interval: float | timedelta = 1.0,
    ) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise GraphError(f"every must be an int >= 1 (got {every!r})")
        self.every = every
        self.interval = to_seconds("interval", interval)
        self._ref = StoreRef(store, owner="Checkpoints")

    def __repr__(self) -> str:
        store = target_repr(self._ref.target)
        return f"Checkpoints({store}, every={self.every}, interval={self.interval})"

    def __str__(self) -> str:
        return str(self._ref)

    async def load(self, graph: str) -> dict[str, Any]:
        """The committed position of every checkpointed source of *graph*."""
        async with self:
            return dict(await self.store.load_checkpoints(graph))

    async def commit(self, graph: str, positions: Mapping[str, Any]) -> None:
        """Record *positions* (source name -> position) atomically."""
        async with self:
            await self.store.commit_checkpoints(graph, positions)

    @asynccontextmanager
    async def open_lease(self, graph: str) -> AsyncIterator[None]:
        """Hold the lease of *graph* in the store for the block (a run does this).

        Raises:
            StoreError: if another run of *graph* holds it.

        Added in 0.2.
        """
        async with self, self.store.open_lease(graph):
            yield
