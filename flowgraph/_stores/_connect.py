"""The one place that opens database connections, for the state stores and the sinks alike.

SQLite: autocommit (transactions are explicit), WAL mode so readers never wait
for a writer, ``synchronous=FULL`` so a committed transaction survives a crash
or power loss, and a busy timeout so writers in other threads or processes wait
for the write lock instead of failing at once. PostgreSQL: autocommit (callers
open transactions explicitly) and a connect timeout unless the URL sets one.

Both connections are used from worker threads, one thread at a time: the sync
drivers, because psycopg's async API runs on asyncio only.
"""

from __future__ import annotations

import os
import sqlite3
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

if TYPE_CHECKING:
    import psycopg

SQLITE_BUSY_TIMEOUT = 30.0
"""Seconds a SQLite writer waits for another connection's write lock."""

POSTGRES_CONNECT_TIMEOUT = 10
"""Seconds connecting to PostgreSQL may take, unless the URL sets ``connect_timeout``."""


def connect_sqlite(
    path: str | os.PathLike[str],
    *,
    timeout: float = SQLITE_BUSY_TIMEOUT,
    read_only: bool = False,
    wal: bool = True,
) -> sqlite3.Connection:
    """Open the SQLite file at *path* (created if missing) in WAL mode with ``synchronous=FULL``.

    With *read_only*, the file must exist and is opened for reading only (nothing
    is created, the journal mode is left as it is). With ``wal=False`` the file's
    journal mode is left as it is (a store checks a file is its own before it
    changes anything).

    Raises:
        sqlite3.Error: if the file cannot be opened or is not a database; the
            connection is closed then.
    """
    if read_only:
        uri = f"file:{quote(os.fspath(path))}?mode=ro"
        return sqlite3.connect(
            uri, uri=True, timeout=timeout, isolation_level=None, check_same_thread=False
        )
    connection = sqlite3.connect(
        path, timeout=timeout, isolation_level=None, check_same_thread=False
    )
    try:
        if wal:
            enter_wal(connection, timeout)
        connection.execute("PRAGMA synchronous = FULL")
    except BaseException:
        connection.close()
        raise
    return connection


_BUSY = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})


def sqlite_busy(exc: sqlite3.Error) -> bool:
    """Whether *exc* says another connection holds a lock (extended codes included)."""
    return getattr(exc, "sqlite_errorcode", 0) & 0xFF in _BUSY


def enter_wal(connection: sqlite3.Connection, timeout: float) -> None:
    """Switch to WAL mode, waiting up to *timeout* seconds for other connections.

    SQLite does not call the busy handler while it changes the journal mode, so
    several connections opening a new file at once would fail with "database is
    locked" at once; this waits for them as the busy timeout waits for writers.
    """
    deadline = time.monotonic() + timeout
    pause = 0.001
    while True:
        try:
            connection.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if not sqlite_busy(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


def connect_postgres(url: str) -> psycopg.Connection[Any]:
    """Connect to the PostgreSQL database at *url* in autocommit mode.

    Unless the URL sets ``connect_timeout``, connecting gives up after 10 s.

    Raises:
        ImportError: if psycopg is not installed (the caller names its extra).
        psycopg.Error: if the server cannot be reached or refuses the connection.
    """
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    if "connect_timeout" in conninfo_to_dict(url):
        return psycopg.connect(url, autocommit=True)
    return psycopg.connect(url, autocommit=True, connect_timeout=POSTGRES_CONNECT_TIMEOUT)
