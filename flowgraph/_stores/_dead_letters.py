"""Dead letters: keep the items a node gave up on, list them, and replay them once fixed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, final

from .._core._exceptions import GraphError, NodeError
from ._open import StoreRef, UsesStore, target_repr

if TYPE_CHECKING:
    import os

    from .._core._graph import Graph
    from .._core._policy import Failure
    from ._protocol import DeadLetter, Serializer, StateStore

DEFAULT_STORE = "sqlite:///flowgraph-state.db"


@final
@dataclass(frozen=True, slots=True)
class ReplayResult:
    """What a replay did.

    Attributes:
        replayed: how many dead letters were fed back in.
        succeeded: ids of those that went through and were removed from the store.
        failed: ids of those that failed again and stay in the store.
    """

    replayed: int
    succeeded: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)


@final
class DeadLetters(UsesStore):
    """A dead-letter queue on a state store, for nodes declared with ``on_error="dead_letter"``.

    Pass it to a run: ``await graph.run(dead_letters=fg.DeadLetters("sqlite:///state.db"))``.
    The run opens the store for its duration (or use ``async with`` to keep it
    open across runs). Each failed item is stored with its node, error type,
    message, traceback, attempt count, run id and time; then the run goes on.

    Items are serialised with JSON by default, or with pickle
    (``serializer="pickle"``) for items JSON cannot represent exactly. An item
    that cannot be serialised fails the run with a ``StoreError`` saying so:
    it is never dropped silently.

    Args:
        store: a store URL (``sqlite:///path.db``, ``postgresql://...``), a file
            path, or an open :class:`StateStore`, which is then not closed here.
        serializer: ``"json"`` or ``"pickle"``.
    """

    def __init__(
        self,
        store: str | os.PathLike[str] | StateStore = DEFAULT_STORE,
        *,
        serializer: Serializer = "json",
    ) -> None:
        if serializer not in ("json", "pickle"):
            raise GraphError(f"serializer must be 'json' or 'pickle' (got {serializer!r})")
        self.serializer: Serializer = serializer
        self._ref = StoreRef(store, owner="DeadLetters")

    def __repr__(self) -> str:
        return f"DeadLetters({target_repr(self._ref.target)}, serializer={self.serializer!r})"

    async def handle(self, failure: Failure) -> None:
        """Store a failed item (the ``FailureHandler`` protocol)."""
        await self.store.add_dead_letter(failure, serializer=self.serializer)

    async def list(
        self,
        *,
        graph: str | None = None,
        node: str | None = None,
        run_id: str | None = None,
        error_type: str | None = None,
        limit: int | None = None,
    ) -> list[DeadLetter]:
        """The stored dead letters matching every filter given, oldest first."""
        async with self:
            return await self.store.list_dead_letters(
                graph=graph, node=node, run_id=run_id, error_type=error_type, limit=limit
            )

    async def purge(
        self,
        *,
        graph: str | None = None,
        node: str | None = None,
        run_id: str | None = None,
        error_type: str | None = None,
    ) -> int:
        """Remove the dead letters matching every filter given; return how many."""
        async with self:
            return await self.store.purge_dead_letters(
                graph=graph, node=node, run_id=run_id, error_type=error_type
            )

    async def replay(
        self,
        graph: Graph,
        *,
        node: str | None = None,
        run_id: str | None = None,
        error_type: str | None = None,
        limit: int | None = None,
    ) -> ReplayResult:
        """Feed dead letters of *graph* back into their node, removing each one that succeeds.

        Each item runs through its node and everything downstream of it, one item
        per run, so success means every sink it reaches took it. A letter is
        removed only after that; if its node fails again the letter stays (with
        no duplicate), and downstream nodes apply their own ``on_error`` policies.
        Fix the cause first: replay calls the node functions of *graph* as they
        are now.

        Raises:
            GraphError: if a letter names a node that *graph* does not have.
        """
        async with self:
            letters = await self.store.list_dead_letters(
                graph=graph.name, node=node, run_id=run_id, error_type=error_type, limit=limit
            )
            result = ReplayResult(replayed=len(letters))
            for letter in letters:
                if letter.node not in graph.nodes:
                    raise GraphError(
                        f"dead letter {letter.id} is from node {letter.node!r}, which graph "
                        f"{graph.name!r} does not have"
                    )
                once = graph.feed(letter.node, [letter.item], on_error="raise")
                try:
                    await once.run(dead_letters=self)
                except NodeError:
                    result.failed.append(letter.id)
                else:
                    await self.store.remove_dead_letter(letter.id)
                    result.succeeded.append(letter.id)
            return result
