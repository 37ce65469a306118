"""The default state store: one SQLite file.

The file is created on demand, in WAL mode with ``synchronous=FULL``, so a
committed transaction survives a crash, ``kill -9`` or power loss, and readers
never wait for a writer. A new file is built aside and linked into place whole,
so no process ever sees a store half made. Writers take the file's write lock
up front (``BEGIN IMMEDIATE``) and wait up to *timeout* seconds for it, so
several stores and several processes can share one file safely; a lock still
busy after that is retried (``retry_for``).

The schema version is SQLite's ``user_version``. A store never mistakes a file
for what it is not: a file written by a newer flowgraph is refused rather than
misread, and an empty (0-byte) file or a database whose ``user_version`` was
set by another application is "not a flowgraph store", never silently made
into a fresh one. A database with tables of its own and ``user_version`` 0
(your data's database) may hold the flowgraph tables beside them.

A graph's lease (:meth:`SQLiteStore.open_lease`) is an operating-system lock on
a sidecar file, ``<file>-lease-<graph>``, released by the kernel however its
holder exits.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import sqlite3
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from .._core._exceptions import StoreError
from .._core._threads import run_sync_in_thread
from ._connect import connect_sqlite, enter_wal, sqlite_busy
from ._filelock import FileLock
from ._retry import DEFAULT_RETRY_FOR, Transient
from ._sql import (
    SCHEMA_VERSION,
    SQLStateStore,
    lease_held_error,
    newer_schema_error,
    not_a_store_error,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from datetime import timedelta

    from ._sql import Cursor

_T = TypeVar("_T")

# Invariant: every statement here is constant text; values only travel as parameters.
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS flowgraph_dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    graph TEXT NOT NULL,
    node TEXT NOT NULL,
    run_id TEXT NOT NULL,
    item BLOB NOT NULL,
    serializer TEXT NOT NULL,
    error_type TEXT NOT NULL,
    message TEXT NOT NULL,
    traceback TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    failed_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS flowgraph_dead_letters_graph_node
    ON flowgraph_dead_letters (graph, node);
CREATE TABLE IF NOT EXISTS flowgraph_checkpoints (
    graph TEXT NOT NULL,
    source TEXT NOT NULL,
    position TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (graph, source)
);
CREATE TABLE IF NOT EXISTS flowgraph_quotas (
    name TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    updated_at REAL NOT NULL
);
PRAGMA user_version = {int(SCHEMA_VERSION)};
"""
_TABLES = frozenset({"flowgraph_dead_letters", "flowgraph_checkpoints"})
DEFAULT_TIMEOUT = 5.0
"""Seconds one attempt waits for the file's write lock before it is retried."""


class SQLiteStore(SQLStateStore):
    """A :class:`~flowgraph.StateStore` kept in one SQLite file.

    Open it with :func:`~flowgraph.open_store` (``sqlite:///path.db`` or a bare
    path) or ``await SQLiteStore.connect(path)``. Calls on one store run one at
    a time in a worker thread; stores in other tasks, threads or processes
    wait for the file's write lock for up to *timeout* seconds per attempt, and
    a lock still busy is retried for up to *retry_for* seconds, then fails with
    ``StoreError``.
    """

    def __init__(
        self,
        connection: sqlite3.Connection,
        path: Path,
        *,
        retry_for: float | timedelta = DEFAULT_RETRY_FOR,
        read_only: bool = False,
    ) -> None:
        super().__init__(f"SQLite store {path}", retry_for=retry_for, read_only=read_only)
        self._connection = connection
        self.path = path
        """The absolute path of the database file."""

    @classmethod
    async def connect(
        cls,
        path: str | os.PathLike[str],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        create: bool = True,
        read_only: bool = False,
        retry_for: float | timedelta = DEFAULT_RETRY_FOR,
    ) -> SQLiteStore:
        """Open (creating if needed and *create*) the SQLite store at *path*.

        The file is opened and its schema created in one worker thread that is
        not abandoned on cancellation, so a cancelled open leaves either no
        tables or all of them. With ``create=False`` the file must already be a
        flowgraph store; with ``read_only=True`` nothing is ever written to it.

        Raises:
            StoreError: if the directory or (without *create*) the file does not
                exist, the file is not a flowgraph store (empty, not SQLite, or
                another application's database), it was written by a newer
                flowgraph, or the write lock stayed busy for *timeout* seconds.
        """
        opener = functools.partial(_open, path, timeout, create=create, read_only=read_only)
        connection, target = await run_sync_in_thread(opener)
        return cls(connection, target, retry_for=retry_for, read_only=read_only)

    @asynccontextmanager
    async def open_lease(self, graph: str) -> AsyncIterator[None]:
        """Hold the lease of *graph* on this file: a lock on ``<file>-lease-<graph>``.

        Raises:
            StoreError: at once if another run (in this process or another)
                holds it, naming the holder's process and host; or if the
                store is read-only or the lock file cannot be written.
        """
        if self.read_only:
            raise StoreError(
                f"{self.name} is open read-only; taking the lease of graph {graph!r} "
                "needs a writable store"
            )
        lock = FileLock(self.path.with_name(f"{self.path.name}-lease-{_slug(graph)}"))
        try:
            holder = await run_sync_in_thread(lock.acquire)
        except OSError as exc:
            raise StoreError(f"{self.name}: cannot take the lease of {graph!r}: {exc}") from exc
        if holder is not None:
            raise lease_held_error(self.name, graph, holder)
        try:
            yield
        finally:
            lock.release()

    def _transact(self, work: Callable[[Cursor], _T], *, write: bool) -> _T:
        connection = self._connection
        try:
            if not write:
                return work(connection.cursor())
            connection.execute("BEGIN IMMEDIATE")
            try:
                result = work(connection.cursor())
                connection.execute("COMMIT")
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise
            return result
        except sqlite3.Error as exc:
            if sqlite_busy(exc):
                raise Transient(str(exc)) from exc
            raise StoreError(f"{self.name}: {exc}") from exc

    def _close_sync(self) -> None:
        self._connection.close()


