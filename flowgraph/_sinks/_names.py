"""Table and column names: checked when a sink is declared, quoted whenever SQL is built.

Any name is allowed, spaces, quotes, semicolons and capitals included, because
a name never reaches SQL unquoted: PostgreSQL statements are composed with
psycopg's ``sql.Identifier``, SQLite's with :func:`sqlite_quote`. What is
refused is what a database would silently change: an empty name, a NUL
character, and in PostgreSQL a name over 63 bytes (the server would truncate
it and write to another table or column than the one named).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal

from .._core._exceptions import GraphError

Dialect = Literal["sqlite", "postgres"]

Table = tuple[str, ...]
"""A table name as its parts: ``("name",)`` or ``("schema", "name")``."""

POSTGRES_NAME_BYTES = 63

_SQL_TYPE = re.compile(r"[A-Za-z][A-Za-z0-9_ ]*(\([0-9, ]+\))?(\[\])?")


def name_problem(name: object, dialect: Dialect) -> str | None:
    """Why *name* cannot be a table or column name in *dialect*, or ``None`` if it can."""
    if not isinstance(name, str):
        return f"must be a string (got {type(name).__name__})"
    if not name:
        return "is empty"
    if "\0" in name:
        return "contains a NUL character"
    if dialect == "postgres" and len(name.encode()) > POSTGRES_NAME_BYTES:
        return (
            f"is longer than {POSTGRES_NAME_BYTES} bytes, and PostgreSQL would truncate it "
            "to another name"
        )
    return None


def check_name(what: str, name: object, dialect: Dialect) -> str:
    """Return *name* if it can name a table or column; raise ``GraphError`` naming *what*."""
    problem = name_problem(name, dialect)
    if problem is not None:
        raise GraphError(f"{what} {name!r} {problem}")
    assert isinstance(name, str)
    return name


def check_table(table: object, dialect: Dialect) -> Table:
    """Split ``"name"``, ``"schema.name"`` or ``("schema", "name")`` into checked parts.

    A string is split at its first dot; a name that holds a dot is given as a
    tuple, which is taken as it is.
    """
    if isinstance(table, str):
        parts: tuple[object, ...] = tuple(table.split(".", 1))
    elif isinstance(table, tuple) and len(table) in (1, 2):
        parts = table
    else:
        raise GraphError(
            f"table must be 'name', 'schema.name' or a ('schema', 'name') tuple (got {table!r})"
        )
    what = ("schema", "table name") if len(parts) == 2 else ("table name",)
    return tuple(check_name(w, part, dialect) for w, part in zip(what, parts, strict=True))


def check_columns(what: str, names: object, dialect: Dialect) -> tuple[str, ...]:
    """Check one name, or each of a list of names; refuse an empty list and repeated names."""
    listed = names if isinstance(names, Iterable) and not isinstance(names, str) else [names]
    checked = tuple(check_name(what, name, dialect) for name in listed)
    if not checked:
        raise GraphError(f"{what}s must name at least one column")
    repeated = sorted({name for name in checked if checked.count(name) > 1})
    if repeated:
        raise GraphError(f"{what}s name {repeated} more than once")
    return checked


def column_list(columns: object, dialect: Dialect) -> tuple[str, ...]:
    """Check a ``columns=`` argument: a list of names (a lone string is a mistake, refused)."""
    if isinstance(columns, str):
        raise GraphError(f"columns must be a list of names (got {columns!r})")
    return check_columns("column", columns, dialect)


def check_sql_type(column: str, sql_type: object) -> str:
    """A column type for ``CREATE TABLE``: a type name, maybe with a size or ``[]``.

    Types cannot be quoted like names, so their shape is restricted instead.
    """
    if not isinstance(sql_type, str) or not _SQL_TYPE.fullmatch(sql_type):
        raise GraphError(f"SQL type of column {column!r} is malformed: {sql_type!r}")
    return sql_type


def sqlite_quote(name: str) -> str:
    """*name* as a SQLite identifier: in double quotes, its own double quotes doubled."""
    return '"' + name.replace('"', '""') + '"'


def table_label(table: Table) -> str:
    """The table as users wrote it, for messages: ``'raw.events'``."""
    return repr(".".join(table))
