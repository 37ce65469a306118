"""Bulk loads into a real PostgreSQL: CopyInto and Upsert against hand-written psycopg.

Run ``python benchmarks/bench_bulk.py [--url postgresql://...] [--rows 100000]
[--batch 1000] [--repeats 3] [--backend asyncio|trio]``. Without ``--url`` it
starts a throwaway server (``initdb`` + ``pg_ctl`` in a temporary directory,
Unix socket only, ``fsync=off`` as in the tests) and removes it at the end.

The same batches of dict rows (built once, not timed) are loaded by:

- **psycopg copy** (the reference): sync psycopg 3, one ``cursor.copy`` per
  batch in its own transaction, ``write_row`` per row: what a careful
  hand-written loader does, with no event loop and no thread hops.
- **CopyInto**: a flowgraph graph, source of batches -> ``fg.CopyInto`` sink.
- **psycopg copy + merge** and **CopyInto key=**: the same, exactly-once:
  COPY into a temporary table, then ``INSERT ... ON CONFLICT`` per batch.
- **psycopg executemany** and **Upsert**: ``INSERT ... ON CONFLICT`` with
  ``executemany`` per batch (psycopg pipelines it), by hand and ``fg.Upsert``.

Each flowgraph row is compared with its hand-written twin, as a ratio of
throughputs (above 1: flowgraph is faster). Runs are interleaved, best of
``--repeats``. Target: CopyInto >= 0.8x psycopg copy on each backend; the exit
status is 1 if it is missed.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import pwd
import shutil
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


def graph_load(sink: Any, batches: Batches, backend: str) -> None:
    graph = fg.Graph("bulk")
    graph.chain(graph.source(batches, name="batches"), graph.sink(sink))
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


def measure(url: str, args: argparse.Namespace) -> dict[str, float]:
    batches: Batches = [
        [
            {"id": i, "name": f"name-{i}", "score": i * 0.5}
            for i in range(s, min(s + args.batch, args.rows))
        ]
        for s in range(0, args.rows, args.batch)
    ]
    cases: dict[str, Callable[[], None]] = {
        "psycopg copy": lambda: psycopg_copy(url, batches),
        "psycopg copy + merge": lambda: psycopg_copy(url, batches, merge=True),
        "psycopg executemany": lambda: psycopg_executemany(url, batches),
    }
    for backend in args.backends:
        cases[f"CopyInto [{backend}]"] = lambda b=backend: graph_load(
            fg.CopyInto(url, TABLE, columns=COLUMNS), batches, b
        )
        cases[f"CopyInto key= [{backend}]"] = lambda b=backend: graph_load(
            fg.CopyInto(url, TABLE, columns=COLUMNS, key="id"), batches, b
        )
        cases[f"Upsert [{backend}]"] = lambda b=backend: graph_load(
            fg.Upsert(url, TABLE, key="id"), batches, b
        )
    best: dict[str, float] = dict.fromkeys(cases, 0.0)
    for repeat in range(args.repeats):
        for name, load in cases.items():  # interleaved: load on the machine hits all alike
            best[name] = max(best[name], timed(load, url, args.rows))
            print(f"  repeat {repeat + 1}: {name}: {best[name]:,.0f} rows/s", file=sys.stderr)
    return best


def report(best: dict[str, float], args: argparse.Namespace) -> bool:
    print(f"\n{args.rows:,} rows in batches of {args.batch:,}; best of {args.repeats}\n")
    print("| load | rows/s | vs hand-written | target |")
    print("| --- | ---: | ---: | --- |")
    passed = True
    for name, reference in (
        ("psycopg copy", None),
        ("psycopg copy + merge", None),
        ("psycopg executemany", None),
        *((f"CopyInto [{b}]", "psycopg copy") for b in args.backends),
        *((f"CopyInto key= [{b}]", "psycopg copy + merge") for b in args.backends),
        *((f"Upsert [{b}]", "psycopg executemany") for b in args.backends),
    ):
        ratio, target = "", ""
        if reference is not None:
            value = best[name] / best[reference]
            ratio = f"{value:.2f}x {reference}"
            if name.startswith("CopyInto ["):
                ok = value >= TARGET
                passed &= ok
                target = f">= {TARGET}x: {'met' if ok else 'MISSED'}"
        print(f"| {name} | {best[name]:,.0f} | {ratio} | {target} |")
    upsert = [best[f"Upsert [{b}]"] / best["psycopg copy"] for b in args.backends]
    print(f"\nUpsert with batches runs at {', '.join(f'{u:.2f}x' for u in upsert)} COPY's rate.")
    return passed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="an existing PostgreSQL (default: start a throwaway one)")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backend", choices=BACKENDS, help="one backend (default: both)")
    args = parser.parse_args(argv)
    args.backends = (args.backend,) if args.backend else BACKENDS
    with contextlib.ExitStack() as stack:
        url = args.url or stack.enter_context(throwaway_server())
        best = measure(url, args)
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute(f"DROP TABLE IF EXISTS {TABLE}")
    return 0 if report(best, args) else 1


if __name__ == "__main__":
    sys.exit(main())
