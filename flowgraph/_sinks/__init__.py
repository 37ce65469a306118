"""Sinks: where data lands. Upserts by key into SQLite or PostgreSQL."""

from ._upsert import Upsert

__all__ = ["Upsert"]
