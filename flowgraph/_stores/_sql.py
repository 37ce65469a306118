"""The SQL shared by the SQLite and PostgreSQL state stores.

Both stores run exactly these statements, with ``?`` marking parameters; each
store supplies only its connection, its schema set-up, a way to run a
function in one transaction in a worker thread (raising ``Transient`` for the
errors worth retrying) and its lease.

What a store reads back is checked: a position that is not JSON, or a dead
letter whose item cannot be rebuilt, is a ``StoreError`` naming the store and
the row, never a raw decoding error or a silently wrong value.
"""

from __future__ import annotations

import time
import traceback
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, Protocol, Self, TypeVar

import anyio

from .._core._exceptions import StoreError
from .._core._threads import run_sync_in_thread
from ._codec import (
    decode_position,
    deserialize_item,
    encode_position,
    qualified_name,
    serialize_item,
)
from ._protocol import DeadLetter, JSONValue, Serializer
from ._retry import DEFAULT_RETRY_FOR, check_retry_for, retrying

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from contextlib import AbstractAsyncContextManager
    from datetime import timedelta
    from types import TracebackType

    from .._core._policy import Failure

_T = TypeVar("_T")

SCHEMA_VERSION = 2
"""The version of the tables this flowgraph writes; a store refuses a newer one.

2 added ``flowgraph_quotas``; a store of version 1 gets it when opened (tables are
created with ``IF NOT EXISTS``, so upgrading is creating what is missing).
"""
_FILTER_COLUMNS = ("graph", "node", "run_id", "error_type")


def newer_schema_error(where: str, found: int) -> StoreError:
    """Return the error for a store written by a newer flowgraph than this one."""
    return StoreError(
        f"{where} has schema version {found}, but this flowgraph supports only up to "
        f"{SCHEMA_VERSION}; upgrade flowgraph to use it"
    )


def not_a_store_error(where: str, why: str) -> StoreError:
    """Return the error for a database that is not (or no longer) a flowgraph store."""
    return StoreError(f"{where} is not a flowgraph store: {why}")


def lease_held_error(store: str, graph: str, holder: str) -> StoreError:
    """Return the error for a run whose graph is already running against the same store."""
    return StoreError(
        f"graph {graph!r} is already running against {store} (its lease is held by "
        f"{holder}); two runs of one graph on one checkpoint store would overwrite each "
        "other's checkpoints: stop the other run, or give this one another graph name"
    )


def _text(value: str) -> str:
    # Invariant: stored text is valid UTF-8 without NUL, which PostgreSQL text requires.
    return value.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def _describe_error(error: BaseException) -> tuple[str, str]:
    try:
        message = str(error)
    except Exception:
        message = object.__repr__(error)
    try:
        text = "".join(traceback.format_exception(error)) if error.__traceback__ else ""
    except Exception:
        text = ""
    return _text(message), _text(text)


class Cursor(Protocol):
    """The slice of a DB-API cursor the shared SQL needs; ``?`` marks parameters."""

    @property
    def rowcount(self) -> int: ...

    def execute(self, sql: str, params: Sequence[Any] = ..., /) -> Any: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


_DL_COLUMNS = (
    "id, graph, node, run_id, item, serializer, error_type, message, traceback, attempts, failed_at"
)


def _where(filters: Mapping[str, str | None]) -> tuple[str, list[str]]:
    # Invariant: column names come from _FILTER_COLUMNS, never from the caller.
    used = [(column, filters[column]) for column in _FILTER_COLUMNS if filters[column] is not None]
    clause = " AND ".join(f"{column} = ?" for column, _ in used)
    return (f" WHERE {clause}" if clause else ""), [value for _, value in used if value is not None]


