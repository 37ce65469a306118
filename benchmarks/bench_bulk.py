"""Bulk loads into a real PostgreSQL: CopyInto and Upsert against hand-written psycopg.

Run ``python benchmarks/bench_bulk.py [--url postgresql://...] [--rows 100000]
[--batch 1000] [--repeats 5] [--backend asyncio|trio]``. Without ``--url`` it
starts a throwaway server (``initdb`` + ``pg_ctl`` in a temporary directory,
Unix socket only, ``fsync=off`` as in the tests) and removes it at the end.

The same batches of dict rows (built once, not timed) are loaded by:

- **psycopg copy** (the reference): sync psycopg 3, one ``cursor.copy`` per
  batch in its own transaction, ``write_row`` per row: what a careful
  hand-written loader does, with no event loop and no thread hops.
- **CopyInto**: a flowgraph graph, source of batches -> ``fg.CopyInto`` sink,
  with ``workers=4`` (as docs/sinks.md recommends: the batches queued while one
  loads go to the sink's thread together, each its own transaction) and with
  one worker, the default, where every batch costs a round trip between the
  event loop and the sink's thread.
- **psycopg copy + merge** and **CopyInto key=**: the same, exactly-once:
  COPY into a temporary table, then ``INSERT ... ON CONFLICT`` per batch.
- **psycopg executemany** and **Upsert**: ``INSERT ... ON CONFLICT`` with
  ``executemany`` per batch (psycopg pipelines it), by hand and ``fg.Upsert``.

Each flowgraph load is compared with its hand-written twin, as a ratio of
throughputs (above 1: flowgraph is faster): every repeat runs the twin and the
flowgraph load back to back, and the table gives the median of those paired
ratios (robust to load on a shared machine) and the best rows/s. Target:
CopyInto with ``workers=4`` >= 0.8x psycopg copy on each backend; the exit
status is 1 if it is missed. The keyed loads and Upsert run with 4 workers too.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import pwd
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import psycopg
from psycopg import sql

import flowgraph as fg

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

BACKENDS = ("asyncio", "trio")
TABLE = "bench_rows"
COLUMNS = ("id", "name", "score")
TARGET = 0.8
TARGET_WORKERS = 4  # the configuration docs/sinks.md recommends for bulk loads
Batches = list[list[dict[str, Any]]]


# -- a throwaway server ----------------------------------------------------------------------


@contextlib.contextmanager
def throwaway_server() -> Iterator[str]:
    """Start PostgreSQL in a temporary directory (as ``postgres`` under root); yield its URL."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    initdb = shutil.which("initdb") or (found[-1] if found else None)
    if initdb is None:
        sys.exit("no PostgreSQL server binaries (initdb) found: pass --url")
    binaries = Path(initdb).parent
    prefix: list[str] = []
    base = Path(tempfile.mkdtemp(prefix="flowgraph-bench-pg-"))
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(base, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    data = base / "data"
    pg_ctl = [*prefix, str(binaries / "pg_ctl"), "-D", str(data)]
    quiet: dict[str, Any] = {"check": True, "capture_output": True}
    try:
        subprocess.run(
            [
                *prefix,
                initdb,
                "-D",
                str(data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
            **quiet,
        )
        with (data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"listen_addresses = ''\nunix_socket_directories = '{base}'\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
            )
        subprocess.run([*pg_ctl, "-l", str(base / "log"), "-w", "start"], **quiet)
        try:
            yield f"postgresql://postgres@/postgres?host={quote(str(base), safe='')}"
        finally:
            subprocess.run([*pg_ctl, "-m", "immediate", "-w", "stop"], **quiet)
    finally:
        shutil.rmtree(base, ignore_errors=True)


# -- the loaders -----------------------------------------------------------------------------


def reset(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f"DROP TABLE IF EXISTS {TABLE}")
        connection.execute(
            f"CREATE TABLE {TABLE} (id BIGINT PRIMARY KEY, name TEXT, score DOUBLE PRECISION)"
        )
        connection.execute("CHECKPOINT")


def psycopg_copy(url: str, batches: Batches, *, merge: bool = False) -> None:
    """The reference: sync psycopg, COPY per batch (into a temp table first with *merge*)."""
    with psycopg.connect(url, autocommit=True) as connection, connection.cursor() as cursor:
        target = TABLE
        if merge:
            target = "stage"
            cursor.execute(
                f"CREATE TEMP TABLE stage ON COMMIT DELETE ROWS AS "
                f"SELECT id, name, score FROM {TABLE} WITH NO DATA"
            )
        copy_sql = f"COPY {target} (id, name, score) FROM STDIN"
        merge_sql = (
            f"INSERT INTO {TABLE} (id, name, score) SELECT id, name, score FROM stage "
            "ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, score = EXCLUDED.score"
        )
        for batch in batches:
            with connection.transaction():
                with cursor.copy(copy_sql) as copy:
                    for row in batch:
                        copy.write_row((row["id"], row["name"], row["score"]))
                if merge:
                    cursor.execute(merge_sql)


def psycopg_executemany(url: str, batches: Batches) -> None:
    """The reference for Upsert: executemany of INSERT ... ON CONFLICT per batch."""
    statement = (
        f"INSERT INTO {TABLE} (id, name, score) VALUES (%s, %s, %s) "
        "ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, score = EXCLUDED.score"
    )
    with psycopg.connect(url, autocommit=True) as connection, connection.cursor() as cursor:
        for batch in batches:
            with connection.transaction():
                cursor.executemany(statement, [(r["id"], r["name"], r["score"]) for r in batch])


def graph_load(sink: Any, batches: Batches, backend: str, workers: int = 1) -> None:
    graph = fg.Graph("bulk")
    graph.chain(graph.source(batches, name="batches"), graph.sink(sink, workers=workers))
    fg.run(graph, backend=backend)


def timed(load: Callable[[], None], url: str, rows: int) -> float:
    """Rows per second of one load into an empty table (checked complete)."""
    reset(url)
    started = time.perf_counter()
    load()
    elapsed = time.perf_counter() - started
    with psycopg.connect(url) as connection:
        count = connection.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(TABLE)))
        (loaded,) = count.fetchone() or (0,)
    if loaded != rows:
        sys.exit(f"a load wrote {loaded} rows, not {rows}")
    return rows / elapsed


# -- the run ---------------------------------------------------------------------------------


def measure(url: str, args: argparse.Namespace) -> tuple[dict[str, float], dict[str, float]]:
    """Best rows/s of every load, and each flowgraph load's median ratio to its twin.

    Each repeat runs every flowgraph load right after its hand-written twin, and
    the ratio is taken within that pair: on a shared machine, load comes and
    goes over seconds, so adjacent runs are the fairest comparison.
    """
    batches: Batches = [
        [
            {"id": i, "name": f"name-{i}", "score": i * 0.5}
            for i in range(s, min(s + args.batch, args.rows))
        ]
        for s in range(0, args.rows, args.batch)
    ]
    hand: dict[str, Callable[[], None]] = {
        "psycopg copy": lambda: psycopg_copy(url, batches),
        "psycopg copy + merge": lambda: psycopg_copy(url, batches, merge=True),
        "psycopg executemany": lambda: psycopg_executemany(url, batches),
    }
    sinks: list[tuple[str, str, Callable[[], Any], int]] = [
        ("CopyInto", "psycopg copy", lambda: fg.CopyInto(url, TABLE, columns=COLUMNS), 1),
        ("CopyInto", "psycopg copy", lambda: fg.CopyInto(url, TABLE, columns=COLUMNS), 4),
        (
            "CopyInto key=",
            "psycopg copy + merge",
            lambda: fg.CopyInto(url, TABLE, columns=COLUMNS, key="id"),
            4,
        ),
        ("Upsert", "psycopg executemany", lambda: fg.Upsert(url, TABLE, key="id"), 4),
    ]
    pairs = [
        (
            f"{kind} workers={workers} [{backend}]",
            twin,
            lambda make=make, backend=backend, workers=workers: graph_load(
                make(), batches, backend, workers
            ),
        )
        for backend in args.backends
        for kind, twin, make, workers in sinks
    ]
    rates: dict[str, list[float]] = {name: [] for name in hand}
    ratios: dict[str, list[float]] = {}
    for repeat in range(args.repeats):
        for name, twin, load in pairs:
            reference = timed(hand[twin], url, args.rows)
            measured = timed(load, url, args.rows)
            rates[twin].append(reference)
            rates.setdefault(name, []).append(measured)
            ratios.setdefault(name, []).append(measured / reference)
            print(
                f"  repeat {repeat + 1}: {name}: {measured:,.0f} rows/s, "
                f"{measured / reference:.2f}x {twin}",
                file=sys.stderr,
            )
    best = {name: max(values) for name, values in rates.items()}
    return best, {name: statistics.median(values) for name, values in ratios.items()}


def report(best: dict[str, float], ratios: dict[str, float], args: argparse.Namespace) -> bool:
    print(
        f"\n{args.rows:,} rows in batches of {args.batch:,}; {args.repeats} repeats: "
        "best rows/s, median of paired ratios\n"
    )
    print("| load | rows/s | vs hand-written twin | target |")
    print("| --- | ---: | ---: | --- |")
    passed = True
    twins = {"CopyInto key=": "psycopg copy + merge", "Upsert": "psycopg executemany"}
    for name in best:
        ratio, target = "", ""
        if name in ratios:
            kind = name.split(" workers=")[0]
            ratio = f"{ratios[name]:.2f}x {twins.get(kind, 'psycopg copy')}"
            if name.startswith(f"CopyInto workers={TARGET_WORKERS} "):
                ok = ratios[name] >= TARGET
                passed &= ok
                target = f">= {TARGET}x: {'met' if ok else 'MISSED'}"
        print(f"| {name} | {best[name]:,.0f} | {ratio} | {target} |")
    upsert = [best[f"Upsert workers=4 [{b}]"] / best["psycopg copy"] for b in args.backends]
    print(f"\nUpsert with batches runs at {', '.join(f'{u:.2f}x' for u in upsert)} COPY's rate.")
    return passed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="an existing PostgreSQL (default: start a throwaway one)")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--backend", choices=BACKENDS, help="one backend (default: both)")
    args = parser.parse_args(argv)
    args.backends = (args.backend,) if args.backend else BACKENDS
    with contextlib.ExitStack() as stack:
        url = args.url or stack.enter_context(throwaway_server())
        best, ratios = measure(url, args)
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute(f"DROP TABLE IF EXISTS {TABLE}")
    return 0 if report(best, ratios, args) else 1


if __name__ == "__main__":
    sys.exit(main())
