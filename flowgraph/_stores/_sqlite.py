"""The default state store: one SQLite file.

The file is created on demand, in WAL mode with ``synchronous=FULL``, so a
committed transaction survives a crash, ``kill -9`` or power loss, and readers
never wait for a writer. Writers take the file's write lock up front
(``BEGIN IMMEDIATE``) and wait up to *timeout* seconds for it, so several
stores and several processes can share one file safely.

The schema version is SQLite's ``user_version``; a file written by a newer
flowgraph is refused rather than misread.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import anyio

from .._core._exceptions import StoreError
from ._connect import connect_sqlite
from ._sql import SCHEMA_VERSION, SQLStateStore, newer_schema_error

if TYPE_CHECKING:
    import os
    from collections.abc import Callable

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


class SQLiteStore(SQLStateStore):
    """A :class:`~flowgraph.StateStore` kept in one SQLite file.

    Open it with :func:`~flowgraph.open_store` (``sqlite:///path.db`` or a bare
    path) or ``await SQLiteStore.connect(path)``. Calls on one store run one at
    a time in a worker thread; stores in other tasks, threads or processes
    wait for the file's write lock for up to *timeout* seconds, then fail with
    ``StoreError``.
    """

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        super().__init__()
        self._connection = connection
        self.path = path
        """The absolute path of the database file."""

    @classmethod
    async def connect(cls, path: str | os.PathLike[str], *, timeout: float = 30.0) -> SQLiteStore:
        """Open (creating if needed) the SQLite store at *path*.

        The file is opened and its schema created in one worker thread that is
        not abandoned on cancellation, so a cancelled open leaves either no
        tables or all of them.

        Raises:
            StoreError: if the directory does not exist, the file is not a
                SQLite database, it was written by a newer flowgraph, or the
                write lock stayed busy for *timeout* seconds.
        """
        connection, target = await anyio.to_thread.run_sync(_open, path, timeout)
        return cls(connection, target)

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
            raise StoreError(f"SQLite store {self.path}: {exc}") from exc

    def _close_sync(self) -> None:
        self._connection.close()


def _open(file: str | os.PathLike[str], timeout: float) -> tuple[sqlite3.Connection, Path]:
    path = Path(file).absolute()
    if not path.parent.is_dir():
        raise StoreError(
            f"cannot open the SQLite store {path}: directory {path.parent} does not exist"
        )
    try:
        connection = connect_sqlite(path, timeout=timeout)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open the SQLite store {path}: {exc}") from exc
    try:
        connection.execute("BEGIN IMMEDIATE")
        try:
            (version,) = connection.execute("PRAGMA user_version").fetchone()
            if version > SCHEMA_VERSION:
                raise newer_schema_error(f"the SQLite store {path}", version)
            if version < SCHEMA_VERSION:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        connection.execute(statement)
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
    except sqlite3.Error as exc:
        connection.close()
        raise StoreError(f"cannot open the SQLite store {path}: {exc}") from exc
    except BaseException:
        connection.close()
        raise
    return connection, path
