"""Upsert's SQLite dialect: a file in WAL mode, names quoted SQLite's way, values it keeps.

SQLite has no JSON, date or decimal types: dicts and lists are stored as strict
JSON text, dates and times as ISO 8601 text, decimals and UUIDs as their exact
text. A float NaN is refused, because SQLite would store it as NULL.
"""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._core._exceptions import StoreError
from .._stores._connect import connect_sqlite
from ._database import Database, groups
from ._names import sqlite_quote, table_label
from ._values import BadValue, strict_json, text_value

if TYPE_CHECKING:
    from ._database import Row
    from ._names import Table


_STORED_AS_IS = frozenset({str, int, bool, bytes, type(None)})


class SQLiteTable(Database):
    """Upsert's connection to one SQLite file."""

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
            self._connection = connect_sqlite(self.path)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the SQLite database {self.path}: {exc}") from exc

    def quote(self, name: str) -> str:
        return sqlite_quote(name)

    def columns_of(self, table: Table) -> set[str] | None:
        *schema, name = table
        pragma = f"PRAGMA {sqlite_quote(schema[0])}.table_info" if schema else "PRAGMA table_info"
        try:
            rows = self._connection.execute(f"{pragma}({sqlite_quote(name)})").fetchall()
        except sqlite3.Error as exc:
            raise StoreError(
                f"cannot read table {table_label(table)} in {self.path}: {exc}"
            ) from exc
        return {row[1] for row in rows} or None

    def create(self, table: Table, columns: list[tuple[str, str]], key: tuple[str, ...]) -> None:
        try:
            self._connection.execute(self.create_sql(table, columns, key))
        except sqlite3.Error as exc:
            raise StoreError(
                f"cannot create table {table_label(table)} in {self.path}: {exc}"
            ) from exc

    def transact(self, rows: list[Row], table: Table, key: tuple[str, ...]) -> None:
        connection = self._connection
        connection.execute("BEGIN IMMEDIATE")
        try:
            for names, values in groups(rows).items():
                connection.executemany(self.statement(table, key, names), values)
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise

    def encode(self, names: tuple[str, ...], values: tuple[Any, ...]) -> tuple[Any, ...]:
        for value in values:
            kind = type(value)
            if kind not in _STORED_AS_IS and not (kind is float and value == value):
                return tuple(map(_value, names, values))
        return values

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


def _value(name: str, value: Any) -> Any:
    if isinstance(value, str | int | bytes) or value is None:
        return value
    if isinstance(value, float):
        if math.isnan(value):
            raise BadValue(name, "is NaN, which SQLite would store as NULL")
        return value
    if isinstance(value, dict | list):
        return strict_json(name, value)
    return text_value(value)