def _row_to_dead_letter(store: str, row: Sequence[Any]) -> DeadLetter:
    """Rebuild one row; raise ``StoreError`` naming *store* and the row if it is corrupt."""
    id_, graph, node, run_id, payload, serializer, error_type, message, tb, attempts, at = row
    try:
        item = deserialize_item(bytes(payload), serializer)
        return DeadLetter(
            id=int(id_),
            graph=_column("graph", graph),
            node=_column("node", node),
            run_id=_column("run_id", run_id),
            item=item,
            error_type=_column("error_type", error_type),
            message=_column("message", message),
            traceback=_column("traceback", tb),
            attempts=int(attempts),
            time=float(at),
            serializer=serializer,
        )
    except Exception as exc:
        raise StoreError(f"{store}: dead letter {id_} is corrupt: {exc}") from exc


def _column(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"its {name} is {type(value).__name__}, not text")
    return value


class SQLStateStore(ABC):
    """:class:`StateStore` over SQL shared by SQLite and PostgreSQL.

    A subclass supplies :meth:`_transact`, which runs a function on a cursor in
    one transaction in the calling (worker) thread, :meth:`open_lease` and
    :meth:`_close_sync`. Calls on one store run one at a time, in a worker
    thread, behind a ``CapacityLimiter(1)``; a call whose thread has started is
    not abandoned on cancellation, so its transaction either commits or rolls
    back in full. A call failing with a transient error (a locked file, a lost
    connection) is tried again for up to ``retry_for`` seconds
    (:func:`~flowgraph._stores._retry.retrying`).

    Attributes:
        name: says which store this is in messages (``"SQLite store /srv/state.db"``),
            never with a password.
        retry_for: seconds transient failures are retried before a call fails.
        read_only: whether the store was opened read-only; writes then raise ``StoreError``.
    """

    def __init__(
        self,
        name: str,
        *,
        retry_for: float | timedelta = DEFAULT_RETRY_FOR,
        read_only: bool = False,
    ) -> None:
        self.name = name
        self.retry_for = check_retry_for(retry_for)
        self.read_only = read_only
        self._limiter = anyio.CapacityLimiter(1)
        self._closed = False

    def __str__(self) -> str:
        return self.name

    @abstractmethod
    def _transact(self, work: Callable[[Cursor], _T], *, write: bool) -> _T:
        """Run *work* in one transaction; raise ``Transient`` or ``StoreError`` on failure."""

    @abstractmethod
    def _close_sync(self) -> None:
        """Release the connection."""

    @abstractmethod
    def open_lease(self, graph: str) -> AbstractAsyncContextManager[None]:
        """Hold the lease of *graph* in this store for the block (see ``StateStore``)."""

    async def _run(
        self, work: Callable[[Cursor], _T], *, action: str, write: bool = False, retry: bool = True
    ) -> _T:
        if write and self.read_only:
            raise StoreError(f"{self.name} is open read-only; {action} needs a writable store")

        def call() -> _T:
            if self._closed:
                raise StoreError("the state store is closed")
            return self._transact(work, write=write)

        async def attempt() -> _T:
            if self._closed:
                raise StoreError("the state store is closed")
            return await run_sync_in_thread(call, limiter=self._limiter)

        retry_for = self.retry_for if retry else 0.0
        return await retrying(attempt, store=self.name, action=action, retry_for=retry_for)

    async def add_dead_letter(self, failure: Failure, *, serializer: Serializer = "json") -> int:
        payload = serialize_item(failure.node, failure.item, serializer)
        message, tb = _describe_error(failure.error)
        params = (
            failure.graph,
            failure.node,
            failure.run_id,
            payload,
            serializer,
            qualified_name(type(failure.error)),
            message,
            tb,
            failure.attempts,
            failure.time,
        )

        def work(cur: Cursor) -> int:
            cur.execute(
                "INSERT INTO flowgraph_dead_letters (graph, node, run_id, item, serializer,"
                " error_type, message, traceback, attempts, failed_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                params,
            )
            return int(cur.fetchone()[0])

        return await self._run(work, write=True, action="adding a dead letter")

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
        where, params = _where(
            {"graph": graph, "node": node, "run_id": run_id, "error_type": error_type}
        )
        sql = f"SELECT {_DL_COLUMNS} FROM flowgraph_dead_letters{where} ORDER BY id"
        args: list[object] = list(params)
        if limit is not None:
            if limit < 0:
                raise ValueError(f"limit must be >= 0 (got {limit})")
            sql += " LIMIT ?"
            args.append(limit)

        def work(cur: Cursor) -> list[Any]:
            cur.execute(sql, args)
            return cur.fetchall()

        letters: list[DeadLetter] = []
        for row in await self._run(work, action="listing dead letters"):
            try:
                letters.append(_row_to_dead_letter(self.name, row))
            except StoreError as exc:
                if errors is None:
                    raise
                errors.append(exc)
        return letters

    async def get_dead_letter(self, id: int) -> DeadLetter | None:
        def work(cur: Cursor) -> Any:
            cur.execute(f"SELECT {_DL_COLUMNS} FROM flowgraph_dead_letters WHERE id = ?", (id,))
            return cur.fetchone()

        row = await self._run(work, action="reading a dead letter")
        return None if row is None else _row_to_dead_letter(self.name, row)

    async def remove_dead_letter(self, id: int) -> bool:
        def work(cur: Cursor) -> bool:
            cur.execute("DELETE FROM flowgraph_dead_letters WHERE id = ?", (id,))
            return cur.rowcount > 0

        return await self._run(work, write=True, action="removing a dead letter")

    async def purge_dead_letters(
        self,
        *,
        graph: str | None = None,
        node: str | None = None,
        run_id: str | None = None,
        error_type: str | None = None,
    ) -> int:
        where, params = _where(
            {"graph": graph, "node": node, "run_id": run_id, "error_type": error_type}
        )

        def work(cur: Cursor) -> int:
            cur.execute(f"DELETE FROM flowgraph_dead_letters{where}", params)
            return cur.rowcount

        return await self._run(work, write=True, action="purging dead letters")

    async def count_dead_letters(
        self,
        *,
        graph: str | None = None,
        node: str | None = None,
        run_id: str | None = None,
        error_type: str | None = None,
    ) -> int:
        where, params = _where(
            {"graph": graph, "node": node, "run_id": run_id, "error_type": error_type}
        )

        def work(cur: Cursor) -> int:
            cur.execute(f"SELECT count(*) FROM flowgraph_dead_letters{where}", params)
            return int(cur.fetchone()[0])

        return await self._run(work, action="counting dead letters")

    async def load_checkpoints(self, graph: str) -> dict[str, JSONValue]:
        def work(cur: Cursor) -> list[Any]:
            cur.execute(
                "SELECT source, position FROM flowgraph_checkpoints"
                " WHERE graph = ? ORDER BY source",
                (graph,),
            )
            return cur.fetchall()

        rows = await self._run(work, action="loading checkpoints")
        return {
            source: decode_position(self.name, graph, source, position) for source, position in rows
        }

    async def load_checkpoint(self, graph: str, source: str) -> JSONValue | None:
        def work(cur: Cursor) -> Any:
            cur.execute(
                "SELECT position FROM flowgraph_checkpoints WHERE graph = ? AND source = ?",
                (graph, source),
            )
            return cur.fetchone()

        row = await self._run(work, action="loading a checkpoint")
        return None if row is None else decode_position(self.name, graph, source, row[0])

    async def commit_checkpoints(self, graph: str, positions: Mapping[str, JSONValue]) -> None:
        now = time.time()
        rows = [
            (graph, source, encode_position(graph, source, position), now)
            for source, position in positions.items()
        ]
        if not rows:
            return

        def work(cur: Cursor) -> None:
            for row in rows:
                cur.execute(
                    "INSERT INTO flowgraph_checkpoints (graph, source, position, updated_at)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT (graph, source) DO UPDATE"
                    " SET position = excluded.position, updated_at = excluded.updated_at",
                    row,
                )

        await self._run(work, write=True, action="committing checkpoints")

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            async with self._limiter:
                if self._closed:
                    return
                self._closed = True
                await run_sync_in_thread(self._close_sync)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
