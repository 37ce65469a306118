"""The ``flowgraph demo`` pipeline: a flaky API ingested into SQLite, every record exactly once."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from flowgraph._cli import _demo
from flowgraph.testing import FaultKind, FaultPlan, FlakyTransport

HEAVY_FAULTS = {
    "connect_error": 0.05,
    "read_timeout": 0.05,
    "server_error": 0.15,
    "rate_limited": 0.05,
    "truncated_body": 0.05,
    "invalid_json": 0.05,
    "latency": 0.1,
}
"""40% of requests fail: over a hundred requests, at least 20% fail whatever the seed."""


def page_retries(transport: FlakyTransport) -> int:
    """Failed requests for pages: injected failures, and 429s from the API's own limit."""
    return sum(
        1
        for r in transport.records
        if "page=" in r.url
        and ((r.fault is not None and r.fault.is_failure) or r.status_code == 429)
    )


def test_demo_plan_fails_at_least_a_fifth_of_requests() -> None:
    """The demo's own fault plan makes 25% of requests fail."""
    plan = _demo.fault_plan()
    assert sum(p for kind, p in plan.probabilities.items() if kind.is_failure) >= 0.2


@pytest.mark.flowgraph_virtual_time
async def test_every_record_arrives_exactly_once_through_faults(
    tmp_path: Path, fault_seed: int
) -> None:
    """10,000 records through 40% faults and a rate limit land in SQLite exactly once."""
    db = tmp_path / "demo.db"
    plan = FaultPlan(seed=fault_seed, probabilities=HEAVY_FAULTS, max_consecutive=4)
    api, transport = _demo.flaky_api(10_000, plan=plan)
    graph = _demo.build_graph(db, transport, load_id="load-1", seed=fault_seed)
    result = await graph.run()
    assert _demo.verify(db, items=10_000, load_id="load-1") == (10_000, 10_000)
    failed = sum(1 for r in transport.records if r.fault is not None and r.fault.is_failure)
    assert failed >= 0.2 * len(transport.records), transport.describe()
    assert result.statistics["fetch"].retries == page_retries(transport)
    assert result.statistics["store"].items_in == 100
    # The client-side rate keeps every attempt within 40 per second.
    times = sorted(r.time for r in transport.records if "page=" in r.url)
    assert all(b - a >= 1.0 - 1e-9 for a, b in zip(times, times[40:], strict=False))
    # The API served every page once, plus the first request and the bodies cut short on the way.
    truncated = transport.fault_counts[FaultKind.TRUNCATED_BODY]
    assert api.statistics().served == 101 + truncated


@pytest.mark.flowgraph_virtual_time
async def test_a_second_load_upserts_the_same_rows(tmp_path: Path) -> None:
    """Loading again rewrites each row once more: still one row per record, one delivery."""
    db = tmp_path / "demo.db"
    for load in ("first", "second"):
        _, transport = _demo.flaky_api(250)
        await _demo.build_graph(db, transport, load_id=load).run()
        assert _demo.verify(db, items=250, load_id=load) == (250, 250)


@pytest.mark.flowgraph_virtual_time
async def test_run_demo_reports_faults_retries_and_the_database(tmp_path: Path) -> None:
    """run_demo verifies the table and describes what was injected and retried."""
    report = await _demo.run_demo(tmp_path / "demo.db", items=2_000)
    assert (report.records, report.rows_in_db) == (2_000, 2_000)
    assert report.requests > 21  # 20 pages and the first request, at least
    assert set(report.faults) <= {kind.value for kind in FaultKind}
    lines = report.describe().splitlines()
    assert lines[0].startswith(f"requests: {report.requests}, of which ")
    assert lines[2] == (
        f"retries: {report.result.statistics['fetch'].retries} by node 'fetch' (20 pages fetched)"
    )
    assert lines[4] == f"database: {report.db_path} (2000 rows in table 'records')"


def test_verify_names_missing_and_repeated_records(tmp_path: Path) -> None:
    """verify() fails when a record is missing or was written twice by one load."""
    db = tmp_path / "demo.db"
    rows = [{"id": i, "name": "x", "value": 0, "digest": "d", "load_id": "L"} for i in (1, 2, 3)]
    _demo.write_rows(db, rows)
    with pytest.raises(
        _demo.DemoError, match=r"^expected records 1\.\.4 in .*, found 3 \(ids 1\.\.3\)$"
    ):
        _demo.verify(db, items=4, load_id="L")
    _demo.write_rows(db, rows[:1])
    with pytest.raises(_demo.DemoError, match=r"^1 records were written more than once in "):
        _demo.verify(db, items=3, load_id="L")


def test_flowgraph_demo_command_verifies_its_database(tmp_path: Path) -> None:
    """``python -m flowgraph demo`` ingests through real-time faults and verifies, exit 0."""
    db = tmp_path / "demo.db"
    proc = subprocess.run(
        [sys.executable, "-m", "flowgraph", "demo", "--db", str(db), "--items", "2000"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "verified: every record is in the table exactly once" in proc.stdout
    with contextlib.closing(sqlite3.connect(db)) as conn:
        counts = conn.execute("SELECT COUNT(*), COUNT(DISTINCT id), MAX(deliveries) FROM records")
        assert counts.fetchone() == (2000, 2000, 1)
