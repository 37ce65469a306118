"""The pipeline behind ``flowgraph demo``: a paged "API" ingested into SQLite, no network.

The graph reads every page of a simulated paginated API, parses and enriches
its records on several workers, stamps each record with a content digest in a
worker thread, and upserts each page's records into a SQLite table in one
transaction. Upserting by id makes a rerun idempotent, and a ``deliveries``
column counts how often one load wrote each row, so the check at the end proves
from the database alone that every record arrived exactly once.

:func:`build_graph` declares the pipeline; :func:`run_demo` runs and verifies it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import anyio.to_thread

import flowgraph as fg

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

PAGE_SIZE = 100
CITIES = ("Amsterdam", "Berlin", "Chicago", "Denver", "Edinburgh", "Fukuoka", "Guadalajara")
REGIONS = {
    "Amsterdam": "EU",
    "Berlin": "EU",
    "Chicago": "NA",
    "Denver": "NA",
    "Edinburgh": "EU",
    "Fukuoka": "APAC",
    "Guadalajara": "NA",
}

Row = dict[str, Any]

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    city TEXT NOT NULL,
    region TEXT NOT NULL,
    amount_cents INTEGER NOT NULL,
    digest TEXT NOT NULL,
    load_id TEXT NOT NULL,
    deliveries INTEGER NOT NULL
)
"""

# Invariant: after one load, each of its rows has deliveries = 1 unless the load wrote it twice.
UPSERT = """
INSERT INTO records (id, name, city, region, amount_cents, digest, load_id, deliveries)
VALUES (:id, :name, :city, :region, :amount_cents, :digest, :load_id, 1)
ON CONFLICT (id) DO UPDATE SET
    name = excluded.name,
    city = excluded.city,
    region = excluded.region,
    amount_cents = excluded.amount_cents,
    digest = excluded.digest,
    deliveries = CASE WHEN load_id = excluded.load_id THEN deliveries + 1 ELSE 1 END,
    load_id = excluded.load_id
"""


class DemoError(fg.FlowgraphError):
    """The demo's records did not all arrive in the database exactly once."""


@dataclass(frozen=True, slots=True)
class Page:
    """One response of the simulated API: a page number and its JSON body."""

    number: int
    body: bytes


@dataclass(frozen=True, slots=True)
class DemoReport:
    """What one demo run did, checked against the database.

    Attributes:
        result: the run's result, with per-node statistics.
        records: records of this load found in the table, each written exactly once.
        rows_in_db: rows in the table in all (earlier loads may have written more).
        db_path: the SQLite file.
        load_id: the id this load stamped on its rows.
    """

    result: fg.RunResult
    records: int
    rows_in_db: int
    db_path: Path
    load_id: str


def page_body(number: int, items: int, page_size: int = PAGE_SIZE) -> bytes:
    """Return the JSON body of page *number*: the records it holds, deterministically."""
    first = number * page_size
    records = [
        {
            "id": i,
            "name": f"brewery-{i:06d}",
            "city": CITIES[i % len(CITIES)],
            "amount_cents": (i * 7919) % 100_000,
        }
        for i in range(first, min(first + page_size, items))
    ]
    return json.dumps({"page": number, "records": records}).encode()


def build_graph(
    db_path: Path, *, items: int = 10_000, page_size: int = PAGE_SIZE, load_id: str = ""
) -> fg.Graph:
    """Declare the demo pipeline: ``pages -> parse -> stamp -> store`` into *db_path*.

    Args:
        db_path: SQLite file to upsert the records into; the table is created on demand.
        items: how many records the simulated API serves.
        page_size: records per page; each page is written in one transaction.
        load_id: stamped on every row, so a check can tell this load's rows apart.
    """
    graph = fg.Graph("demo")
    load_id = load_id or uuid.uuid4().hex

    @graph.source
    async def pages() -> AsyncIterator[Page]:
        for number in range(-(-items // page_size)):
            await anyio.lowlevel.checkpoint()  # where a real source awaits the network
            yield Page(number, page_body(number, items, page_size))

    @graph.transform(workers=4)
    async def parse(page: Page) -> list[Row]:
        payload = json.loads(page.body)
        return [
            {**record, "region": REGIONS[record["city"]], "load_id": load_id}
            for record in payload["records"]
        ]

    @graph.transform(workers=2)
    def stamp(rows: list[Row]) -> list[Row]:
        for row in rows:
            content = f"{row['id']}|{row['name']}|{row['city']}|{row['amount_cents']}"
            row["digest"] = hashlib.sha256(content.encode()).hexdigest()[:16]
        return rows

    @graph.sink
    async def store(rows: list[Row]) -> None:
        await anyio.to_thread.run_sync(write_rows, db_path, rows)

    graph.chain(pages, parse, stamp, store)
    return graph


def write_rows(db_path: Path, rows: list[Row]) -> None:
    """Upsert *rows* into *db_path* in one transaction, creating the table if needed."""
    with contextlib.closing(sqlite3.connect(db_path, timeout=30)) as conn, conn:
        conn.execute(SCHEMA)
        conn.executemany(UPSERT, rows)


def verify(db_path: Path, *, items: int, load_id: str) -> tuple[int, int]:
    """Check that ids ``0..items-1`` were each written exactly once by *load_id*.

    Returns:
        ``(records of this load, rows in the table)``.

    Raises:
        DemoError: describing what is missing or duplicated.
    """
    with contextlib.closing(sqlite3.connect(db_path, timeout=30)) as conn:
        conn.execute(SCHEMA)
        count, low, high, repeated = conn.execute(
            "SELECT COUNT(*), MIN(id), MAX(id), COUNT(*) FILTER (WHERE deliveries <> 1) "
            "FROM records WHERE load_id = ?",
            (load_id,),
        ).fetchone()
        (total,) = conn.execute("SELECT COUNT(*) FROM records").fetchone()
    # id is the primary key, so `items` rows within 0..items-1 are exactly those ids.
    if count != items or (count and (low, high) != (0, items - 1)):
        raise DemoError(
            f"expected records 0..{items - 1} in {str(db_path)!r}, found {count} "
            f"(ids {low}..{high})"
        )
    if repeated:
        raise DemoError(f"{repeated} records were written more than once in {str(db_path)!r}")
    return count, total


async def run_demo(db_path: Path, *, items: int = 10_000, page_size: int = PAGE_SIZE) -> DemoReport:
    """Run the demo pipeline into *db_path* in the current event loop, then verify the table.

    Raises:
        NodeError: if a node failed (for instance, the file cannot be opened).
        DemoError: if the table does not hold every record exactly once.
    """
    load_id = uuid.uuid4().hex
    graph = build_graph(db_path, items=items, page_size=page_size, load_id=load_id)
    result = await graph.run()
    records, total = await anyio.to_thread.run_sync(
        lambda: verify(db_path, items=items, load_id=load_id)
    )
    return DemoReport(result, records, total, db_path, load_id)


def main(db_path: Path, *, items: int = 10_000, backend: str = "asyncio") -> DemoReport:
    """Run :func:`run_demo` in a new event loop of *backend*."""
    return anyio.run(lambda: run_demo(db_path, items=items), backend=backend)
