"""State stores: where dead letters and source checkpoints outlive a run.

A store is opened from a URL with :func:`open_store`. SQLite (a local file) is
the default; PostgreSQL lets several processes share state. Both implement
:class:`StateStore` with the same SQL, written once in ``_sqlstore.SQLStateStore``,
and differ only in how they connect, create their schema and run a transaction.

Every store method runs its database work in a worker thread, one call at a
time per store, so the event loop never blocks and both asyncio and trio work.
A call cancelled while it waits for its turn does nothing; a call cancelled
once its transaction has started runs to the end, so a cancelled call has
either committed or not, never half.
"""

from __future__ import annotations

import json
import os
import pickle
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import (
    TYPE_CHECKING,
    Any,
    Literal,
    Protocol,
    Self,
    TypeAlias,
    runtime_checkable,
)

from ._core._exceptions import GraphError, StoreError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping
    from types import TracebackType

    from ._core._policy import Failure

JSONValue: TypeAlias = "bool | int | float | str | list[JSONValue] | dict[str, JSONValue] | None"
"""A value that round-trips through JSON unchanged: a checkpoint position, a JSON item."""

Serializer: TypeAlias = Literal["json", "pickle"]

SCHEMA_VERSION = 1
"""The version of the tables this flowgraph writes; a store refuses a newer one."""

