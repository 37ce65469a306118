"""What Upsert needs from a database, and the SQL both dialects share.

Each dialect quotes names its own way (:meth:`Database.quote`); the statements
are built here from quoted names only, so no name is ever interpolated raw.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._core._exceptions import StoreError
from ._names import table_label

if TYPE_CHECKING:
    from ._names import Table

Row = tuple[tuple[str, ...], tuple[Any, ...]]
"""One row to write: its column names and their values, in the same order."""


class Database:
    """One connection to a SQLite or PostgreSQL database, used from one thread at a time."""

    default_type: str
    placeholder = "?"
    columns: set[str] | None = None
    """The table's columns once known (read at open, or after creating it)."""

    def __init__(self) -> None:
        self._statements: dict[tuple[str, ...], str] = {}

    # -- dialect -----------------------------------------------------------------------

    def quote(self, name: str) -> str:
        raise NotImplementedError

    def columns_of(self, table: Table) -> set[str] | None:
        """The table's column names, or ``None`` if it does not exist."""
        raise NotImplementedError

    def create(self, table: Table, columns: list[tuple[str, str]], key: tuple[str, ...]) -> None:
        raise NotImplementedError

    def transact(self, rows: list[Row], table: Table, key: tuple[str, ...]) -> None:
        """Write encoded *rows* in one transaction: all of them, or none."""
        raise NotImplementedError

    def encode(self, names: tuple[str, ...], values: tuple[Any, ...]) -> tuple[Any, ...]:
        """*values* as the driver takes them; raises ``BadValue`` for one it cannot store."""
        raise NotImplementedError

    def type_of(self, value: object) -> str:
        """The SQL type of a column created for *value*."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    # -- shared ------------------------------------------------------------------------

    def quote_table(self, table: Table) -> str:
        return ".".join(map(self.quote, table))

    def statement(self, table: Table, key: tuple[str, ...], names: tuple[str, ...]) -> str:
        """``INSERT ... ON CONFLICT (key) DO UPDATE`` for rows with columns *names*."""
        sql = self._statements.get(names)
        if sql is None:
            quote = self.quote
            updates = [f"{quote(n)} = excluded.{quote(n)}" for n in names if n not in key]
            action = f"DO UPDATE SET {', '.join(updates)}" if updates else "DO NOTHING"
            placeholders = ", ".join([self.placeholder] * len(names))
            sql = self._statements[names] = (
                f"INSERT INTO {self.quote_table(table)} ({', '.join(map(quote, names))}) "
                f"VALUES ({placeholders}) ON CONFLICT ({', '.join(map(quote, key))}) {action}"
            )
        return sql

    def create_sql(self, table: Table, columns: list[tuple[str, str]], key: tuple[str, ...]) -> str:
        definitions = [f"{self.quote(name)} {sql_type}".rstrip() for name, sql_type in columns]
        definitions.append(f"PRIMARY KEY ({', '.join(map(self.quote, key))})")
        return f"CREATE TABLE IF NOT EXISTS {self.quote_table(table)} ({', '.join(definitions)})"

    def check_key(self, table: Table, key: tuple[str, ...]) -> None:
        if self.columns is None:
            return
        missing = [name for name in key if name not in self.columns]
        if missing:
            raise StoreError(
                f"table {table_label(table)} has no key column(s) {missing}; pass key= naming "
                "the columns of its primary key or of a unique constraint"
            )


def groups(rows: list[Row]) -> dict[tuple[str, ...], list[tuple[Any, ...]]]:
    """*rows* grouped by their column names, in order: one statement per group."""
    grouped: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
    for names, values in rows:
        grouped.setdefault(names, []).append(values)
    return grouped
