"""Idempotent sinks: upsert dict items by key into SQLite or PostgreSQL.

A checkpointed source delivers at least once: after a crash the items after
the last committed position are replayed. A sink that writes each item with
``INSERT ... ON CONFLICT (key) DO UPDATE`` turns that into exactly one row per
key, whatever is replayed: the replay writes the same values again.

One connection per run, used from worker threads one call at a time (the
sync drivers, because psycopg's async API runs on asyncio only). Items that
arrive while a write is running are written together in the next transaction,
so a sink with several workers commits in groups.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sqlite3
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, final

import anyio
import anyio.to_thread

from .._core._exceptions import GraphError, StoreError, describe_error, describe_item
from .._stores import parse_store_url

if TYPE_CHECKING:
    import os
    from collections.abc import Callable
    from types import TracebackType

__all__ = ["Upsert"]

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_SQL_TYPE = re.compile(r"[A-Za-z][A-Za-z0-9_ ]*(\([0-9, ]+\))?(\[\])?")
_LOCK_CLASS = 0x666C6F77  # "flow": advisory lock class guarding table creation in PostgreSQL

Row = tuple[tuple[str, ...], tuple[Any, ...]]
"""One row to write: its column names and their values, in the same order."""


def _identifier(what: str, name: object) -> str:
    if isinstance(name, str) and _IDENTIFIER.fullmatch(name):
        return name
    raise GraphError(
        f"{what} {name!r} is not a simple identifier: use letters, digits and "
        "underscores, not starting with a digit, at most 63 characters"
    )


def _quote(name: str) -> str:
    # Invariant: *name* matched _IDENTIFIER (or is dotted parts that did), so it holds no quote.
    return ".".join(f'"{part}"' for part in name.split("."))


@dataclass(slots=True)
class _Write:
    """One call's rows, waiting to be written by whichever call takes the lock first."""

    item: Any
    rows: list[Row]
    taken: bool = False  # a flush has taken it: withdrawing it is too late
    written: bool = False  # its transaction committed
    error: BaseException | None = None


