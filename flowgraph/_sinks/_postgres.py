"""The sinks' PostgreSQL connection, and Upsert's PostgreSQL dialect.

psycopg 3's sync API, in worker threads, because its async API runs on
asyncio only. Names are quoted by psycopg (``sql.Identifier``); dicts and
lists are sent as JSONB, encoded as strict JSON first so NaN is refused with
the item's name rather than rejected by the server for the whole group.
"""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from .._core._exceptions import StoreError, describe_error
from .._stores._connect import connect_postgres
from ._database import Database, groups
from ._names import table_label
from ._values import strict_json

if TYPE_CHECKING:
    import psycopg

    from ._database import Row
    from ._names import Table

_LOCK_CLASS = 0x666C6F77  # "flow": advisory lock class guarding table creation in PostgreSQL


def require_psycopg(user: str) -> None:
    """Import psycopg, or raise an ImportError naming the extra that installs it."""
    try:
        import psycopg  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"{user} needs psycopg 3: pip install 'flowgraph[postgres]'") from exc


class PostgresLink:
    """One sink's connection to PostgreSQL, reopened on the next use after it broke.

    After a server restart or a network cut, the call in progress fails with
    the driver's error and the next call reconnects, so the node's ``retry=``
    rides out an outage.
    """

    def __init__(self, url: str, user: str) -> None:
        require_psycopg(user)
        self.url = url
        self.user = user
        self.connection = self._connect()

    def _connect(self) -> psycopg.Connection[Any]:
        import psycopg

        try:
            return connect_postgres(self.url)
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to PostgreSQL for {self.user}: {exc}") from exc

    def cursor(self) -> psycopg.Cursor[Any]:
        if self.connection.broken or self.connection.closed:
            self.connection.close()
            self.connection = self._connect()
        return self.connection.cursor()

    def identifier(self, *parts: str) -> str:
        """The quoted name ``"a"."b"``, as psycopg's ``sql.Identifier`` writes it."""
        from psycopg import sql

        return sql.Identifier(*parts).as_string(self.connection)

    def columns(self, table: Table) -> dict[str, str] | None:
        """The table's columns and their types, or ``None`` if no such table is visible."""
        import psycopg

        try:
            with self.cursor() as cursor:
                cursor.execute(
                    "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
                    " WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped"
                    " ORDER BY attnum",
                    (self.identifier(*table),),
                )
                return dict(cursor.fetchall()) or None
        except psycopg.Error as exc:
            raise StoreError(
                f"cannot read table {table_label(table)}: {describe_error(exc)}"
            ) from exc

    def close(self) -> None:
        self.connection.close()


def _verbatim(text: Any) -> Any:
    """The JSON dumps of text already encoded by :func:`strict_json`."""
    return text


class PostgresTable(Database):
    """Upsert's connection to a PostgreSQL database."""

    placeholder = "%s"
    default_type = "TEXT"

    def __init__(self, url: str) -> None:
        super().__init__()
        self._link = PostgresLink(url, "Upsert into PostgreSQL")
        from psycopg.types.json import Jsonb

        self._jsonb = Jsonb

    def quote(self, name: str) -> str:
        return self._link.identifier(name)

    def columns_of(self, table: Table) -> set[str] | None:
        columns = self._link.columns(table)
        return None if columns is None else set(columns)

    def create(self, table: Table, columns: list[tuple[str, str]], key: tuple[str, ...]) -> None:
        import psycopg

        link = self._link
        try:
            with link.cursor() as cursor, link.connection.transaction():
                cursor.execute(
                    "SELECT pg_advisory_xact_lock(%s::int, hashtext(%s))",
                    (_LOCK_CLASS, self.quote_table(table)),
                )
                cursor.execute(self.create_sql(table, columns, key))
        except psycopg.Error as exc:
            raise StoreError(
                f"cannot create table {table_label(table)}: {describe_error(exc)}"
            ) from exc

    def transact(self, rows: list[Row], table: Table, key: tuple[str, ...]) -> None:
        link = self._link
        with link.cursor() as cursor, link.connection.transaction():
            for names, values in groups(rows).items():
                cursor.executemany(self.statement(table, key, names), values)

    def encode(self, names: tuple[str, ...], values: tuple[Any, ...]) -> tuple[Any, ...]:
        for value in values:
            if isinstance(value, dict | list):
                break
        else:
            return values
        jsonb = self._jsonb
        return tuple(
            jsonb(strict_json(name, value), _verbatim) if isinstance(value, dict | list) else value
            for name, value in zip(names, values, strict=True)
        )

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
        self._link.close()
