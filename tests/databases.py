"""A plain DB-API connection to the database behind a ``sqlite:///`` or ``postgresql://`` URL."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def connect(url: str) -> Iterator[Any]:
    """Connect for the test's own reads and writes (PostgreSQL in autocommit mode)."""
    if url.startswith("sqlite:///"):
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as connection:
            yield connection
    else:
        import psycopg

        with psycopg.connect(url, autocommit=True) as connection:
            yield connection
