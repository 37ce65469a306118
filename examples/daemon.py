"""A polling daemon that copies new rows from one database to another and loses nothing.

The upstream is an ``events`` table that another program keeps appending to.
The daemon polls it for rows newer than its checkpoint, enriches them, and
upserts them by ``id`` into ``events_copy``. Its checkpoint and dead letters
live in a state database, so a restart resumes where the last run stopped.

Run as a script, it simulates the whole life of such a daemon in a temporary
directory: a writer appends events while the daemon runs, the daemon is
stopped gracefully (as SIGTERM would), more events arrive while it is down,
and a second run catches up and stops once its checkpoint has reached the
last event. As a real daemon, from the directory holding
``upstream.db``::

    flowgraph run examples/daemon.py:graph --state sqlite:///state.db
"""

from __future__ import annotations

import contextlib
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

import flowgraph as fg

BATCH = 200


def build_graph(upstream: Path, target: Path) -> fg.Graph:
    graph = fg.Graph("copy_events")

    async def new_events(after: int | None) -> list[fg.Positioned]:
        """The next batch of rows after the position *after* (the last id handled)."""
        rows = await anyio.to_thread.run_sync(read_after, upstream, after or 0)
        return [fg.Positioned({"id": id_, "kind": kind}, position=id_) for id_, kind in rows]

    events = graph.source(
        fg.poll(new_events, every=0.1, until_empty=True), checkpoint=True, max_in_flight=500
    )

    @graph.transform(workers=4)
    async def enrich(event: dict[str, Any]) -> dict[str, Any]:
        await anyio.sleep(0.001)  # a lookup in another service
        return {**event, "priority": 2 if event["kind"] == "alert" else 1}

    store = graph.sink(fg.Upsert(target, "events_copy", key="id"), name="store", workers=2)
    graph.chain(events, enrich, store)
    return graph


def read_after(upstream: Path, after: int) -> list[tuple[int, str]]:
    with contextlib.closing(sqlite3.connect(upstream)) as db:
        query = "SELECT id, kind FROM events WHERE id > ? ORDER BY id LIMIT ?"
        return db.execute(query, (after, BATCH)).fetchall()


def append_events(upstream: Path, count: int) -> None:
    with contextlib.closing(sqlite3.connect(upstream)) as db, db:
        db.execute("CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, kind TEXT)")
        db.executemany(
            "INSERT INTO events (kind) VALUES (?)",
            [("alert" if i % 10 == 0 else "click",) for i in range(count)],
        )


def count(db_path: Path, table: str) -> int:
    with contextlib.closing(sqlite3.connect(db_path)) as db:
        (rows,) = db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()
    return int(rows)


graph = build_graph(Path("upstream.db"), Path("target.db"))


async def run_for(graph: fg.Graph, state: fg.Checkpoints, seconds: float, upstream: Path) -> int:
    """Run the daemon while events keep arriving, then stop it as SIGTERM would."""
    async with fg.open_run(graph, checkpoints=state) as run:
        for _ in range(int(seconds / 0.1)):
            await anyio.to_thread.run_sync(append_events, upstream, 50)
            await anyio.sleep(0.1)
        run.stop(grace=5)
    return run.result.statistics["store"].items_in


async def run_until_caught_up(graph: fg.Graph, state: fg.Checkpoints, upstream: Path) -> int:
    """Run the daemon until its checkpoint reaches the last upstream event, then stop it."""
    last_id = await anyio.to_thread.run_sync(count, upstream, "events")
    caught_up = anyio.Event()

    def check(event: fg.CheckpointCommitted) -> None:
        if event.positions.get("new_events", 0) >= last_id:
            caught_up.set()

    hooks = [(fg.CheckpointCommitted, check)]
    async with fg.open_run(graph, checkpoints=state, hooks=hooks) as run:
        with anyio.fail_after(30):
            await caught_up.wait()
        run.stop(grace=5)
    return run.result.statistics["store"].items_in


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        upstream, target = Path(tmp) / "upstream.db", Path(tmp) / "target.db"
        daemon = build_graph(upstream, target)
        state = fg.Checkpoints(Path(tmp) / "state.db", every=100, interval=0.2)
        append_events(upstream, 1_000)

        stored = await run_for(daemon, state, 1.0, upstream)
        print(f"run 1: stored {stored} events, checkpoint {await state.load(daemon.name)}")

        append_events(upstream, 500)  # arrives while the daemon is down
        stored = await run_until_caught_up(daemon, state, upstream)
        print(f"run 2: stored {stored} events, checkpoint {await state.load(daemon.name)}")

        sent, copied = count(upstream, "events"), count(target, "events_copy")
        print(f"upstream: {sent} events; events_copy: {copied} rows, one per id")
        assert sent == copied == (await state.load(daemon.name))["new_events"]


if __name__ == "__main__":
    anyio.run(main)