_SERIALIZERS = ("json", "pickle")
_SCHEMES = "sqlite:///relative/path.db, sqlite:////absolute/path.db, a file path, postgresql://..."


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
    ) -> list[DeadLetter]:
        """Return the dead letters matching every given filter, oldest first, at most *limit*.

        Raises:
            StoreError: if the read failed or an item can no longer be deserialised.
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
        """Return the committed position of every source of *graph* (empty if none)."""
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


def qualified_name(cls: type) -> str:
    """Return ``module.QualName`` for *cls*, or just ``QualName`` for a builtin."""
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def _to_json(value: object) -> str:
    """Encode *value* as JSON, refusing anything that would not decode back equal to it."""
    text = json.dumps(value, allow_nan=False, separators=(",", ":"))
    decoded = json.loads(text)
    if decoded != value or type(decoded) is not type(value):
        raise ValueError(
            "JSON would not give it back unchanged "
            "(tuples become lists, non-string keys become strings)"
        )
    return text


def serialize_item(node: str, item: object, serializer: Serializer) -> bytes:
    """Serialise a dead letter's *item* with *serializer*.

    Raises:
        StoreError: if the item cannot be serialised; the message names *node*,
            the item's type and the remedy.
        ValueError: if *serializer* is unknown.
    """
    if serializer not in _SERIALIZERS:
        raise ValueError(f"serializer must be 'json' or 'pickle' (got {serializer!r})")
    kind = qualified_name(type(item))
    if serializer == "pickle":
        try:
            return pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise StoreError(
                f"cannot dead-letter the item of type {kind} from node {node!r}: "
                f"it cannot be pickled ({type(exc).__name__}: {exc})"
            ) from exc
    try:
        return _to_json(item).encode()
    except (TypeError, ValueError, RecursionError) as exc:
        raise StoreError(
            f"cannot dead-letter the item of type {kind} from node {node!r} as JSON: {exc}; "
            "pass serializer='pickle' to store any picklable object"
        ) from exc


def deserialize_item(id: int, payload: bytes, serializer: str) -> Any:
    """Rebuild a dead letter's item; raise ``StoreError`` naming the dead letter if it cannot."""
    try:
        if serializer == "pickle":
            return pickle.loads(payload)
        if serializer == "json":
            return json.loads(payload)
    except Exception as exc:
        raise StoreError(
            f"cannot deserialise the item of dead letter {id} ({serializer}): "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    raise StoreError(f"dead letter {id} has an unknown serializer {serializer!r}")


def encode_position(graph: str, source: str, position: object) -> str:
    """Encode a checkpoint position as JSON text, or raise ``StoreError`` naming the source."""
    try:
        return _to_json(position)
    except (TypeError, ValueError, RecursionError) as exc:
        raise StoreError(
            f"checkpoint position of source {source!r} in graph {graph!r} must be a JSON value "
            f"(got {qualified_name(type(position))}): {exc}"
        ) from exc


def newer_schema_error(where: str, found: int) -> StoreError:
    """Return the error for a store written by a newer flowgraph than this one."""
    return StoreError(
        f"{where} has schema version {found}, but this flowgraph supports only up to "
        f"{SCHEMA_VERSION}; upgrade flowgraph to use it"
    )


def parse_store_url(url: str | os.PathLike[str]) -> tuple[Literal["sqlite", "postgres"], str]:
    """Say which kind of store *url* names and where, without opening anything.

    Returns ``("sqlite", path)`` for ``sqlite:///...`` URLs and bare paths, and
    ``("postgres", url)`` for ``postgresql://...`` and ``postgres://...``, so a
    caller can check a URL before it does any work (the CLI does, to make a typo
    a usage error). :func:`open_store` accepts exactly the URLs this accepts.

    Raises:
        ValueError: if the URL is empty, or its scheme or shape is not one of the above.
    """
    if not isinstance(url, str):
        return "sqlite", os.fspath(url)
    scheme, sep, rest = url.partition("://")
    if not sep:
        if not url:
            raise ValueError(f"empty state store URL; use one of: {_SCHEMES}")
        return "sqlite", url
    scheme = scheme.lower()
    if scheme in ("postgresql", "postgres"):
        return "postgres", url
    if scheme == "sqlite":
        if not rest.startswith("/") or rest == "/":
            raise ValueError(
                "a SQLite store URL needs a path after three slashes: "
                "sqlite:///relative/path.db or sqlite:////absolute/path.db"
            )
        return "sqlite", rest[1:]
    raise ValueError(f"unsupported state store URL scheme {scheme!r}; use one of: {_SCHEMES}")


class StoreRef:
    """A state store named by URL or path, or given open, opened on first use.

    Nested opens share one store, closed when the outermost closes, so a store
    can be opened around several runs and by each run. A store given open is
    used as it is and never closed here.
    """

    def __init__(self, store: str | os.PathLike[str] | StateStore, *, owner: str) -> None:
        if not isinstance(store, str | os.PathLike | StateStore):
            raise GraphError(f"store must be a URL, a path or a StateStore (got {store!r})")
        self.target = store
        self.owner = owner
        self._store: StateStore | None = store if isinstance(store, StateStore) else None
        self._exits: AsyncExitStack | None = None
        self._depth = 0

    def describe(self) -> str:
        """The target as a repr: the URL or path, or the open store's class name."""
        target = self.target
        return repr(target if isinstance(target, str) else type(target).__name__)

    async def open(self) -> StateStore:
        if self._depth == 0 and not isinstance(self.target, StateStore):
            exits = AsyncExitStack()
            self._store = await exits.enter_async_context(open_store(self.target))
            self._exits = exits
        self._depth += 1
        return self.store

    async def close(self) -> None:
        self._depth -= 1
        if self._depth == 0 and self._exits is not None:
            exits, self._exits, self._store = self._exits, None, None
            await exits.aclose()

    @property
    def store(self) -> StateStore:
        """The open store; raises ``RuntimeError`` when it is not open."""
        if self._store is None:
            raise RuntimeError(f"{self.owner} is not open: use `async with` or pass it to a run")
        return self._store


class UsesStore:
    """Base of the classes that keep their state in a :class:`StoreRef`: ``async with`` opens it."""

    _ref: StoreRef

    async def __aenter__(self) -> Self:
        await self._ref.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._ref.close()

    @property
    def store(self) -> StateStore:
        """The open store; raises ``RuntimeError`` outside ``async with`` or a run."""
        return self._ref.store


@asynccontextmanager
async def open_store(url: str | os.PathLike[str]) -> AsyncIterator[StateStore]:
    """Open the state store at *url* and close it on exit.

    Accepted forms: ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``
    or a bare file path (SQLite, created on demand; its directory must exist),
    and ``postgresql://...`` or ``postgres://...`` (PostgreSQL, needs the
    ``postgres`` extra; tables are created on demand). The store is closed when
    the block exits, also on error or cancellation.

    Raises:
        ValueError: if the URL's scheme or shape is not one of the above.
        ImportError: if a PostgreSQL URL is given and psycopg is not installed.
        StoreError: if the store cannot be opened, or was written by a newer flowgraph.
    """
    kind, target = parse_store_url(url)
    store: StateStore
    if kind == "postgres":
        try:
            from ._postgres import PostgresStore
        except ImportError as exc:
            raise ImportError(
                "PostgreSQL state stores need psycopg 3: pip install 'flowgraph[postgres]'"
            ) from exc
        store = await PostgresStore.connect(target)
    else:
        from ._sqlite import SQLiteStore

        store = await SQLiteStore.connect(target)
    async with store:
        yield store
