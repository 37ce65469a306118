"""Sinks: where data lands. Upserts by key (SQLite, PostgreSQL), COPY into PostgreSQL."""

from ._copy import CopyInto
from ._upsert import Upsert

__all__ = ["CopyInto", "Upsert"]
