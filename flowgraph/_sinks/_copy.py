"""Bulk loads into PostgreSQL with COPY: the fastest way rows get into a table.

Each call is one transaction: the call's rows are streamed with psycopg 3's
``cursor.copy`` (text format), then committed. With a key, the rows go to a
temporary staging table first and are merged into the target with
``INSERT ... ON CONFLICT (key) DO UPDATE`` in the same transaction, so a
replayed batch rewrites its rows instead of duplicating them.

Every name is composed with psycopg's ``sql.Identifier``; nothing is formatted
into SQL as text.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, final

from .._core._exceptions import GraphError, StoreError, describe_error, describe_item
from .._stores import parse_store_url
from ._group import Call, GroupedSink
from ._names import check_columns, check_table, column_list, table_label
from ._values import BadValue, item_error, strict_json

if TYPE_CHECKING:
    from collections.abc import Callable

    from psycopg import sql

    from ._postgres import PostgresLink

__all__ = ["CopyInto"]

_JSON_TYPES = frozenset({"json", "jsonb"})

# The key columns of the table's unique indexes (INCLUDE columns left out).
_UNIQUE_KEYS = """
SELECT (SELECT array_agg(a.attname::text) FROM pg_attribute a
        WHERE a.attrelid = i.indrelid
          AND a.attnum = ANY ((i.indkey::int2[])[0:i.indnkeyatts - 1]))
FROM pg_index i
WHERE i.indrelid = to_regclass(%s) AND i.indisunique AND i.indpred IS NULL
  AND i.indexprs IS NULL
