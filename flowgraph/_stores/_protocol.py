"""The state store protocol and the dead letter record it returns.

A store is opened from a URL with :func:`~flowgraph.open_store`. SQLite (a local
file) is the default; PostgreSQL lets several processes share state. Both
implement :class:`StateStore` with the same SQL (``_sql``) and differ only in
how they connect, create their schema and run a transaction.

Every store method runs its database work in a worker thread, one call at a
time per store, so the event loop never blocks and both asyncio and trio work.
A call cancelled while it waits for its turn does nothing; a call cancelled
once its transaction has started runs to the end, so a cancelled call has
either committed or not, never half.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, Self, TypeAlias, runtime_checkable

if TYPE_CHECKING:
    from collections.abc import Mapping
    from contextlib import AbstractAsyncContextManager
    from types import TracebackType

    from .._core._exceptions import StoreError
    from .._core._policy import Failure

JSONValue: TypeAlias = "bool | int | float | str | list[JSONValue] | dict[str, JSONValue] | None"
"""A value that round-trips through JSON unchanged: a checkpoint position, a JSON item."""

Serializer: TypeAlias = Literal["json", "pickle"]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An item that a node gave up on, as kept in a state store.

    Attributes:
        id: the store's identifier, increasing in insertion order.
        graph: name of the graph the node belongs to.
        node: name of the node that failed.
        run_id: identifier of the run it failed in.
        item: the input item, deserialised.
        error_type: qualified name of the exception class (``"ValueError"``,
            ``"httpx.ReadTimeout"``); builtins carry no module prefix.
        message: ``str()`` of the exception.
        traceback: the formatted traceback, empty if the error had none.
        attempts: how many times the node was called on the item.
        time: when it failed, wall-clock seconds since the epoch.
        serializer: how the item was stored, ``"json"`` or ``"pickle"``.
    """

    id: int
    graph: str
    node: str
    run_id: str
    item: Any
    error_type: str
    message: str
    traceback: str
    attempts: int
    time: float
    serializer: Serializer


@runtime_checkable
class StateStore(Protocol):
    """Durable dead letters and checkpoints, shared by the runs of one or many graphs.

    Every method is async and cancellation-safe: a cancelled call has either
    committed entirely or not at all. Database failures raise
    :class:`~flowgraph.StoreError`; calls on a closed store raise it too.
    """

    async def add_dead_letter(self, failure: Failure, *, serializer: Serializer = "json") -> int:
        """Store *failure* as a dead letter and return its id.

        ``"json"`` keeps items readable by any tool but refuses values JSON
        would alter (tuples, non-string keys, NaN); ``"pickle"`` keeps any
        picklable object, and reading it back runs unpickling code, so only
        read pickled dead letters from a store you trust.

        Raises:
            StoreError: if the item cannot be serialised with *serializer* (the
                message names the node and the item's type), or the write failed.
            ValueError: if *serializer* is not ``"json"`` or ``"pickle"``.
        """
        ...

    async def list_dead_letters(
        self,
        *,
        graph: str | None = None,
        node: str | None = None,
        run_id: str | None = None,
        error_type: str | None = None,
        limit: int | None = None,
        errors: list[StoreError] | None = None,
    ) -> list[DeadLetter]:
        """Return the dead letters matching every given filter, oldest first, at most *limit*.

        A corrupt row (an item that can no longer be deserialised, a column of
        the wrong type) raises ``StoreError`` naming the store and the row; if
        *errors* is a list, the error is appended to it instead and the other
        rows are returned.

        Raises:
            StoreError: if the read failed, or a row is corrupt and *errors* is ``None``.
        """
        ...

    async def get_dead_letter(self, id: int) -> DeadLetter | None:
        """Return the dead letter *id*, or ``None`` if there is none."""
        ...

    async def remove_dead_letter(self, id: int) -> bool:
        """Delete the dead letter *id*; return whether it existed."""
        ...

    async def purge_dead_letters(
        self,
        *,
        graph: str | None = None,
        node: str | None = None,
        run_id: str | None = None,
        error_type: str | None = None,
    ) -> int:
        """Delete the dead letters matching every given filter (all if none); return how many."""
        ...

    async def count_dead_letters(
        self,
        *,
        graph: str | None = None,
        node: str | None = None,
        run_id: str | None = None,
        error_type: str | None = None,
    ) -> int:
        """Return how many dead letters match every given filter."""
        ...

    async def load_checkpoints(self, graph: str) -> dict[str, JSONValue]:
        """Return the committed position of every source of *graph* (empty if none).

        Raises:
            StoreError: if the read failed, or a stored position is not valid JSON
                (the message names the store, the graph and the source).
        """
        ...

    async def load_checkpoint(self, graph: str, source: str) -> JSONValue | None:
        """Return the committed position of *source* in *graph*, or ``None`` if there is none."""
        ...

    async def commit_checkpoints(self, graph: str, positions: Mapping[str, JSONValue]) -> None:
        """Record the position of each source in *positions*, all in one transaction.

        Either every position is stored or, on error or cancellation, none is.
        Sources not named keep their previous position.

        Raises:
            StoreError: if a position does not round-trip through JSON, or the write failed.
        """
        ...

    def open_lease(self, graph: str) -> AbstractAsyncContextManager[None]:
        """Hold the lease of *graph* in this store for the block: one run per graph per store.

        A run with checkpoints holds it so that a second run of the same graph
        against the same store fails at once, before it does anything. The
        lease is released when the block exits, and also when the process
        holding it dies, however (``kill -9`` included), so a restart after a
        crash gets it.

        Raises:
            StoreError: if another run holds it; the message names the holder.

        Added in 0.2.
        """
        ...

    async def aclose(self) -> None:
        """Close the store; later calls raise ``StoreError``. Closing twice does nothing."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
