"""A state store in PostgreSQL, for state shared by several processes or machines.

It uses psycopg 3's *sync* API in worker threads, because psycopg's async API
runs on asyncio only and flowgraph must also run on trio. Its tables
(``flowgraph_dead_letters``, ``flowgraph_checkpoints``, ``flowgraph_quotas``,
``flowgraph_schema``) are created on demand in the first schema of the connection's
``search_path`` (choose one with ``?options=-csearch_path%3Dmyschema`` in the URL). Creation
runs under a transaction-scoped advisory lock, so processes starting together
do not race, and checkpoints are upserts (``INSERT ... ON CONFLICT``), so
processes committing together do not conflict.

A graph's lease (:meth:`PostgresStore.open_lease`) is a session-level advisory
lock held by the store's connection, keyed by schema and graph name: the
server releases it when that session ends, however the process holding it
died.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import socket
import time
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import psycopg

from .._core._exceptions import StoreError
from .._core._threads import run_sync_in_thread
from ._connect import connect_postgres
from ._retry import DEFAULT_RETRY_FOR, Transient
from ._sql import (
    SCHEMA_VERSION,
    SQLStateStore,
    lease_held_error,
    newer_schema_error,
    not_a_store_error,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Sequence
    from datetime import timedelta

    from ._sql import Cursor

_T = TypeVar("_T")

_SCHEMA_LOCK = 0x666C6F77_67726170  # "flowgrap": key of the advisory lock guarding creation
LEASE_WAIT = 2.0
"""Seconds to wait for a lease: the session of a holder killed a moment ago may linger."""
_LEASE_KEY = "SELECT hashtextextended(current_schema() || '/' || ?, 0)"

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
    restart, network cut), the call in progress is retried on a new connection
    for up to *retry_for* seconds, then fails with ``StoreError``. Whether a
    write whose ``COMMIT`` was cut off took effect is unknown, as with any
    database client: committing checkpoints again is harmless, and a dead
    letter may then be stored twice.
    """

    def __init__(
        self,
        connection: psycopg.Connection[Any],
        url: str,
        *,
        retry_for: float | timedelta = DEFAULT_RETRY_FOR,
        read_only: bool = False,
    ) -> None:
        name = f"PostgreSQL store {_redact(url)}"
        super().__init__(name, retry_for=retry_for, read_only=read_only)
        self._connection = connection
        self._url = url
        self._leases: dict[str, int] = {}  # graph -> advisory lock key, held by the connection
        self._relock = False  # the connection was replaced: take the leases again

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        create: bool = True,
        read_only: bool = False,
        retry_for: float | timedelta = DEFAULT_RETRY_FOR,
    ) -> PostgresStore:
        """Connect to the PostgreSQL database at *url* and create the tables if needed.

        Unless the URL sets ``connect_timeout``, connecting gives up after 10 s.
        The connection and schema work runs in one worker thread that is not
        abandoned on cancellation; schema creation is one transaction. With
        ``create=False`` the tables must exist; with ``read_only=True`` every
        transaction of the session is read-only.

        Raises:
            StoreError: if the server cannot be reached, the schema cannot be
                created (or, without *create*, does not exist), or it was
                written by a newer flowgraph.
        """
        opener = functools.partial(_open, url, create=create, read_only=read_only)
        connection = await run_sync_in_thread(opener)
        return cls(connection, url, retry_for=retry_for, read_only=read_only)

    @asynccontextmanager
    async def open_lease(self, graph: str) -> AsyncIterator[None]:
        """Hold the lease of *graph*: an advisory lock of this store's session.

        Waits up to ``LEASE_WAIT`` seconds for a holder that was just killed.
        If the connection is lost, the lease is taken again on the new one.

        Raises:
            StoreError: if another run holds it (naming its session), or the
                store is read-only.
        """
        if self.read_only:
            raise StoreError(
                f"{self.name} is open read-only; taking the lease of graph {graph!r} "
                "needs a writable store"
            )
        deadline = anyio.current_time() + LEASE_WAIT
        action = f"taking the lease of graph {graph!r}"
        while True:
            holder = await self._run(functools.partial(self._try_lease, graph), action=action)
            if holder is None:
                break
            if anyio.current_time() >= deadline:
                raise lease_held_error(self.name, graph, holder)
            await anyio.sleep(0.05)
        try:
            yield
        finally:
            with anyio.CancelScope(shield=True):
                await self._release_lease(graph)

    def _try_lease(self, graph: str, cur: Cursor) -> str | None:
        """Take the lock of *graph* on this session; return ``None``, or who holds it."""
        key = int(cur.execute(_LEASE_KEY, (graph,)).fetchone()[0])
        if not cur.execute("SELECT pg_try_advisory_lock(?)", (key,)).fetchone()[0]:
            return _holder(cur, key)
        self._leases[graph] = key
        me = f"flowgraph process {os.getpid()} on {socket.gethostname()} since "
        cur.execute(
            "SELECT set_config('application_name', ?, false)",
            (me + time.strftime("%Y-%m-%d %H:%M:%S %z"),),
        )
        return None

    async def _release_lease(self, graph: str) -> None:
        def work(cur: Cursor) -> None:
            key = self._leases.pop(graph, None)
            if key is not None and not self._relock:
                cur.execute("SELECT pg_advisory_unlock(?)", (key,))

        if not self._closed:
            with contextlib.suppress(StoreError):  # the session is gone, and its locks with it
                await self._run(work, action=f"releasing the lease of {graph!r}", retry=False)

    def _transact(self, work: Callable[[Cursor], _T], *, write: bool) -> _T:
        try:
            if self._connection.broken or self._connection.closed:
                self._connection.close()
                self._connection = connect_postgres(self._url)
                if self.read_only:
                    self._connection.execute("SET default_transaction_read_only = on")
                self._relock = bool(self._leases)
            connection = self._connection
            with connection.cursor() as cursor:
                if self._relock:
                    self._take_leases_again(_Cursor(cursor))
                if not write:
                    return work(_Cursor(cursor))
                with connection.transaction():
                    return work(_Cursor(cursor))
        except psycopg.OperationalError as exc:
            raise Transient(_describe(exc)) from exc
        except psycopg.Error as exc:
            raise StoreError(f"{self.name}: {_describe(exc)}") from exc

    def _take_leases_again(self, cur: _Cursor) -> None:
        for graph, key in list(self._leases.items()):
            if not cur.execute("SELECT pg_try_advisory_lock(?)", (key,)).fetchone()[0]:
                # Transient: the old session may not have ended yet. If another run
                # really took the lease, the retries run out and this run fails.
                raise Transient(
                    f"the lease of graph {graph!r}, lost with the connection, is held by "
                    f"{_holder(cur, key)}"
                )
        self._relock = False

    def _close_sync(self) -> None:
        self._connection.close()


