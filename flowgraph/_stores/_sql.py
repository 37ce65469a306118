"""The SQL shared by the SQLite and PostgreSQL state stores.

Both stores run exactly these statements, with ``?`` marking parameters; each
store supplies only its connection, its schema set-up and a way to run a
function in one transaction in a worker thread.
"""

from __future__ import annotations

import json
import time
import traceback
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, Protocol, Self, TypeVar

import anyio

from .._core._exceptions import StoreError
from ._codec import deserialize_item, encode_position, qualified_name, serialize_item
from ._protocol import DeadLetter, JSONValue, Serializer

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
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


def _row_to_dead_letter(row: Sequence[Any]) -> DeadLetter:
    id_, graph, node, run_id, payload, serializer, error_type, message, tb, attempts, at = row
    return DeadLetter(
        id=int(id_),
        graph=graph,
        node=node,
        run_id=run_id,
        item=deserialize_item(id_, bytes(payload), serializer),
        error_type=error_type,
        message=message,
        traceback=tb,
        attempts=int(attempts),
        time=float(at),
        serializer=serializer,
    )


class SQLStateStore(ABC):
    """:class:`StateStore` over SQL shared by SQLite and PostgreSQL.

    A subclass supplies :meth:`_transact`, which runs a function on a cursor in
    one transaction in the calling (worker) thread, and :meth:`_close_sync`.
    Calls on one store run one at a time, in a worker thread, behind a
    ``CapacityLimiter(1)``; a call whose thread has started is not abandoned on
    cancellation, so its transaction either commits or rolls back in full.
    """

    def __init__(self) -> None:
        self._limiter = anyio.CapacityLimiter(1)
        self._closed = False

    @abstractmethod
    def _transact(self, work: Callable[[Cursor], _T], *, write: bool) -> _T:
        """Run *work* in one transaction; translate driver errors into ``StoreError``."""

    @abstractmethod
    def _close_sync(self) -> None:
        """Release the connection."""

    async def _run(self, work: Callable[[Cursor], _T], *, write: bool = False) -> _T:
        def call() -> _T:
            if self._closed:
                raise StoreError("the state store is closed")
            return self._transact(work, write=write)

        if self._closed:
            raise StoreError("the state store is closed")
        return await anyio.to_thread.run_sync(call, limiter=self._limiter)

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

        return await self._run(work, write=True)

    async def list_dead_letters(
        self,
        *,
        graph: str | None = None,
        node: str | None = None,
        run_id: str | None = None,
        error_type: str | None = None,
        limit: int | None = None,
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

        return [_row_to_dead_letter(row) for row in await self._run(work)]

    async def get_dead_letter(self, id: int) -> DeadLetter | None:
        def work(cur: Cursor) -> Any:
            cur.execute(f"SELECT {_DL_COLUMNS} FROM flowgraph_dead_letters WHERE id = ?", (id,))
            return cur.fetchone()

        row = await self._run(work)
        return None if row is None else _row_to_dead_letter(row)

    async def remove_dead_letter(self, id: int) -> bool:
        def work(cur: Cursor) -> bool:
            cur.execute("DELETE FROM flowgraph_dead_letters WHERE id = ?", (id,))
            return cur.rowcount > 0

        return await self._run(work, write=True)

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

        return await self._run(work, write=True)

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

        return await self._run(work)

    async def load_checkpoints(self, graph: str) -> dict[str, JSONValue]:
        def work(cur: Cursor) -> list[Any]:
            cur.execute(
                "SELECT source, position FROM flowgraph_checkpoints"
                " WHERE graph = ? ORDER BY source",
                (graph,),
            )
            return cur.fetchall()

        rows = await self._run(work)
        return {source: json.loads(position) for source, position in rows}

    async def load_checkpoint(self, graph: str, source: str) -> JSONValue | None:
        def work(cur: Cursor) -> Any:
            cur.execute(
                "SELECT position FROM flowgraph_checkpoints WHERE graph = ? AND source = ?",
                (graph, source),
            )
            return cur.fetchone()

        row = await self._run(work)
        position: JSONValue = None if row is None else json.loads(row[0])
        return position

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

        await self._run(work, write=True)

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            async with self._limiter:
                if self._closed:
                    return
                self._closed = True
                await anyio.to_thread.run_sync(self._close_sync)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
