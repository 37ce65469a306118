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

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, final

from .._core._exceptions import GraphError, StoreError, describe_error, describe_item
from .._stores import parse_store_url
from ._group import Call, GroupedSink
from ._names import (
    check_columns,
    check_sql_type,
    check_table,
    column_list,
    name_problem,
    table_label,
)
from ._values import BadValue, item_error

if TYPE_CHECKING:
    import os

    from ._database import Database, Row

__all__ = ["Upsert"]

_NAMED_LIMIT = 1024  # distinct column tuples remembered as checked


@final
class Upsert(GroupedSink["Database"]):
    """A sink that upserts dict items into a table by key: replays leave one row per key.

    ``graph.sink(fg.Upsert("sqlite:///data.db", "events", key="id"), workers=4)``.
    Each item is a mapping from column names to values, or a list of them (a
    batch), written in one transaction with ``executemany``. A call returns
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
    unique constraint on exactly the *key* columns. Table and column names are
    always quoted, so any name works, spaces, quotes and capitals included.

    A row sets the columns its item has: on conflict those are updated and the
    others keep their values. With *columns*, only those keys of each item are
    written and other keys are ignored; without, every key must be a column.

    Cancellation: a call cancelled while its rows wait is withdrawn; once its
    transaction has started it runs to the end, so it commits entirely or not at
    all. Errors: an item that is not a mapping, lacks a key column, has a key
    that is not a column, or holds a value the database cannot store faithfully
    (NaN or a set inside a dict written as JSON; NaN in SQLite, which would
    store NULL) raises ``ValueError`` (or ``TypeError``); a database error
    raises ``StoreError``; both name the item, so ``on_error=`` can skip or
    dead-letter it. Calls grouped in one transaction that fails are retried one
    by one, so one bad item never fails the others. Backpressure: calls wait
    for the connection.

    Args:
        url: ``sqlite:///path.db``, a file path, or ``postgresql://...``.
        table: ``"name"``, ``"schema.name"``, or ``("schema", "name")`` for
            names holding a dot.
        key: the column, or columns, identifying a row.
        columns: the columns to write, or a mapping of columns to SQL types
            (``{"id": "BIGINT", "body": "JSONB"}``) used when creating the table.

    Raises:
        GraphError: if a name is empty or one the database would change (over
            63 bytes in PostgreSQL), a key column is not in *columns*, a SQL
            type is malformed, or the URL is not a database URL.

    Added in 0.1.
    """

    def __init__(
        self,
        url: str | os.PathLike[str],
        table: str | tuple[str, str],
        *,
        key: str | Sequence[str] = "id",
        columns: Sequence[str] | Mapping[str, str] | None = None,
    ) -> None:
        try:
            self._kind, self._target = parse_store_url(url)
        except ValueError as exc:
            raise GraphError(f"Upsert needs a database URL: {exc}") from None
        self._table = check_table(table, self._kind)
        keys = check_columns("key column", key, self._kind)
        types: dict[str, str] = {}
        if columns is not None:
            names = column_list(columns, self._kind)
            if isinstance(columns, Mapping):
                types = {name: check_sql_type(name, columns[name]) for name in names}
            missing = [name for name in keys if name not in names]
            if missing:
                raise GraphError(f"key column(s) {missing} must be among columns= {list(names)}")
        super().__init__()
        self.url = url
        self.table = table
        self.key = keys
        self.columns: tuple[str, ...] | None = None if columns is None else tuple(columns)
        self.__name__ = f"upsert_{'_'.join(self._table)}"
        self._types = types
        self._named: set[tuple[str, ...]] = set()  # column tuples of items, already checked

    def __repr__(self) -> str:
        key = self.key[0] if len(self.key) == 1 else self.key
        columns = "" if self.columns is None else f", columns={self._types or list(self.columns)!r}"
        return f"Upsert({self.url!r}, {self.table!r}, key={key!r}{columns})"

    def _label(self) -> str:
        return f"Upsert into {table_label(self._table)}"

    async def __call__(self, item: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> None:
        """Upsert *item* (a mapping, or a sequence of mappings in one transaction)."""
        group = self._opened()
        await group.submit(item, self._rows(item), self._flush)

    # -- preparing rows, on the event loop -------------------------------------------------

    def _rows(self, item: Any) -> list[Row]:
        if isinstance(item, Mapping):
            return [self._row(item, item)]
        if isinstance(item, Sequence) and not isinstance(item, str | bytes):
            return [self._row(each, item) for each in item]
        raise TypeError(
            f"Upsert into {table_label(self._table)} takes a mapping of columns to values, "
            f"or a list of them (got {describe_item(item)})"
        )

    def _row(self, row: Any, item: Any) -> Row:
        if type(row) is not dict and not isinstance(row, Mapping):
            raise TypeError(
                f"Upsert into {table_label(self._table)} takes mappings of columns to values "
                f"(got {describe_item(row)} in {describe_item(item)})"
            )
        for name in self.key:
            if row.get(name) is None:
                problem = "has no key" if name not in row else "has None as key"
                raise ValueError(
                    f"item {describe_item(item)} {problem} column {name!r} "
                    f"for table {table_label(self._table)}"
                )
        if self.columns is not None:
            names = tuple(name for name in self.columns if name in row)
        else:
            names = tuple(row)
            if names not in self._named:
                self._check_names(names, item)
        return names, tuple(map(row.__getitem__, names))

    def _check_names(self, names: tuple[Any, ...], item: Any) -> None:
        for name in names:
            bad = name_problem(name, self._kind)
            if bad is not None:
                raise ValueError(
                    f"item {describe_item(item)} has key {name!r}, which cannot be a "
                    f"column of table {table_label(self._table)}: it {bad}"
                )
        if len(self._named) >= _NAMED_LIMIT:
            self._named.clear()
        self._named.add(names)

    # -- database work, in the worker thread -----------------------------------------------

    def _open(self) -> Database:
        db: Database
        if self._kind == "postgres":
            from ._postgres import PostgresTable

            db = PostgresTable(self._target)
        else:
            from ._sqlite import SQLiteTable

            db = SQLiteTable(self._target)
        try:
            db.columns = db.columns_of(self._table)
            if db.columns is None and self._types:
                db.create(self._table, list(self._types.items()), self.key)
                db.columns = db.columns_of(self._table)
            db.check_key(self._table, self.key)
        except BaseException:
            db.close()
            raise
        return db

    def _flush(self, writes: list[Call]) -> None:
        """Write every call's rows; record on each call whether it committed, or its error."""
        try:
            self._write_all(writes)
        except Exception as exc:
            for write in writes:
                if not write.done and write.error is None:
                    write.error = self._error(write, exc)

    def _write_all(self, writes: list[Call]) -> None:
        db = self._open_connection
        if db.columns is None and any(write.work for write in writes):
            db.create(self._table, self._inferred_columns(db, writes), self.key)
            db.columns = db.columns_of(self._table)
            db.check_key(self._table, self.key)
        ready: list[tuple[Call, list[Row]]] = []
        for write in writes:
            try:
                ready.append((write, self._encoded(db, write)))
            except ValueError as exc:
                write.error = exc
        if not ready:
            return
        try:
            db.transact([row for _, rows in ready for row in rows], self._table, self.key)
        except Exception as exc:
            if len(ready) == 1:
                ready[0][0].error = self._error(ready[0][0], exc)
                return
            # One bad item must not fail the others, whatever the driver raised:
            # retry them one transaction each.
            for write, rows in ready:
                try:
                    db.transact(rows, self._table, self.key)
                except Exception as single:
                    write.error = self._error(write, single)
                else:
                    write.done = True
        else:
            for write, _ in ready:
                write.done = True

    def _encoded(self, db: Database, write: Call) -> list[Row]:
        """The call's rows as the driver takes them; a ValueError naming the item if not."""
        known = db.columns or set()
        unknown = sorted({name for names, _ in write.work for name in names} - known)
        if unknown:
            raise ValueError(
                f"item {describe_item(write.item)} has key(s) {unknown} that are not "
                f"columns of table {table_label(self._table)}; add them to the table, or pass "
                "columns= to write only some keys"
            )
        try:
            return [(names, db.encode(names, values)) for names, values in write.work]
        except BadValue as exc:
            raise item_error(write.item, f"table {table_label(self._table)}", exc) from None

    def _error(self, write: Call, exc: BaseException) -> StoreError:
        if isinstance(exc, StoreError):
            return StoreError(f"{exc} (while writing item {describe_item(write.item)})")
        error = StoreError(
            f"upsert into {table_label(self._table)} failed on item {describe_item(write.item)}: "
            f"{describe_error(exc)}"
        )
        error.__cause__ = exc
        return error

    def _inferred_columns(self, db: Database, writes: list[Call]) -> list[tuple[str, str]]:
        found: dict[str, str | None] = dict.fromkeys(self.columns or ())
        for write in writes:
            for names, values in write.work:
                for name, value in zip(names, values, strict=True):
                    if found.get(name) is None:
                        found[name] = None if value is None else db.type_of(value)
        return [
            (name, self._types.get(name) or sql_type or db.default_type)
            for name, sql_type in found.items()
        ]