@final
class Upsert:
    """A sink that upserts dict items into a table by key: replays leave one row per key.

    ``graph.sink(fg.Upsert("sqlite:///data.db", "events", key="id"), workers=4)``.
    Each item is a mapping from column names to values (or a list of them,
    written in one transaction, for a batching node upstream). A call returns
    once its rows are committed, so an acknowledged item is in the database.

    The URL chooses the database: ``sqlite:///path.db`` or a bare path (a file,
    created on demand, in WAL mode with ``synchronous=FULL``), or
    ``postgresql://...`` (needs the ``postgres`` extra; unqualified tables go to
    the first schema of the ``search_path``). A run opens the sink for its
    duration (one connection); it can also be used with ``async with``.

    The table is created on demand if it does not exist: with the columns and
    SQL types of *columns* if it is a mapping, else with the columns of the
    first items written, typed after their values (int, float, str, bytes,
    bool, dict and list as JSON, datetime, date, Decimal, UUID), and a primary
    key on *key*. An existing table is used as it is; it needs a primary key or
    unique constraint on exactly the *key* columns.

    A row sets the columns its item has: on conflict those are updated and the
    others keep their values. With *columns*, only those keys of each item are
    written and other keys are ignored; without, every key must be a column.

    Cancellation: a call cancelled while its rows wait is withdrawn; once its
    transaction has started it runs to the end, so it commits entirely or not at
    all. Errors: an item that is not a mapping, lacks a key column or has a key
    that is not a column raises ``ValueError`` (or ``TypeError``); a database
    error raises ``StoreError``; both name the item, so ``on_error=`` can skip
    or dead-letter it, and a failed group is retried item by item so one bad
    item never fails the others. Backpressure: calls wait for the connection.

    Args:
        url: ``sqlite:///path.db``, a file path, or ``postgresql://...``.
        table: table name, optionally schema-qualified (``"raw.events"``).
        key: the column, or columns, identifying a row.
        columns: the columns to write, or a mapping of columns to SQL types
            (``{"id": "BIGINT", "body": "JSONB"}``) used when creating the table.

    Raises:
        GraphError: if a name is not a simple identifier, a key column is not in
            *columns*, a SQL type is malformed, or the URL is not a database URL.

    Added in 0.1.
    """

    def __init__(
        self,
        url: str | os.PathLike[str],
        table: str,
        *,
        key: str | Sequence[str] = "id",
        columns: Sequence[str] | Mapping[str, str] | None = None,
    ) -> None:
        try:
            self._kind, self._target = parse_store_url(url)
        except ValueError as exc:
            raise GraphError(f"Upsert needs a database URL: {exc}") from None
        if not isinstance(table, str):
            raise GraphError(f"table must be a string (got {table!r})")
        parts = table.split(".")
        if len(parts) > 2:
            raise GraphError(f"table {table!r} must be 'name' or 'schema.name'")
        for part in parts:
            _identifier("table name", part)
        keys = (key,) if isinstance(key, str) else tuple(key)
        if not keys:
            raise GraphError("key must name at least one column")
        for name in keys:
            _identifier("key column", name)
        types: dict[str, str] = {}
        if columns is not None:
            names = list(columns)
            for name in names:
                _identifier("column", name)
            if isinstance(columns, Mapping):
                for name, sql_type in columns.items():
                    if not isinstance(sql_type, str) or not _SQL_TYPE.fullmatch(sql_type):
                        raise GraphError(f"SQL type of column {name!r} is malformed: {sql_type!r}")
                    types[name] = sql_type
            missing = [name for name in keys if name not in names]
            if missing:
                raise GraphError(f"key column(s) {missing} must be among columns= {names}")
        self.url = url
        self.table = table
        self.key = keys
        self.columns: tuple[str, ...] | None = None if columns is None else tuple(columns)
        self.__name__ = f"upsert_{table.replace('.', '_')}"
        self._types = types
        self._db: _Database | None = None
        self._depth = 0
        self._pending: list[_Write] = []
        self._lock: anyio.Lock | None = None
        self._limiter: anyio.CapacityLimiter | None = None

    def __repr__(self) -> str:
        key = self.key[0] if len(self.key) == 1 else self.key
        columns = "" if self.columns is None else f", columns={self._types or list(self.columns)!r}"
        return f"Upsert({self.url!r}, {self.table!r}, key={key!r}{columns})"

    async def __aenter__(self) -> Upsert:
        if self._depth == 0:
            self._lock = anyio.Lock()
            self._limiter = anyio.CapacityLimiter(1)
            self._db = await anyio.to_thread.run_sync(self._open, limiter=self._limiter)
        self._depth += 1
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._depth -= 1
        if self._depth == 0 and self._db is not None:
            db, self._db = self._db, None
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(db.close, limiter=self._limiter)

    async def __call__(self, item: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> None:
        """Upsert *item* (a mapping, or a sequence of mappings in one transaction)."""
        if self._lock is None or self._db is None:
            raise RuntimeError(
                f"Upsert into {self.table!r} is not open: use it as a sink of a run "
                "(the run opens it) or in `async with`"
            )
        write = _Write(item, self._rows(item))
        self._pending.append(write)
        try:
            async with self._lock:
                if not write.taken:
                    batch, self._pending = self._pending, []
                    for each in batch:
                        each.taken = True
                    await anyio.to_thread.run_sync(self._flush, batch, limiter=self._limiter)
        except BaseException:
            if not write.taken:
                self._pending.remove(write)
            raise
        if not write.written:
            assert write.error is not None
            raise write.error

    # -- preparing rows, on the event loop -------------------------------------------------

    def _rows(self, item: Any) -> list[Row]:
        if isinstance(item, Mapping):
            return [self._row(item, item)]
        if isinstance(item, Sequence) and not isinstance(item, str | bytes):
            return [self._row(each, item) for each in item]
        raise TypeError(
            f"Upsert into {self.table!r} takes a mapping of columns to values, or a list "
            f"of them (got {describe_item(item)})"
        )

    def _row(self, row: Any, item: Any) -> Row:
        if not isinstance(row, Mapping):
            raise TypeError(
                f"Upsert into {self.table!r} takes mappings of columns to values "
                f"(got {describe_item(row)} in {describe_item(item)})"
            )
        for name in self.key:
            if row.get(name) is None:
                problem = "has no key" if name not in row else "has None as key"
                raise ValueError(
                    f"item {describe_item(item)} {problem} column {name!r} for table {self.table!r}"
                )
        if self.columns is not None:
            names = tuple(name for name in self.columns if name in row)
        else:
            names = tuple(row)
            for name in names:
                if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
                    raise ValueError(
                        f"item {describe_item(item)} has key {name!r}, which is not a simple "
                        f"identifier and cannot be a column of table {self.table!r}"
                    )
        return names, tuple(row[name] for name in names)

    # -- database work, in the worker thread -----------------------------------------------

    def _open(self) -> _Database:
        db: _Database = (
            _Postgres(self._target) if self._kind == "postgres" else _SQLite(self._target)
        )
        try:
            db.columns = db.describe(self.table)
            if db.columns is None and self._types:
                db.create(self.table, list(self._types.items()), self.key)
                db.columns = db.describe(self.table)
            db.check_key(self.table, self.key)
        except BaseException:
            db.close()
            raise
        return db

    def _flush(self, writes: list[_Write]) -> None:
        """Write every call's rows; record on each write whether it committed, or its error."""
        try:
            self._write_all(writes)
        except Exception as exc:
            for write in writes:
                if not write.written and write.error is None:
                    write.error = self._error(write, exc)

    def _write_all(self, writes: list[_Write]) -> None:
        db = self._db
        assert db is not None
        if db.columns is None and any(write.rows for write in writes):
            db.create(self.table, self._inferred_columns(db, writes), self.key)
            db.columns = db.describe(self.table)
            db.check_key(self.table, self.key)
        ready = []
        for write in writes:
            unknown = sorted({n for names, _ in write.rows for n in names} - (db.columns or set()))
            if unknown:
                write.error = ValueError(
                    f"item {describe_item(write.item)} has key(s) {unknown} that are not "
                    f"columns of table {self.table!r}; add them to the table, or pass "
                    "columns= to write only some keys"
                )
            else:
                ready.append(write)
        if not ready:
            return
        try:
            db.transact([row for write in ready for row in write.rows], self.table, self.key)
        except db.errors as exc:
            if len(ready) == 1:
                ready[0].error = self._error(ready[0], exc)
                return
            # One bad item must not fail the others: retry them one transaction each.
            for write in ready:
                try:
                    db.transact(write.rows, self.table, self.key)
                except db.errors as single:
                    write.error = self._error(write, single)
                else:
                    write.written = True
        else:
            for write in ready:
                write.written = True

    def _error(self, write: _Write, exc: BaseException) -> StoreError:
        if isinstance(exc, StoreError):
            return StoreError(f"{exc} (while writing item {describe_item(write.item)})")
        error = StoreError(
            f"upsert into {self.table!r} failed on item {describe_item(write.item)}: "
            f"{describe_error(exc)}"
        )
        error.__cause__ = exc
        return error

    def _inferred_columns(self, db: _Database, writes: list[_Write]) -> list[tuple[str, str]]:
        found: dict[str, str | None] = dict.fromkeys(self.columns or ())
        for write in writes:
            for names, values in write.rows:
                for name, value in zip(names, values, strict=True):
                    if found.get(name) is None:
                        found[name] = None if value is None else db.type_of(value)
        return [
            (name, self._types.get(name) or sql_type or db.default_type)
            for name, sql_type in found.items()
        ]


class _Database:
    """One connection to a SQLite or PostgreSQL database, used from one thread at a time."""

    errors: tuple[type[Exception], ...]
    placeholder: str
    default_type: str
    columns: set[str] | None = None

    def __init__(self) -> None:
        self._sql: dict[tuple[str, ...], str] = {}

    def statement(self, table: str, key: tuple[str, ...], names: tuple[str, ...]) -> str:
        sql = self._sql.get(names)
        if sql is None:
            updates = [f"{_quote(n)} = excluded.{_quote(n)}" for n in names if n not in key]
            action = f"DO UPDATE SET {', '.join(updates)}" if updates else "DO NOTHING"
            sql = self._sql[names] = (
                f"INSERT INTO {_quote(table)} ({', '.join(map(_quote, names))}) "
                f"VALUES ({', '.join([self.placeholder] * len(names))}) "
                f"ON CONFLICT ({', '.join(map(_quote, key))}) {action}"
            )
        return sql

    def check_key(self, table: str, key: tuple[str, ...]) -> None:
        if self.columns is None:
            return
        missing = [name for name in key if name not in self.columns]
        if missing:
            raise StoreError(
                f"table {table!r} has no key column(s) {missing}; pass key= naming the "
                "columns of its primary key or of a unique constraint"
            )

    def create_sql(self, table: str, columns: list[tuple[str, str]], key: tuple[str, ...]) -> str:
        definitions = [f"{_quote(name)} {sql_type}".rstrip() for name, sql_type in columns]
        definitions.append(f"PRIMARY KEY ({', '.join(map(_quote, key))})")
        return f"CREATE TABLE IF NOT EXISTS {_quote(table)} ({', '.join(definitions)})"

    def describe(self, table: str) -> set[str] | None:
        raise NotImplementedError

    def create(self, table: str, columns: list[tuple[str, str]], key: tuple[str, ...]) -> None:
        raise NotImplementedError

    def transact(self, rows: list[Row], table: str, key: tuple[str, ...]) -> None:
        raise NotImplementedError

    def type_of(self, value: object) -> str:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


def _groups(rows: list[Row]) -> dict[tuple[str, ...], list[tuple[Any, ...]]]:
    grouped: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
    for names, values in rows:
        grouped.setdefault(names, []).append(values)
    return grouped


class _SQLite(_Database):
    errors = (sqlite3.Error,)
    placeholder = "?"
    default_type = ""

    def __init__(self, file: str) -> None:
        super().__init__()
        self.path = Path(file).absolute()
        if not self.path.parent.is_dir():
            raise StoreError(
                f"cannot open the SQLite database {self.path}: "
                f"directory {self.path.parent} does not exist"
            )
        try:
            self._connection = sqlite3.connect(
                self.path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
            self._connection.execute("PRAGMA journal_mode = WAL")
            self._connection.execute("PRAGMA synchronous = FULL")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the SQLite database {self.path}: {exc}") from exc

    def describe(self, table: str) -> set[str] | None:
        schema, _, name = table.rpartition(".")
        pragma = f"PRAGMA {_quote(schema)}.table_info" if schema else "PRAGMA table_info"
        try:
            rows = self._connection.execute(f"{pragma}({_quote(name)})").fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read table {table!r} in {self.path}: {exc}") from exc
        return {row[1] for row in rows} or None

    def create(self, table: str, columns: list[tuple[str, str]], key: tuple[str, ...]) -> None:
        try:
            self._connection.execute(self.create_sql(table, columns, key))
        except sqlite3.Error as exc:
            raise StoreError(f"cannot create table {table!r} in {self.path}: {exc}") from exc

    def transact(self, rows: list[Row], table: str, key: tuple[str, ...]) -> None:
        connection = self._connection
        connection.execute("BEGIN IMMEDIATE")
        try:
            for names, values in _groups(rows).items():
                sql = self.statement(table, key, names)
                connection.executemany(sql, [tuple(map(_sqlite_value, v)) for v in values])
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise

    def type_of(self, value: object) -> str:
        if isinstance(value, bool | int):
            return "INTEGER"
        if isinstance(value, float):
            return "REAL"
        if isinstance(value, bytes):
            return "BLOB"
        return "TEXT"

    def close(self) -> None:
        self._connection.close()


def _sqlite_value(value: Any) -> Any:
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, Decimal | uuid.UUID):
        return str(value)
    return value


class _Postgres(_Database):
    placeholder = "%s"
    default_type = "TEXT"

    def __init__(self, url: str) -> None:
        super().__init__()
        try:
            import psycopg
            from psycopg.types.json import Jsonb
        except ImportError as exc:
            raise ImportError(
                "Upsert into PostgreSQL needs psycopg 3: pip install 'flowgraph[postgres]'"
            ) from exc
        self._psycopg = psycopg
        self._jsonb: Callable[[Any], Any] = Jsonb
        self.errors = (psycopg.Error,)
        self._url = url
        self._connection = self._connect()

    def _connect(self) -> Any:
        from psycopg.conninfo import conninfo_to_dict

        options: dict[str, Any] = (
            {} if "connect_timeout" in conninfo_to_dict(self._url) else {"connect_timeout": 10}
        )
        try:
            return self._psycopg.connect(self._url, autocommit=True, **options)
        except self._psycopg.Error as exc:
            raise StoreError(f"cannot connect to PostgreSQL for Upsert: {exc}") from exc

    def _cursor(self) -> Any:
        if self._connection.broken or self._connection.closed:
            self._connection.close()
            self._connection = self._connect()
        return self._connection.cursor()

    def describe(self, table: str) -> set[str] | None:
        try:
            with self._cursor() as cursor:
                cursor.execute(
                    "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s)"
                    " AND attnum > 0 AND NOT attisdropped",
                    (_quote(table),),
                )
                return {row[0] for row in cursor.fetchall()} or None
        except self._psycopg.Error as exc:
            raise StoreError(f"cannot read table {table!r}: {describe_error(exc)}") from exc

    def create(self, table: str, columns: list[tuple[str, str]], key: tuple[str, ...]) -> None:
        try:
            with self._cursor() as cursor, self._connection.transaction():
                cursor.execute(
                    "SELECT pg_advisory_xact_lock(%s::int, hashtext(%s))", (_LOCK_CLASS, table)
                )
                cursor.execute(self.create_sql(table, columns, key))
        except self._psycopg.Error as exc:
            raise StoreError(f"cannot create table {table!r}: {describe_error(exc)}") from exc

    def transact(self, rows: list[Row], table: str, key: tuple[str, ...]) -> None:
        with self._cursor() as cursor, self._connection.transaction():
            for names, values in _groups(rows).items():
                sql = self.statement(table, key, names)
                cursor.executemany(sql, [tuple(map(self._value, v)) for v in values])

    def _value(self, value: Any) -> Any:
        return self._jsonb(value) if isinstance(value, dict | list) else value

    def type_of(self, value: object) -> str:
        if isinstance(value, bool):
            return "BOOLEAN"
        if isinstance(value, int):
            return "BIGINT"
        if isinstance(value, float):
            return "DOUBLE PRECISION"
        if isinstance(value, bytes):
            return "BYTEA"
        if isinstance(value, dict | list):
            return "JSONB"
        if isinstance(value, dt.datetime):
            return "TIMESTAMPTZ" if value.tzinfo is not None else "TIMESTAMP"
        if isinstance(value, dt.date):
            return "DATE"
        if isinstance(value, Decimal):
            return "NUMERIC"
        if isinstance(value, uuid.UUID):
            return "UUID"
        return "TEXT"

    def close(self) -> None:
        self._connection.close()