def _describe(exc: psycopg.Error) -> str:
    return f"{type(exc).__name__}: {str(exc).strip()}"


def _holder(cur: Cursor, key: int) -> str:
    """Describe the session holding advisory lock *key*, as far as the server tells."""
    unsigned = key & 0xFFFFFFFFFFFFFFFF
    row = cur.execute(
        "SELECT a.pid, a.application_name FROM pg_locks l JOIN pg_stat_activity a"
        " ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1"
        " AND l.classid::bigint = ? AND l.objid::bigint = ?",
        (unsigned >> 32, unsigned & 0xFFFFFFFF),
    ).fetchone()
    if row is None:
        return "another session"
    pid, application = row
    return f"{application or 'a session'}, server process {pid}"


def _redact(url: str) -> str:
    """*url* without its password, for messages."""
    url = re.sub(r"^([a-z]+://[^:/@?]*):[^@/?]*@", r"\1:***@", url, flags=re.IGNORECASE)
    return re.sub(r"([?&]password=)[^&]*", r"\1***", url)


def _open(url: str, *, create: bool = True, read_only: bool = False) -> psycopg.Connection[Any]:
    try:
        connection = connect_postgres(url)
    except psycopg.Error as exc:
        raise StoreError(f"cannot connect to the PostgreSQL store: {exc}") from exc
    create = create and not read_only
    try:
        if read_only:
            connection.execute("SET default_transaction_read_only = on")
        with connection.transaction(), connection.cursor() as cursor:
            if create:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            cursor.execute("SELECT to_regclass(%s) IS NOT NULL", ("flowgraph_schema",))
            exists = cursor.fetchone()
            version = None
            if exists is not None and exists[0]:
                cursor.execute("SELECT max(version) FROM flowgraph_schema")
                row = cursor.fetchone()
                version = 0 if row is None or row[0] is None else int(row[0])
            if version is not None and version > SCHEMA_VERSION:
                raise newer_schema_error("the PostgreSQL store", version)
            if not create and version is None:
                raise not_a_store_error(
                    "the PostgreSQL store",
                    "it has no flowgraph tables (in the first schema of its search_path)",
                )
            if create and (version is None or version < SCHEMA_VERSION):
                for statement in _SCHEMA:
                    cursor.execute(statement)
                cursor.execute("DELETE FROM flowgraph_schema")
                cursor.execute(
                    "INSERT INTO flowgraph_schema (version) VALUES (%s)", (SCHEMA_VERSION,)
                )
    except psycopg.Error as exc:
        connection.close()
        raise StoreError(f"cannot open the PostgreSQL store: {_describe(exc)}") from exc
    except BaseException:
        connection.close()
        raise
    return connection
