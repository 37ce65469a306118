"""Real processes, real signals, real databases: what survives SIGKILL and SIGTERM.

A daemon script (written to ``tmp_path``) reads offsets ``0..N-1`` from a
checkpointed source (``max_in_flight=M``), passes them through a transform that
sleeps a little, and writes each to two sinks: a plain ``INSERT`` into a table
without a key, where every delivery is a row so duplicates show, and
``fg.Upsert`` by ``id``. Checkpoints (``every=E``) live in the same database.

The bound asserted after each ``kill -9``, from the low-watermark design: on
restart the source resumes after the last *committed* position C, so exactly
the items written with offset > C are written again. Every acknowledged item
was written by both sinks, so the in-memory watermark W at the kill was at most
F, the end of the prefix 0..F found complete in both tables after the kill; and
the source never has more than M items past W, so nothing past F + M was ever
emitted. And the source never runs more than M + E items past C (it waits for
slow commits: the bound daemons.md documents), so nothing past C + M + E was
ever emitted either. Hence the replayed (duplicated) offsets of a kill lie in
(C, min(F + M, C + M + E)], and they number at most M + E
(see ``assert_kill_bound``).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from databases import connect

N = 2000
MAX_IN_FLIGHT = 50
EVERY = 20
GRACE = 5.0
GRAPH = "crash"

DAEMON = r'''
"""A checkpointed daemon: offsets -> work -> (plain INSERT, fg.Upsert); stops on SIGTERM."""
import json
import signal
import sqlite3
import sys

import anyio
import anyio.to_thread

import flowgraph as fg


config = json.loads(sys.argv[1])
N, DELAY, URL = config["n"], config["delay"], config["url"]


class PlainInsert:
    """INSERT without a key: every delivery becomes a row, so duplicates show."""

    async def __aenter__(self):
        self.limiter = anyio.CapacityLimiter(1)
        self.connection = await anyio.to_thread.run_sync(self.connect, limiter=self.limiter)
        return self

    def connect(self):
        if URL.startswith("sqlite:///"):
            connection = sqlite3.connect(URL[len("sqlite:///"):], timeout=30, isolation_level=None, check_same_thread=False)
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("PRAGMA synchronous = FULL")
            self.sql = "INSERT INTO plain (id, value) VALUES (?, ?)"
        else:
            import psycopg

            connection = psycopg.connect(URL, autocommit=True)
            self.sql = "INSERT INTO plain (id, value) VALUES (%s, %s)"
        connection.execute("CREATE TABLE IF NOT EXISTS plain (id BIGINT NOT NULL, value TEXT NOT NULL)")
        return connection

    async def __aexit__(self, *exc_info):
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self.connection.close, limiter=self.limiter)

    async def __call__(self, row):
        await anyio.to_thread.run_sync(self.insert, row, limiter=self.limiter)

    def insert(self, row):
        self.connection.execute(self.sql, (row["id"], row["value"]))


graph = fg.Graph("crash")


@graph.source(checkpoint=True, max_in_flight=config["max_in_flight"])
async def offsets(after):
    for i in range(0 if after is None else after + 1, N):
        yield fg.Positioned({"id": i, "value": f"v{i}"}, i)


@graph.transform(workers=8)
async def work(row):
    await anyio.sleep(DELAY)
    return row


graph.chain(offsets, work)
graph.connect(work, graph.sink(PlainInsert(), name="plain"), graph.sink(fg.Upsert(URL, "upserted"), name="upsert", workers=4))


async def stop_on_signals(signals, run):
    async for signum in signals:
        run.stop(grace=0 if run.stopping else config["grace"])


async def main():
    checkpoints = fg.Checkpoints(URL, every=config["every"], interval=config["interval"])
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with fg.open_run(graph, checkpoints=checkpoints) as run:
            print("started", flush=True)
            async with anyio.create_task_group() as tg:
                tg.start_soon(stop_on_signals, signals, run)
                await run.wait_finished()
                tg.cancel_scope.cancel()
    print(json.dumps({"stopped": run.result.stopped}), flush=True)


anyio.run(main, backend=config["backend"])
'''


@dataclass
class Daemon:
    """Starts the daemon script and never leaves a process behind."""

    tmp_path: Path
    url: str
    backend: str
    delay: float
    interval: float = 0.5
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    runs: int = 0

    def start(self) -> subprocess.Popen[bytes]:
        script = self.tmp_path / "daemon.py"
        if not script.exists():
            script.write_text(DAEMON)
        self.runs += 1
        config = {
            "url": self.url,
            "backend": self.backend,
            "n": N,
            "max_in_flight": MAX_IN_FLIGHT,
            "every": EVERY,
            "interval": self.interval,
            "delay": self.delay,
            "grace": GRACE,
        }
        self.out = self.tmp_path / f"run{self.runs}.out"
        self.err = self.tmp_path / f"run{self.runs}.err"
        with self.out.open("wb") as out, self.err.open("wb") as err:
            process = subprocess.Popen(
                [sys.executable, str(script), json.dumps(config)],
                stdout=out,
                stderr=err,
                cwd=self.tmp_path,
            )
        self.processes.append(process)
        return process

    def wait_started(self, process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while "started" not in self.out.read_text():
            if process.poll() is not None:
                pytest.fail(f"daemon exited with {process.returncode}:\n{self.stderr()}")
            if time.monotonic() > deadline:
                pytest.fail(f"daemon did not start within {timeout} s:\n{self.stderr()}")
            time.sleep(0.005)

    def wait(self, process: subprocess.Popen[bytes], timeout: float) -> int:
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"daemon still running after {timeout} s:\n{self.stderr()}")

    def stderr(self) -> str:
        return self.err.read_text()[-3000:]

    def cleanup(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait(10)


@dataclass(frozen=True)
class Snapshot:
    """What the database holds: the committed position and both tables' offsets."""

    committed: int  # -1 before the first commit
    plain: Counter[int]
    upserted: Counter[int]

    @property
    def complete_prefix(self) -> int:
        """F: the largest f such that 0..f are in both tables (-1 if 0 is missing)."""
        f = -1
        while self.plain[f + 1] and self.upserted[f + 1]:
            f += 1
        return f


