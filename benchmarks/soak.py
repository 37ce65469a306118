"""Soak: seeded ``kill -9`` loops of a fan-out daemon, checking that nothing is ever lost.

Each seed picks a database (SQLite or PostgreSQL), a backend (asyncio or trio),
``max_in_flight`` (20 to 1,000), ``every`` (1 to 100), a per-item delay, and
whether the checkpoint store is slow (every commit first sleeps 50 to 300 ms,
while the sinks take about a millisecond per item).
It runs a daemon: a checkpointed source of offsets, a transform with 8
workers, and two sinks (fan-out): a plain ``INSERT`` into a table without a
key (every delivery is a row, so duplicates show) and ``fg.Upsert`` by id. It
``kill -9``s the daemon 1 to 4 times at random moments, restarting it at once
each time, then lets it finish, and checks:

* after every kill, the committed position C never passes an item missing from
  either table, and the items that will be replayed (written with offset > C)
  number at most ``max_in_flight + every``, the bound documented in
  docs/daemons.md, and lie within C + that bound;
* at the end, nothing lost (every offset in both tables), the Upsert table
  exactly one row per offset, plain duplicates only where a kill said so, and
  the committed position the last offset.

Run ``python benchmarks/soak.py --seeds 300`` (PostgreSQL: ``--postgres-url
URL``, or a throwaway server is started when PostgreSQL's binaries are
installed; ``--databases sqlite`` to skip it). It prints one line per seed and
a summary, and exits 1 if any check failed. ``tests/test_soak.py`` runs a few
seeds of it in the test suite.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

GRAPH = "soak"
REPO = Path(__file__).resolve().parent.parent

DAEMON = r'''
import json, signal, sqlite3, sys

import anyio
import anyio.to_thread

import flowgraph as fg

config = json.loads(sys.argv[1])
URL = config["url"]


class PlainInsert:
    """INSERT without a key: every delivery becomes a row, so duplicates show."""

    async def __aenter__(self):
        self.limiter = anyio.CapacityLimiter(1)
        self.connection = await anyio.to_thread.run_sync(self.connect, limiter=self.limiter)
        return self

    def connect(self):
        if URL.startswith("sqlite:///"):
            connection = sqlite3.connect(
                URL[len("sqlite:///"):], timeout=30, isolation_level=None, check_same_thread=False
            )
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("PRAGMA synchronous = FULL")
            self.sql = "INSERT INTO plain (id) VALUES (?)"
        else:
            import psycopg

            connection = psycopg.connect(URL, autocommit=True)
            self.sql = "INSERT INTO plain (id) VALUES (%s)"
        connection.execute("CREATE TABLE IF NOT EXISTS plain (id BIGINT NOT NULL)")
        return connection

    async def __aexit__(self, *exc_info):
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self.connection.close, limiter=self.limiter)

    async def __call__(self, row):
        execute = self.connection.execute
        await anyio.to_thread.run_sync(execute, self.sql, (row["id"],), limiter=self.limiter)


class SlowCheckpoints:
    """fg.Checkpoints whose every commit first sleeps: commits fall behind the sinks."""

    def __init__(self, inner, delay):
        self.inner, self.delay = inner, delay
        self.every, self.interval = inner.every, inner.interval

    async def __aenter__(self):
        await self.inner.__aenter__()
        return self

    async def __aexit__(self, *exc_info):
        await self.inner.__aexit__(*exc_info)

    async def load(self, graph):
        return await self.inner.load(graph)

    async def commit(self, graph, positions):
        await anyio.sleep(self.delay)
        await self.inner.commit(graph, positions)

    def open_lease(self, graph):
        return self.inner.open_lease(graph)


graph = fg.Graph("soak")


@graph.source(checkpoint=True, max_in_flight=config["max_in_flight"])
async def offsets(after):
    for i in range(0 if after is None else after + 1, config["n"]):
        yield fg.Positioned({"id": i, "value": f"v{i}"}, i)


@graph.transform(workers=8)
async def work(row):
    await anyio.sleep(config["delay"])
    return row


graph.chain(offsets, work)
graph.connect(
    work,
    graph.sink(PlainInsert(), name="plain", workers=2),
    graph.sink(fg.Upsert(URL, "upserted"), name="upsert", workers=4),
)


async def main():
    checkpoints = fg.Checkpoints(URL, every=config["every"], interval=0.2)
    if config["slow"]:
        checkpoints = SlowCheckpoints(checkpoints, config["slow"])
    async with fg.open_run(graph, checkpoints=checkpoints) as run:
        print("started", flush=True)
        await run.wait_finished()


anyio.run(main, backend=config["backend"])
'''


@dataclass(frozen=True)
class Case:
    """What one seed runs."""

    seed: int
    database: str
    backend: str
    max_in_flight: int
    every: int
    n: int
    delay: float
    slow: float  # seconds each commit sleeps first; 0: a plain store
    kills: list[float]

    @property
    def bound(self) -> int:
        """The documented replay bound per source: max_in_flight + every."""
        return self.max_in_flight + self.every

    @classmethod
    def draw(cls, seed: int, databases: list[str], backends: list[str], quick: bool) -> Case:
        rng = random.Random(seed)
        combos = [(d, b) for d in databases for b in backends]
        database, backend = combos[seed % len(combos)]
        slow = rng.uniform(0.05, 0.3) if (seed // len(combos)) % 2 else 0.0
        # A slow store holds the source to about (M + E) items per commit: keep runs short.
        choices = [50, 100, 300] if slow else [20, 50, 100, 300, 1000]
        kills = rng.randint(1, 2 if quick else 4)
        return cls(
            seed=seed,
            database=database,
            backend=backend,
            max_in_flight=rng.choice(choices),
            every=rng.choice([1, 5, 20, 100]),
            n=rng.randint(400, 800) if quick else rng.randint(1000, 3000),
            delay=rng.uniform(0.0, 0.003),
            slow=round(slow, 3),
            kills=[rng.uniform(0.05, 0.6) for _ in range(kills)],
        )


@dataclass
class Outcome:
    """What one seed found."""

    case: Case
    kills: int = 0
    replays: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def line(self) -> str:
        c = self.case
        worst = max(self.replays, default=0)
        status = "ok" if not self.problems else "FAILED: " + "; ".join(self.problems)
        return (
            f"seed {c.seed:4d} {c.database:8s} {c.backend:7s} M={c.max_in_flight:<4d} "
            f"E={c.every:<3d} n={c.n:<4d} slow={c.slow:<5g} kills={self.kills} "
            f"replayed={self.replays} max {worst}/{c.bound} {self.seconds:5.1f}s {status}"
        )


# -- reading the database -------------------------------------------------------------


@contextlib.contextmanager
def connect(url: str) -> Any:
    if url.startswith("sqlite:///"):
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as connection:
            yield connection
    else:
        import psycopg

        with psycopg.connect(url, autocommit=True) as connection:
            yield connection


@dataclass(frozen=True)
class Snapshot:
    committed: int  # -1 before the first commit
    plain: Counter[int]
    upserted: Counter[int]

    @property
    def complete_prefix(self) -> int:
        f = -1
        while self.plain[f + 1] and self.upserted[f + 1]:
            f += 1
        return f


def snapshot(url: str) -> Snapshot:
    mark = "?" if url.startswith("sqlite") else "%s"
    with connect(url) as connection:

        def rows(sql: str, *params: Any) -> list[Any]:
            try:
                return list(connection.execute(sql, params).fetchall())
            except Exception as exc:  # a table the daemon has not created yet
                if not any(t in str(exc) for t in ("plain", "upserted", "flowgraph")):
                    raise
                if not url.startswith("sqlite"):
                    connection.rollback()
                return []

        position = rows(
            f"SELECT position FROM flowgraph_checkpoints WHERE graph = {mark} AND source = {mark}",
            GRAPH,
            "offsets",
        )
        plain = Counter(int(r[0]) for r in rows("SELECT id FROM plain"))
        upserted = Counter(int(r[0]) for r in rows("SELECT id FROM upserted"))
    return Snapshot(json.loads(position[0][0]) if position else -1, plain, upserted)


def wait_for_dead_clients(url: str, timeout: float = 10.0) -> None:
    """Wait until PostgreSQL has ended the sessions of a killed daemon (their last
    statements may still commit after the process is gone)."""
    if url.startswith("sqlite"):
        return
    deadline = time.monotonic() + timeout
    with connect(url) as connection:
        while True:
            (others,) = connection.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
            ).fetchone()
            if not others or time.monotonic() > deadline:
                return
            time.sleep(0.01)


# -- one seed ---------------------------------------------------------------------------


def run_case(case: Case, workdir: Path, postgres_url: str | None) -> Outcome:
    outcome = Outcome(case)
    started = time.monotonic()
    with database(case, workdir, postgres_url) as url:
        try:
            soak_one(case, url, workdir, outcome)
        except Failure as failure:
            outcome.problems.append(str(failure))
    outcome.seconds = time.monotonic() - started
    return outcome


class Failure(Exception):
    """A check failed."""


def soak_one(case: Case, url: str, workdir: Path, outcome: Outcome) -> None:
    script = workdir / "daemon.py"
    script.write_text(DAEMON)
    config = {
        "url": url,
        "backend": case.backend,
        "n": case.n,
        "max_in_flight": case.max_in_flight,
        "every": case.every,
        "delay": case.delay,
        "slow": case.slow,
    }
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    replayed_by: list[set[int]] = []
    for run, pause in enumerate([*case.kills, None]):
        out, err = workdir / f"run{run}.out", workdir / f"run{run}.err"
        with out.open("wb") as stdout, err.open("wb") as stderr:
            process = subprocess.Popen(
                [sys.executable, str(script), json.dumps(config)],
                stdout=stdout,
                stderr=stderr,
                env=env,
            )
        try:
            if pause is None:
                if process.wait(timeout=300) != 0:
                    raise Failure(f"last run exited {process.returncode}: {tail(err)}")
                break
            wait_started(process, out, err)
            time.sleep(pause)
            if process.poll() is not None:
                if process.returncode != 0:
                    raise Failure(f"run {run} exited {process.returncode}: {tail(err)}")
                break  # finished before the kill
            process.send_signal(signal.SIGKILL)
            process.wait(10)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(10)
        if process.returncode == 0:
            break
        wait_for_dead_clients(url)
        replayed_by.append(check_kill(case, snapshot(url), outcome))
    check_final(case, snapshot(url), replayed_by)


def wait_started(process: subprocess.Popen[bytes], out: Path, err: Path) -> None:
    deadline = time.monotonic() + 30
    while b"started" not in out.read_bytes():
        if process.poll() is not None:
            if process.returncode == 0:
                return
            raise Failure(f"daemon exited {process.returncode} before starting: {tail(err)}")
        if time.monotonic() > deadline:
            raise Failure("daemon did not start within 30 s")
        time.sleep(0.005)


def check_kill(case: Case, after: Snapshot, outcome: Outcome) -> set[int]:
    outcome.kills += 1
    c, f = after.committed, after.complete_prefix
    if c > f:
        raise Failure(f"kill {outcome.kills}: checkpoint {c} passed an unwritten item ({f})")
    if max(after.upserted.values(), default=0) > 1:
        raise Failure(f"kill {outcome.kills}: duplicate rows in the upsert table")
    replayed = {offset for offset in after.plain if offset > c}
    outcome.replays.append(len(replayed))
    if len(replayed) > case.bound or (replayed and max(replayed) > c + case.bound):
        raise Failure(
            f"kill {outcome.kills}: {len(replayed)} items to replay past {c}, up to "
            f"{max(replayed)}: over the bound {case.bound}"
        )
    return replayed


def check_final(case: Case, final: Snapshot, replayed_by: list[set[int]]) -> None:
    lost = set(range(case.n)) - set(final.plain)
    if lost or set(range(case.n)) - set(final.upserted):
        raise Failure(f"lost {len(lost)} items, e.g. {sorted(lost)[:5]}")
    if final.upserted != Counter(range(case.n)):
        raise Failure("the upsert table is not exactly one row per offset")
    if final.committed != case.n - 1:
        raise Failure(f"committed position {final.committed}, not {case.n - 1}")
    for offset, copies in final.plain.items():
        kills = sum(offset in replayed for replayed in replayed_by)
        if copies - 1 > kills:
            raise Failure(f"offset {offset}: {copies} copies but in {kills} kill windows")


def tail(path: Path) -> str:
    return path.read_text(errors="replace")[-800:].strip()


@contextlib.contextmanager
def database(case: Case, workdir: Path, postgres_url: str | None) -> Any:
    """A fresh database for one seed: a SQLite file, or a PostgreSQL schema dropped afterwards."""
    if case.database == "sqlite":
        yield f"sqlite:///{workdir / 'soak.db'}"
        return
    assert postgres_url is not None
    import psycopg
    from psycopg import sql

    schema = f"soak_{case.seed}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    separator = "&" if "?" in postgres_url else "?"
    try:
        yield f"{postgres_url}{separator}options={quote(f'-csearch_path={schema}', safe='')}"
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as connection:
            connection.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@contextlib.contextmanager
def postgres_server(url: str | None) -> Any:
    """The given server, or a throwaway one started with tests/postgres_server.py's machinery."""
    if url:
        yield url
        return
    sys.path.insert(0, str(REPO / "tests"))
    from postgres_server import PostgresServer

    server = PostgresServer()
    try:
        yield server.start()
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=20, help="how many seeds to run")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--databases", default="sqlite,postgres")
    parser.add_argument("--backends", default="asyncio,trio")
    parser.add_argument("--postgres-url", help="an existing server (else one is started)")
    parser.add_argument("--quick", action="store_true", help="smaller runs, at most 2 kills")
    args = parser.parse_args(argv)
    databases = args.databases.split(",")
    backends = args.backends.split(",")
    workroot = Path(tempfile.mkdtemp(prefix="flowgraph-soak-"))
    outcomes: list[Outcome] = []
    started = time.monotonic()
    try:
        with (
            postgres_server(args.postgres_url)
            if "postgres" in databases
            else contextlib.nullcontext() as url
        ):
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                case = Case.draw(seed, databases, backends, args.quick)
                workdir = workroot / f"seed{seed}"
                workdir.mkdir()
                outcome = run_case(case, workdir, url)
                outcomes.append(outcome)
                print(outcome.line(), flush=True)
                if not outcome.problems:
                    shutil.rmtree(workdir, ignore_errors=True)
    finally:
        failed = [o for o in outcomes if o.problems]
        if not failed:
            shutil.rmtree(workroot, ignore_errors=True)
    print(summary(outcomes, time.monotonic() - started))
    if failed:
        print(f"failed seeds' files are kept in {workroot}")
    return 1 if failed else 0


def summary(outcomes: list[Outcome], seconds: float) -> str:
    failed = [o for o in outcomes if o.problems]
    kills = sum(o.kills for o in outcomes)
    ratios = [r / o.case.bound for o in outcomes for r in o.replays]
    combos = Counter((o.case.database, o.case.backend, bool(o.case.slow)) for o in outcomes)
    worst = max(ratios, default=0.0)
    lines = [
        f"{len(outcomes)} seeds, {kills} kills, {seconds:.0f} s: "
        f"{len(failed)} failed; 0 lost and Upsert exact in {len(outcomes) - len(failed)}; "
        f"largest replay {worst:.0%} of its bound (max_in_flight + every), "
        f"mean {sum(ratios) / len(ratios) if ratios else 0:.0%}",
        "seeds per (database, backend, slow store): "
        + ", ".join(
            f"{d}/{b}/{'slow' if s else 'plain'}={n}" for (d, b, s), n in sorted(combos.items())
        ),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
