"""The pipeline behind ``flowgraph demo``: a flaky, rate-limited HTTP API ingested into SQLite.

Everything runs in one process, with no network: the built-in
:class:`~flowgraph.testing.FakeAPI` serves the records (and refuses more than
:data:`SERVER_LIMIT` requests a second with 429s of its own), and a seeded
:class:`~flowgraph.testing.FlakyTransport` in front of it makes about a quarter
of the requests fail: connection errors, timeouts, 5xx, 429 with
``Retry-After``, bodies cut short or replaced by an HTML page. The pipeline
reads it with :mod:`flowgraph.http`:

``pages`` (asks for the first page, to learn how many there are) ->
``fetch`` (8 workers, ``Retry`` honouring ``Retry-After``, a client-side
``Rate`` under the server's limit) -> ``parse`` -> ``store`` (one SQLite
transaction per page, in a worker thread, upserting by id).

A ``deliveries`` column counts how often one load wrote each row, so the check
at the end proves from the database alone that every record arrived exactly
once. Time is real, and short: each retry waits what the server asked or a
backoff of at most a second, and waits overlap across the eight workers.

:func:`build_graph` declares the pipeline; :func:`run_demo` runs and verifies it.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import sqlite3
import sys
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
import httpx

import flowgraph as fg
from flowgraph.http import HTTPClient, fetch, is_transient
from flowgraph.testing import FakeAPI, FaultPlan, FlakyTransport, Latency

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping
    from pathlib import Path

SEED = 2024
"""The fault plan's seed: the same faults on every run of the demo."""
PAGE_SIZE = 100
SERVER_LIMIT = (50, 1.0)
"""FakeAPI answers 429 to requests beyond 50 in any second."""
CLIENT_RATE = fg.Rate(40, per=1.0)
"""What the fetch node allows itself, retries included: safely under the server's limit."""
BASE_URL = "http://api.demo"

FAULTS: dict[str, float] = {
    "connect_error": 0.03,
    "read_timeout": 0.04,
    "server_error": 0.08,
    "rate_limited": 0.05,
    "truncated_body": 0.03,
    "invalid_json": 0.02,
    "latency": 0.10,
}
"""Per request: 25% fail, 10% are slow (which is not a failure)."""

Row = dict[str, Any]

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    value INTEGER NOT NULL,
    digest TEXT NOT NULL,
    load_id TEXT NOT NULL,
    deliveries INTEGER NOT NULL
)
"""

# Invariant: after one load, each of its rows has deliveries = 1 unless the load wrote it twice.
UPSERT = """
INSERT INTO records (id, name, value, digest, load_id, deliveries)
VALUES (:id, :name, :value, :digest, :load_id, 1)
ON CONFLICT (id) DO UPDATE SET
    name = excluded.name,
    value = excluded.value,
    digest = excluded.digest,
    deliveries = CASE WHEN load_id = excluded.load_id THEN deliveries + 1 ELSE 1 END,
    load_id = excluded.load_id
"""


class DemoError(fg.FlowgraphError):
    """The demo's records did not all arrive in the database exactly once."""


@dataclass(frozen=True, slots=True)
class DemoReport:
    """What one demo run did, checked against the database.

    Attributes:
        result: the run's result, with per-node statistics.
        records: records of this load found in the table, each written exactly once.
        rows_in_db: rows in the table in all (earlier loads may have written more).
        db_path: the SQLite file.
        load_id: the id this load stamped on its rows.
        requests: HTTP requests the pipeline made, retries included.
        faults: faults injected, by kind.
        server_rate_limited: requests the fake API itself refused with a 429.
    """

    result: fg.RunResult
    records: int
    rows_in_db: int
    db_path: Path
    load_id: str
    requests: int = 0
    faults: Mapping[str, int] = field(default_factory=dict)
    server_rate_limited: int = 0

    def describe(self) -> str:
        """A few lines for the terminal: faults by kind, retries, elapsed time, database."""
        failed = sum(n for kind, n in self.faults.items() if kind not in ("latency", "slow_stream"))
        kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(self.faults.items()))
        share = failed / self.requests if self.requests else 0.0
        fetch_stats = self.result.statistics["fetch"]
        return "\n".join(
            [
                f"requests: {self.requests}, of which {failed} failed by injected faults "
                f"({share:.0%}); the API itself refused {self.server_rate_limited} (429)",
                f"faults injected: {kinds or 'none'}",
                f"retries: {fetch_stats.retries} by node 'fetch' "
                f"({fetch_stats.items_out} pages fetched)",
                f"elapsed: {self.result.elapsed:.2f}s",
                f"database: {self.db_path} ({self.rows_in_db} rows in table 'records')",
            ]
        )


def fault_plan(seed: int = SEED) -> FaultPlan:
    """The demo's faults: 25% of requests fail, never more than 4 times in a row per URL."""
    return FaultPlan(
        seed=seed,
        probabilities=FAULTS,
        max_consecutive=4,
        retry_after=1,
        latency=Latency.uniform(0.005, 0.03),
    )


