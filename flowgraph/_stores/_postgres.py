"""A state store in PostgreSQL, for state shared by several processes or machines.

It uses psycopg 3's *sync* API in worker threads, because psycopg's async API
runs on asyncio only and flowgraph must also run on trio. Its tables
(``flowgraph_dead_letters``, ``flowgraph_checkpoints``, ``flowgraph_quotas``,
``flowgraph_schema``) are created on demand in the first schema of the connection's
``search_path`` (choose one with ``?options=-csearch_path%3Dmyschema`` in the URL). Creation
runs under a transaction-scoped advisory lock, so processes starting together
do not race, and checkpoints are upserts (``INSERT ... ON CONFLICT``), so
processes committing together do not conflict.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import psycopg

from .._core._exceptions import StoreError
from ._connect import connect_postgres
from ._sql import SCHEMA_VERSION, SQLStateStore, newer_schema_error

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from ._sql import Cursor

_T = TypeVar("_T")

_SCHEMA_LOCK = 0x666C6F77_67726170  # "flowgrap": key of the advisory lock guarding creation

# Invariant: every statement here is constant text; values only travel as parameters.
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS flowgraph_dead_letters (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        graph TEXT NOT NULL,
        node TEXT NOT NULL,
        run_id TEXT NOT NULL,
        item BYTEA NOT NULL,
        serializer TEXT NOT NULL,
        error_type TEXT NOT NULL,
        message TEXT NOT NULL,
        traceback TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        failed_at DOUBLE PRECISION NOT NULL
    )""",
    """CREATE INDEX IF NOT EXISTS flowgraph_dead_letters_graph_node
        ON flowgraph_dead_letters (graph, node)""",
    """CREATE TABLE IF NOT EXISTS flowgraph_checkpoints (
        graph TEXT NOT NULL,
        source TEXT NOT NULL,
        position TEXT NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (graph, source)
    )""",
    """CREATE TABLE IF NOT EXISTS flowgraph_quotas (
        name TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL
    )""",
    "CREATE TABLE IF NOT EXISTS flowgraph_schema (version INTEGER NOT NULL)",
)


class _Cursor:
    """Adapts a psycopg cursor to the shared SQL, whose parameters are marked ``?``."""

    def __init__(self, cursor: psycopg.Cursor[Any]) -> None:
        self._cursor = cursor

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    def execute(self, sql: str, params: Sequence[Any] = (), /) -> _Cursor:
        # Invariant: the shared SQL contains no literal "?" or "%".
        self._cursor.execute(sql.replace("?", "%s"), params)
        return self

    def fetchone(self) -> Any:
        return self._cursor.fetchone()

    def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()


class PostgresStore(SQLStateStore):
    """A :class:`~flowgraph.StateStore` in a PostgreSQL database.

    Open it with :func:`~flowgraph.open_store` (``postgresql://...``) or
    ``await PostgresStore.connect(url)``. Calls on one store run one at a time
    on one connection in a worker thread. If the connection breaks (server
    restart, network cut), the call in progress raises ``StoreError`` and the
    next call reconnects. Whether a write whose ``COMMIT`` was cut off took
    effect is unknown, as with any database client.
    """

    def __init__(self, connection: psycopg.Connection[Any], url: str) -> None:
        super().__init__()
        self._connection = connection
        self._url = url

    @classmethod
    async def connect(cls, url: str) -> PostgresStore:
        """Connect to the PostgreSQL database at *url* and create the tables if needed.

        Unless the URL sets ``connect_timeout``, connecting gives up after 10 s.
        The connection and schema work runs in one worker thread that is not
        abandoned on cancellation; schema creation is one transaction.

        Raises:
            StoreError: if the server cannot be reached, the schema cannot be
                created, or it was written by a newer flowgraph.
        """
        connection = await anyio.to_thread.run_sync(_open, url)
        return cls(connection, url)

    def _transact(self, work: Callable[[Cursor], _T], *, write: bool) -> _T:
        try:
            if self._connection.broken or self._connection.closed:
                self._connection.close()
                self._connection = connect_postgres(self._url)
            connection = self._connection
            with connection.cursor() as cursor:
                if not write:
                    return work(_Cursor(cursor))
                with connection.transaction():
                    return work(_Cursor(cursor))
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL store: {type(exc).__name__}: {exc}") from exc

    def _close_sync(self) -> None:
        self._connection.close()


def _open(url: str) -> psycopg.Connection[Any]:
    try:
        connection = connect_postgres(url)
    except psycopg.Error as exc:
        raise StoreError(f"cannot connect to the PostgreSQL store: {exc}") from exc
    try:
        with connection.transaction(), connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            cursor.execute("SELECT to_regclass(%s) IS NOT NULL", ("flowgraph_schema",))
            exists = cursor.fetchone()
            version = 0
            if exists is not None and exists[0]:
                cursor.execute("SELECT max(version) FROM flowgraph_schema")
                row = cursor.fetchone()
                version = 0 if row is None or row[0] is None else int(row[0])
            if version > SCHEMA_VERSION:
                raise newer_schema_error("the PostgreSQL store", version)
            if version < SCHEMA_VERSION:
                for statement in _SCHEMA:
                    cursor.execute(statement)
                cursor.execute("DELETE FROM flowgraph_schema")
                cursor.execute(
                    "INSERT INTO flowgraph_schema (version) VALUES (%s)", (SCHEMA_VERSION,)
                )
    except psycopg.Error as exc:
        connection.close()
        raise StoreError(f"cannot open the PostgreSQL store: {type(exc).__name__}: {exc}") from exc
    except BaseException:
        connection.close()
        raise
    return connection