def wait_for_dead_clients(url: str, timeout: float = 10.0) -> None:
    """Wait until PostgreSQL has ended the sessions of a killed daemon.

    A statement the daemon sent just before ``kill -9`` may still run, and
    commit, after the process is gone: the server only notices the closed
    socket when it next talks to it. Reading the tables before then can miss
    rows that land a moment later.
    """
    if url.startswith("sqlite"):
        return
    deadline = time.monotonic() + timeout
    with connect(url) as connection:
        while True:
            (others,) = connection.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
            ).fetchone()
            if not others:
                return
            assert time.monotonic() < deadline, f"{others} sessions outlived the daemon"
            time.sleep(0.01)


def snapshot(url: str) -> Snapshot:
    with connect(url) as connection:

        def rows(sql: str, *params: Any) -> list[Any]:
            try:
                return list(connection.execute(sql, params).fetchall())
            except Exception as exc:  # the daemon had not created the table yet
                if "plain" in str(exc) or "upserted" in str(exc) or "flowgraph" in str(exc):
                    if not url.startswith("sqlite"):
                        connection.rollback()
                    return []
                raise

        mark = "?" if url.startswith("sqlite") else "%s"
        position = rows(
            f"SELECT position FROM flowgraph_checkpoints WHERE graph = {mark} AND source = {mark}",
            GRAPH,
            "offsets",
        )
        plain = Counter(int(row[0]) for row in rows("SELECT id FROM plain"))
        upserted = Counter(int(row[0]) for row in rows("SELECT id FROM upserted"))
    committed = json.loads(position[0][0]) if position else -1
    return Snapshot(committed, plain, upserted)


def assert_kill_bound(kill: int, after: Snapshot) -> tuple[set[int], int]:
    """Check the duplicate window of one kill; return the offsets it will replay, and F - C."""
    c, f = after.committed, after.complete_prefix
    assert c <= f, f"kill {kill}: checkpoint {c} passed an unwritten item (prefix ends at {f})"
    assert max(after.upserted.values(), default=0) <= 1, f"kill {kill}: duplicate upserted rows"
    replayed = {offset for offset in after.plain if offset > c}
    if replayed:
        # Nothing past F + M was ever emitted (max_in_flight past the watermark), nor
        # past C + M + E (the documented bound: the source waits for slow commits).
        assert max(replayed) <= f + MAX_IN_FLIGHT, (kill, c, f, sorted(replayed))
        assert max(replayed) <= c + MAX_IN_FLIGHT + EVERY, (kill, c, f, sorted(replayed))
    assert len(replayed) <= MAX_IN_FLIGHT + EVERY, (kill, c, f, len(replayed))
    return replayed, f - c


def assert_complete(final: Snapshot, replayed_by: list[set[int]]) -> None:
    """Every offset in both tables; duplicates only where a kill said they would be."""
    assert final.committed == N - 1
    assert set(final.plain) == set(range(N))
    assert final.upserted == Counter(range(N)), "upsert table must hold each offset exactly once"
    for offset, copies in final.plain.items():
        kills = sum(offset in replayed for replayed in replayed_by)
        assert copies - 1 <= kills, f"offset {offset}: {copies} copies, in {kills} kill windows"