def _slug(graph: str) -> str:
    """A file-name part for *graph*: the name itself when plainly safe, else a digest."""
    if re.fullmatch(r"[a-z0-9_][a-z0-9_-]{0,63}", graph):
        return graph
    return hashlib.sha256(graph.encode()).hexdigest()[:16]


def _open(
    file: str | os.PathLike[str], timeout: float, *, create: bool = True, read_only: bool = False
) -> tuple[sqlite3.Connection, Path]:
    path = Path(file).absolute()
    if not path.parent.is_dir():
        raise StoreError(
            f"cannot open the SQLite store {path}: directory {path.parent} does not exist"
        )
    create = create and not read_only
    if not path.exists():
        if not create:
            raise StoreError(f"cannot open the SQLite store {path}: no such file")
        _create(path)
    if path.is_file() and path.stat().st_size == 0:
        raise not_a_store_error(
            f"the SQLite store {path}",
            "the file is empty (0 bytes); if it was truncated, its checkpoints and dead "
            "letters are gone: delete it to start afresh",
        )
    try:
        connection = connect_sqlite(path, timeout=timeout, read_only=read_only, wal=False)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open the SQLite store {path}: {exc}") from exc
    try:
        connection.execute("BEGIN IMMEDIATE" if create else "BEGIN")
        try:
            _check_schema(connection, path, create=create)
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        if create:
            enter_wal(connection, timeout)
    except sqlite3.Error as exc:
        connection.close()
        raise StoreError(f"cannot open the SQLite store {path}: {exc}") from exc
    except BaseException:
        connection.close()
        raise
    return connection, path


def _check_schema(connection: sqlite3.Connection, path: Path, *, create: bool) -> None:
    """Refuse what is not a flowgraph store, or a newer one; create the tables if *create*."""
    where = f"the SQLite store {path}"
    (version,) = connection.execute("PRAGMA user_version").fetchone()
    tables = {
        name
        for (name,) in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'flowgraph%'"
        )
    }
    if version > SCHEMA_VERSION and tables:
        raise newer_schema_error(where, version)
    if version and not tables >= _TABLES:
        raise not_a_store_error(
            where,
            f"its user_version is {version}, set by another application, and it has no "
            "flowgraph tables",
        )
    if not create:
        if not tables >= _TABLES:
            raise not_a_store_error(where, "it has no flowgraph tables")
        return
    if version < SCHEMA_VERSION:
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                connection.execute(statement)


def _create(path: Path) -> None:
    """Create the store at *path* whole: built aside, then linked into place.

    A process that opens *path* never finds a file half made, so an empty file
    there is always one that something else emptied. If another process links
    its own first, that one is used. Where the file system cannot link, the
    store is created in place.
    """
    aside = path.with_name(f".{path.name}.{uuid.uuid4().hex}.new")
    try:
        connection = sqlite3.connect(aside, isolation_level=None)
        try:
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("PRAGMA synchronous = FULL")
            connection.execute("BEGIN IMMEDIATE")
            _check_schema(connection, aside, create=True)
            connection.execute("COMMIT")
        finally:
            connection.close()  # checkpoints the WAL into the file and removes it
        try:
            os.link(aside, path)
        except FileExistsError:
            pass
        except OSError:
            return  # no hard links here: sqlite3.connect creates the file in place
    except sqlite3.Error as exc:
        raise StoreError(f"cannot create the SQLite store {path}: {exc}") from exc
    finally:
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{aside}{suffix}").unlink(missing_ok=True)
