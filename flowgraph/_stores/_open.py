"""Open a state store from its URL, and share one open store between its users."""

from __future__ import annotations

import os
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Literal, Self

from .._core._exceptions import GraphError
from ._protocol import StateStore
from ._retry import DEFAULT_RETRY_FOR, check_retry_for

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from datetime import timedelta
    from types import TracebackType

_SCHEMES = "sqlite:///relative/path.db, sqlite:////absolute/path.db, a file path, postgresql://..."


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


def target_repr(store: str | os.PathLike[str] | StateStore) -> str:
    """A store as a repr names it: the URL or path, or the open store's class name."""
    return repr(store if isinstance(store, str) else type(store).__name__)


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

    def __str__(self) -> str:
        """Which store this is, for messages: the open store's name, else the URL or path."""
        target = self._store or self.target
        if isinstance(target, StateStore):
            return str(target)
        return f"the state store {target if isinstance(target, str) else os.fspath(target)!r}"

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
async def open_store(
    url: str | os.PathLike[str],
    *,
    create: bool = True,
    read_only: bool = False,
    retry_for: float | timedelta = DEFAULT_RETRY_FOR,
) -> AsyncIterator[StateStore]:
    """Open the state store at *url* and close it on exit.

    Accepted forms: ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``
    or a bare file path (SQLite, created on demand; its directory must exist),
    and ``postgresql://...`` or ``postgres://...`` (PostgreSQL, needs the
    ``postgres`` extra; tables are created on demand). The store is closed when
    the block exits, also on error or cancellation.

    A store never passes off something else as itself: an empty file, another
    application's database or a store of a newer flowgraph is refused with a
    ``StoreError`` saying so, and every value read back is checked.

    Args:
        url: where the store is.
        create: create the file and tables if they are not there. With
            ``create=False`` a store that does not exist yet is an error, so a
            mistyped path or URL never becomes a new, empty store.
        read_only: never write (implies ``create=False``): for tools that only
            look, such as ``flowgraph dlq list``.
        retry_for: seconds a call failing with a transient error (a SQLite file
            locked by another writer, a lost PostgreSQL connection) is retried,
            with exponential backoff, before it raises ``StoreError``; 0 never retries.

    Raises:
        ValueError: if the URL's scheme or shape is not one of the above.
        GraphError: if *retry_for* is negative or not finite (also a ValueError).
        ImportError: if a PostgreSQL URL is given and psycopg is not installed.
        StoreError: if the store cannot be opened, is not a flowgraph store, or
            was written by a newer flowgraph.

    Changed in 0.2: *create*, *read_only* and *retry_for*.
    """
    kind, target = parse_store_url(url)
    retry_for = check_retry_for(retry_for)
    store: StateStore
    if kind == "postgres":
        try:
            from ._postgres import PostgresStore
        except ImportError as exc:
            raise ImportError(
                "PostgreSQL state stores need psycopg 3: pip install 'flowgraph[postgres]'"
            ) from exc
        store = await PostgresStore.connect(
            target, create=create, read_only=read_only, retry_for=retry_for
        )
    else:
        from ._sqlite import SQLiteStore

        store = await SQLiteStore.connect(
            target, create=create, read_only=read_only, retry_for=retry_for
        )
    async with store:
        yield store