def flaky_api(
    items: int, *, seed: int = SEED, plan: FaultPlan | None = None
) -> tuple[FakeAPI, FlakyTransport]:
    """The built-in API with *items* records, behind a transport injecting *plan*'s faults."""
    api = FakeAPI(records=items, page_size=PAGE_SIZE, rate_limit=SERVER_LIMIT)
    transport = FlakyTransport(httpx.ASGITransport(app=api), plan or fault_plan(seed))
    return api, transport


def build_graph(
    db_path: Path,
    transport: httpx.AsyncBaseTransport,
    *,
    load_id: str = "",
    seed: int = SEED,
    rate: fg.Rate = CLIENT_RATE,
) -> fg.Graph:
    """Declare the demo pipeline: ``pages -> fetch -> parse -> store`` into *db_path*.

    Args:
        db_path: SQLite file to upsert the records into; the table is created on demand.
        transport: how requests reach the API, e.g. :func:`flaky_api`'s transport.
        load_id: stamped on every row, so a check can tell this load's rows apart.
        seed: seeds the retry jitter.
        rate: the client-side rate limit of the fetch node.
    """
    graph = fg.Graph("demo")
    load_id = load_id or uuid.uuid4().hex
    api = HTTPClient(graph, transport=transport, base_url=BASE_URL)
    retry = fg.Retry(attempts=8, initial=0.05, cap=1.0, on=is_transient, seed=seed)
    first_page = fetch(api, "/items", params=lambda _: {"page_size": PAGE_SIZE})

    @graph.source
    async def pages() -> AsyncIterator[int]:
        # A source that raises fails the run, so its one request retries on its own.
        body = await retry.call(first_page, None)
        for number in range(1, body["total_pages"] + 1):
            yield number

    fetch_page = graph.transform(
        fetch(api, "/items", params=lambda n: {"page": n, "page_size": PAGE_SIZE}),
        name="fetch",
        workers=8,
        retry=retry,
        rate=rate,
    )

    @graph.transform(workers=2)
    async def parse(body: dict[str, Any]) -> list[Row]:
        return [
            {
                **record,
                "digest": hashlib.sha256(f"{record['id']}|{record['name']}".encode()).hexdigest()[
                    :16
                ],
                "load_id": load_id,
            }
            for record in body["items"]
        ]

    @graph.sink
    async def store(rows: list[Row]) -> None:
        await anyio.to_thread.run_sync(write_rows, db_path, rows)

    graph.chain(pages, fetch_page, parse, store)
    return graph


def write_rows(db_path: Path, rows: list[Row]) -> None:
    """Upsert *rows* into *db_path* in one transaction, creating the table if needed."""
    with contextlib.closing(sqlite3.connect(db_path, timeout=30)) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        with conn:
            conn.execute(SCHEMA)
            conn.executemany(UPSERT, rows)


def verify(db_path: Path, *, items: int, load_id: str) -> tuple[int, int]:
    """Check that ids ``1..items`` were each written exactly once by *load_id*.

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
    # id is the primary key, so `items` rows within 1..items are exactly those ids.
    if count != items or (count and (low, high) != (1, items)):
        raise DemoError(
            f"expected records 1..{items} in {str(db_path)!r}, found {count} (ids {low}..{high})"
        )
    if repeated:
        raise DemoError(f"{repeated} records were written more than once in {str(db_path)!r}")
    return count, total


async def run_demo(
    db_path: Path, *, items: int = 10_000, seed: int = SEED, progress: bool = False
) -> DemoReport:
    """Ingest *items* records of the flaky fake API into *db_path*, then verify the table.

    With *progress*, a live table of the nodes is drawn on stderr while it runs (needs rich).

    Raises:
        NodeError: if a node failed for good (for instance, the file cannot be opened).
        DemoError: if the table does not hold every record exactly once.
    """
    load_id = uuid.uuid4().hex
    api, transport = flaky_api(items, seed=seed)
    graph = build_graph(db_path, transport, load_id=load_id, seed=seed)
    async with fg.open_run(graph) as run:
        if progress:
            from .._runner import open_progress

            async with open_progress(run):
                await run.wait_finished()
    result = run.result
    records, total = await anyio.to_thread.run_sync(
        lambda: verify(db_path, items=items, load_id=load_id)
    )
    return DemoReport(
        result,
        records,
        total,
        db_path,
        load_id,
        requests=len(transport.records),
        faults={kind.value: n for kind, n in transport.fault_counts.items()},
        server_rate_limited=api.statistics().rate_limited,
    )


def main(
    db_path: Path,
    *,
    items: int = 10_000,
    backend: str = "asyncio",
    seed: int = SEED,
    progress: bool | None = None,
) -> DemoReport:
    """Run :func:`run_demo` in a new event loop of *backend*.

    *progress* defaults to showing the live table when stdout is a terminal and
    rich is installed.
    """
    if progress is None:
        progress = sys.stdout.isatty() and importlib.util.find_spec("rich") is not None
    return anyio.run(
        lambda: run_demo(db_path, items=items, seed=seed, progress=progress), backend=backend
    )