@pytest.fixture(
    params=[
        ("sqlite", "asyncio"),
        ("sqlite", "trio"),
        ("postgres", "asyncio"),
        ("postgres", "trio"),
    ],
    ids=lambda param: "-".join(param),
)
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """(database URL for state and data, the daemon's backend)."""
    database, backend = request.param
    if database == "sqlite":
        return f"sqlite:///{tmp_path / 'daemon.db'}", backend
    url: str = request.getfixturevalue("postgres_schema_url")
    return url, backend


@pytest.mark.timeout(60)
def test_kill_9_loses_nothing_and_duplicates_only_the_uncommitted_window(
    setup: tuple[str, str], tmp_path: Path
) -> None:
    """SIGKILL at random moments, restart until done: all rows there, duplicates bounded."""
    url, backend = setup
    kills = 5
    rng = random.Random(f"kill-9:{url[:6]}:{backend}")
    daemon = Daemon(tmp_path, url, backend, delay=0.004)
    replayed_by: list[set[int]] = []
    lags: list[int] = []
    try:
        for kill in range(kills):
            process = daemon.start()
            daemon.wait_started(process)
            time.sleep(rng.uniform(0.05, 0.4))
            if process.poll() is not None:
                break
            os.kill(process.pid, signal.SIGKILL)
            if daemon.wait(process, 10) == 0:
                break  # it finished between the poll and the signal
            assert process.returncode == -signal.SIGKILL, daemon.stderr()
            wait_for_dead_clients(url)
            replayed, lag = assert_kill_bound(kill, snapshot(url))
            replayed_by.append(replayed)
            lags.append(lag)
        process = daemon.start()
        assert daemon.wait(process, 30) == 0, daemon.stderr()
    finally:
        daemon.cleanup()
    assert len(replayed_by) >= 2, "the daemon finished too early to be killed"
    assert_complete(snapshot(url), replayed_by)
    print(f"kills={len(replayed_by)} replayed={[len(r) for r in replayed_by]} lag={lags}")


@pytest.mark.timeout(60)
def test_sigterm_drains_commits_and_exits_0_then_restart_duplicates_nothing(
    setup: tuple[str, str], tmp_path: Path
) -> None:
    """SIGTERM: exit 0 within the grace, checkpoint = last written item; a restart adds no duplicate."""
    url, backend = setup
    daemon = Daemon(tmp_path, url, backend, delay=0.004, interval=60)
    try:
        process = daemon.start()
        daemon.wait_started(process)
        deadline = time.monotonic() + 15
        while sum(snapshot(url).plain.values()) < 300:
            assert process.poll() is None, daemon.stderr()
            assert time.monotonic() < deadline, "no progress"
            time.sleep(0.02)
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert daemon.wait(process, GRACE + 5) == 0, daemon.stderr()
        assert time.monotonic() - signalled < GRACE
        assert json.loads(daemon.out.read_text().splitlines()[-1]) == {"stopped": True}
        stopped = snapshot(url)
        assert stopped.committed < N - 1, "the daemon finished before the signal"
        assert stopped.plain == Counter(range(stopped.committed + 1))
        assert stopped.upserted == Counter(range(stopped.committed + 1))

        process = daemon.start()
        assert daemon.wait(process, 30) == 0, daemon.stderr()
    finally:
        daemon.cleanup()
    final = snapshot(url)
    assert final.committed == N - 1
    assert final.plain == Counter(range(N)), "a graceful stop must leave nothing to replay"
    assert final.upserted == Counter(range(N))


@pytest.mark.timeout(60)
def test_a_second_daemon_on_the_same_store_is_refused_and_a_restart_after_kill_9_is_not(
    setup: tuple[str, str], tmp_path: Path
) -> None:
    """Two daemons of one graph on one store: the second exits 1 at once, having written
    nothing; after ``kill -9`` of the first, a restart right away takes over and finishes."""
    url, backend = setup
    daemon = Daemon(tmp_path, url, backend, delay=0.05)  # 2000 items take the first > 10 s
    try:
        first = daemon.start()
        daemon.wait_started(first)
        second = daemon.start()
        assert daemon.wait(second, 20) == 1
        assert "started" not in daemon.out.read_text()
        assert f"StoreError: graph '{GRAPH}' is already running against " in daemon.stderr()
        assert "(its lease is held by" in daemon.stderr()
        assert first.poll() is None, "the first daemon must go on"
        os.kill(first.pid, signal.SIGKILL)
        daemon.wait(first, 10)
        daemon.delay = 0.002
        third = daemon.start()
        assert daemon.wait(third, 30) == 0, daemon.stderr()
    finally:
        daemon.cleanup()
    final = snapshot(url)
    assert final.committed == N - 1
    assert final.upserted == Counter(range(N))
