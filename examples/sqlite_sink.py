"""Load rows into SQLite idempotently: batches upserted by key, one transaction each.

Running the pipeline twice leaves the table exactly as one run does, because
the sink upserts by primary key: that is what makes at-least-once delivery
exactly-once in the database.
"""

from __future__ import annotations

import contextlib
import sqlite3
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import flowgraph as fg

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

Row = tuple[int, str, float]


def build_graph(db_path: Path) -> fg.Graph:
    graph = fg.Graph("sqlite_sink")

    @graph.source
    async def batches() -> AsyncIterator[list[int]]:
        for start in range(0, 5_000, 500):
            yield list(range(start, start + 500))

    @graph.transform(workers=4)
    async def to_rows(ids: list[int]) -> list[Row]:
        return [(i, f"sensor-{i % 16}", i * 0.5) for i in ids]

    @graph.sink
    def upsert(rows: list[Row]) -> None:
        """Sync, so it runs in a worker thread; one connection and transaction per batch."""
        with contextlib.closing(sqlite3.connect(db_path)) as conn, conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS readings "
                "(id INTEGER PRIMARY KEY, sensor TEXT NOT NULL, value REAL NOT NULL)"
            )
            conn.executemany(
                "INSERT INTO readings (id, sensor, value) VALUES (?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET sensor = excluded.sensor, value = excluded.value",
                rows,
            )

    graph.chain(batches, to_rows, upsert)
    return graph


def count_rows(db_path: Path) -> int:
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        (count,) = conn.execute("SELECT COUNT(*) FROM readings").fetchone()
    return int(count)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db_path = Path(tmp) / "readings.db"
        graph = build_graph(db_path)
        for attempt in (1, 2):
            result = fg.run(graph)
            rows = count_rows(db_path)
            print(f"run {attempt}: {result.statistics['upsert'].items_in} batches, {rows} rows")
        assert rows == 5_000


if __name__ == "__main__":
    main()