"""


@final
class CopyInto(GroupedSink["PostgresLink"]):
    """A sink that loads rows into an existing PostgreSQL table with COPY.

    ``graph.sink(fg.CopyInto("postgresql://...", "events", columns=["id", "body"]))``.
    Each item is a row (a mapping from column names to values) or a batch (a
    list of rows); a call loads its rows in one transaction and returns once
    it has committed. Every row gives a value for each of *columns* (``None``
    for NULL); other keys are ignored. Dicts and lists in ``json``/``jsonb``
    columns are written as strict JSON (NaN refused).

    Delivery: without *key*, **at least once**. A batch replayed after a crash
    (its commit happened, its acknowledgement did not) is loaded again, so the
    table can hold duplicates of the rows in flight at the crash. With *key*,
    **exactly once** in effect: the rows are copied into a temporary staging
    table, then merged with ``INSERT ... ON CONFLICT (key) DO UPDATE`` in the
    same transaction, so a replay rewrites the same rows; within one batch the
    last row for a key wins. The table needs a primary key or unique
    constraint on exactly the *key* columns (checked when the sink opens).

    One connection per run (sync psycopg in a worker thread, because psycopg's
    async API runs on asyncio only). With several workers on the sink, the
    calls that arrive while a load runs go to the thread together, each still
    in its own transaction. A run opens the sink for its duration; it can also
    be used with ``async with``.

    Cancellation: once a call's transaction has started it runs to the end,
    committing all its rows or none. Errors: a batch that fails fails as a
    batch (``StoreError`` for the database, ``ValueError`` or ``TypeError``
    for a row that is not a mapping, lacks a column or holds a value JSON
    cannot represent), naming the item, so the node's ``retry=`` and
    ``on_error=`` apply to the whole batch. A broken connection is reopened on
    the next call. Backpressure: calls wait for the connection.

    Args:
        url: ``postgresql://...`` (needs the ``postgres`` extra).
        table: ``"name"``, ``"schema.name"``, or ``("schema", "name")``.
        columns: the columns to load, in COPY's order; names are quoted, so
            spaces, quotes and capitals are kept as they are.
        key: the column, or columns, identifying a row: loads become upserts.

    Raises:
        GraphError: if the URL is not PostgreSQL's, a name is empty or over 63
            bytes, *columns* is empty or repeats a name, or a key column is not
            among *columns*.

    Added in 0.2.
    """

    def __init__(
        self,
        url: str,
        table: str | tuple[str, str],
        *,
        columns: Sequence[str],
        key: str | Sequence[str] | None = None,
    ) -> None:
        try:
            kind, _ = parse_store_url(url)
        except ValueError as exc:
            raise GraphError(f"CopyInto needs a postgresql:// URL: {exc}") from None
        if kind != "postgres":
            raise GraphError(f"CopyInto needs a postgresql:// URL (got {url!r})")
        self._table = check_table(table, "postgres")
        self.columns = column_list(columns, "postgres")
        self.key = None if key is None else check_columns("key column", key, "postgres")
        if self.key is not None:
            missing = [name for name in self.key if name not in self.columns]
            if missing:
                raise GraphError(
                    f"key column(s) {missing} must be among columns= {list(self.columns)}"
                )
        super().__init__()
        self.url = url
        self.table = table
        self.__name__ = f"copy_{'_'.join(self._table)}"
        self._row = _getter(self.columns)
        self._json: tuple[int, ...] = ()
        self._statements: dict[str, sql.Composed] = {}
        self._staged_on: object = None

    def __repr__(self) -> str:
        key = ""
        if self.key is not None:
            key = f", key={(self.key[0] if len(self.key) == 1 else self.key)!r}"
        return f"CopyInto({self.url!r}, {self.table!r}, columns={list(self.columns)!r}{key})"

    def _label(self) -> str:
        return f"CopyInto {table_label(self._table)}"

    async def __call__(self, item: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> None:
        """Load *item* (a row, or a list of rows) in one transaction."""
        group = self._opened()
        rows = self._rows(item)
        if rows:
            await group.submit(item, rows, self._load_each)

    def _rows(self, item: Any) -> Sequence[Any]:
        if isinstance(item, Mapping):
            return (item,)
        if isinstance(item, Sequence) and not isinstance(item, str | bytes):
            return item
        raise TypeError(
            f"CopyInto {table_label(self._table)} takes a mapping of columns to values, "
            f"or a list of them (got {describe_item(item)})"
        )

    # -- in the worker thread ------------------------------------------------------------------

    def _open(self) -> PostgresLink:
        from ._postgres import PostgresLink

        link = PostgresLink(self.url, "CopyInto")
        try:
            self._check_table(link)
            self._statements = self._compose()
        except BaseException:
            link.close()
            raise
        return link

    def _check_table(self, link: PostgresLink) -> None:
        label = table_label(self._table)
        types = link.columns(self._table)
        if types is None:
            raise StoreError(f"table {label} does not exist; CopyInto loads an existing table")
        missing = [name for name in self.columns if name not in types]
        if missing:
            raise StoreError(f"table {label} has no column(s) {missing}")
        self._json = tuple(
            index for index, name in enumerate(self.columns) if types[name] in _JSON_TYPES
        )
        if self.key is None:
            return
        with link.cursor() as cursor:
            cursor.execute(_UNIQUE_KEYS, (link.identifier(*self._table),))
            unique = [set(row[0] or ()) for row in cursor.fetchall()]
        if set(self.key) not in unique:
            raise StoreError(
                f"table {label} has no primary key or unique constraint on exactly "
                f"{list(self.key)}, which key= needs for ON CONFLICT"
            )

    def _compose(self) -> dict[str, sql.Composed]:
        from psycopg import sql

        table = sql.Identifier(*self._table)
        columns = sql.SQL(", ").join(map(sql.Identifier, self.columns))
        statements = {"copy": sql.SQL("COPY {} ({}) FROM STDIN").format(table, columns)}
        if self.key is None:
            return statements
        stage = sql.Identifier("flowgraph_copy_stage")
        order = sql.Identifier(_unused("flowgraph_copy_order", self.columns))
        key = sql.SQL(", ").join(map(sql.Identifier, self.key))
        updates = [
            sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(name))
            for name in self.columns
            if name not in self.key
        ]
        action = (
            sql.SQL("DO UPDATE SET {}").format(sql.SQL(", ").join(updates))
            if updates
            else sql.SQL("DO NOTHING")
        )
        statements["stage"] = sql.SQL(
            "CREATE TEMPORARY TABLE IF NOT EXISTS {stage} ON COMMIT DELETE ROWS AS "
            "SELECT {columns} FROM {table} WITH NO DATA; "
            "ALTER TABLE {stage} ADD COLUMN IF NOT EXISTS {order} "
            "BIGINT GENERATED ALWAYS AS IDENTITY"
        ).format(stage=stage, columns=columns, table=table, order=order)
        statements["copy"] = sql.SQL("COPY {} ({}) FROM STDIN").format(stage, columns)
        # The last row of a batch wins for each key, as it would row by row.
        statements["merge"] = sql.SQL(
            "INSERT INTO {table} ({columns}) SELECT DISTINCT ON ({key}) {columns} "
            "FROM {stage} ORDER BY {key}, {order} DESC ON CONFLICT ({key}) {action}"
        ).format(table=table, columns=columns, key=key, stage=stage, order=order, action=action)
        return statements

    def _load_each(self, calls: list[Call]) -> None:
        """Load each call's rows in a transaction of its own: a batch fails alone."""
        for call in calls:
            try:
                self._load(call.item, call.work)
            except Exception as exc:
                call.error = exc
            else:
                call.done = True

    def _load(self, item: Any, rows: Sequence[Any]) -> None:
        import psycopg

        link = self._open_connection
        try:
            with link.cursor() as cursor:
                if self.key is not None and self._staged_on is not link.connection:
                    cursor.execute(self._statements["stage"])
                    self._staged_on = link.connection
                with link.connection.transaction():
                    with cursor.copy(self._statements["copy"]) as copy:
                        self._write(copy.write_row, item, rows)
                    if self.key is not None:
                        cursor.execute(self._statements["merge"])
        except psycopg.Error as exc:
            raise StoreError(
                f"COPY into {table_label(self._table)} failed on item {describe_item(item)}: "
                f"{describe_error(exc)}"
            ) from exc

    def _write(
        self, write: Callable[[Sequence[Any]], None], item: Any, rows: Sequence[Any]
    ) -> None:
        get, json = self._row, self._json
        try:
            if not json:
                for row in rows:
                    write(get(row))
                return
            for row in rows:
                values = list(get(row))
                for index in json:
                    value = values[index]
                    if isinstance(value, dict | list):
                        values[index] = strict_json(self.columns[index], value)
                write(values)
        except BadValue as exc:
            raise item_error(item, f"table {table_label(self._table)}", exc) from None
        except (KeyError, TypeError):
            bad = self._bad_row(item, rows)
            if bad is None:
                raise
            raise bad from None

    def _bad_row(self, item: Any, rows: Sequence[Any]) -> Exception | None:
        """The error for the first row that is not a mapping or lacks a column, if any."""
        for index, row in enumerate(rows):
            where = f"row {index} of item {describe_item(item)}"
            if not isinstance(row, Mapping):
                return TypeError(f"{where} is not a mapping of columns to values")
            missing = [name for name in self.columns if name not in row]
            if missing:
                return ValueError(
                    f"{where} has no column(s) {missing} for table {table_label(self._table)}; "
                    "give every column a value (None for NULL)"
                )
        return None


def _getter(columns: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    """A fast ``row -> tuple of its values for columns``."""
    if len(columns) == 1:
        (name,) = columns
        return lambda row: (row[name],)
    return operator.itemgetter(*columns)


def _unused(name: str, taken: tuple[str, ...]) -> str:
    while name in taken:
        name += "_"
    return name
