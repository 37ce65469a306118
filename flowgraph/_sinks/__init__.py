"""Sinks: where data lands. Upserts by key, COPY into PostgreSQL, files written atomically."""

from ._copy import CopyInto
from ._formats import CSV, JsonLines
from ._parquet import Parquet
from ._upsert import Upsert

__all__ = ["CSV", "CopyInto", "JsonLines", "Parquet", "Upsert"]
