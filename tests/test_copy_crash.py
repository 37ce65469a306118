"""kill -9 of a real daemon loading batches with CopyInto into a real PostgreSQL.

The daemon reads batches of rows from a checkpointed source (each batch a
``fg.Positioned(rows, batch_number)``) and loads every batch twice: with
``CopyInto(..., key="id")`` into ``loaded`` (primary key ``id``) and with a
plain ``CopyInto`` into ``appended`` (no key). It is killed with SIGKILL at
seeded random moments and restarted until it finishes. Then: ``loaded`` holds
every row exactly once with its value (exactly-once by key); ``appended`` holds
every row at least once, and each batch's rows the same number of times (a
batch is one transaction: it is loaded whole or not at all, even under
``kill -9``).
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
from pathlib import Path
from typing import Any

import pytest
from databases import connect

N = 6000
BATCH = 50
GRAPH = "copycrash"

DAEMON = r'''
"""Checkpointed batches -> work -> (CopyInto with key, CopyInto without key)."""
import json
import sys

import anyio

import flowgraph as fg

config = json.loads(sys.argv[1])
N, BATCH, URL = config["n"], config["batch"], config["url"]

graph = fg.Graph("copycrash")


@graph.source(checkpoint=True, max_in_flight=config["max_in_flight"])
async def batches(after):
    for number in range(0 if after is None else after + 1, N // BATCH):
        ids = range(number * BATCH, (number + 1) * BATCH)
        yield fg.Positioned([{"id": i, "value": f"v{i}"} for i in ids], number)


@graph.transform(workers=4)
async def work(rows):
    await anyio.sleep(config["delay"])
    return rows


graph.chain(batches, work)
graph.connect(
    work,
    graph.sink(fg.CopyInto(URL, "loaded", columns=["id", "value"], key="id"), name="loaded", workers=2),
    graph.sink(fg.CopyInto(URL, "appended", columns=["id", "value"]), name="appended", workers=2),
)


async def main():
    checkpoints = fg.Checkpoints(URL, every=5, interval=0.5)
    async with fg.open_run(graph, checkpoints=checkpoints) as run:
        print("started", flush=True)
    print(json.dumps({"stopped": run.result.stopped}), flush=True)


anyio.run(main, backend=config["backend"])
'''


def query(url: str, sql: str, *params: Any) -> list[Any]:
    with connect(url) as connection:
        return list(connection.execute(sql, params).fetchall())


def wait_for_dead_clients(url: str, timeout: float = 10.0) -> None:
    """Wait until PostgreSQL has ended the killed daemon's sessions (a last COMMIT may land)."""
    deadline = time.monotonic() + timeout
    while query(
        url,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
    )[0][0]:
        assert time.monotonic() < deadline, "sessions outlived the daemon"
        time.sleep(0.01)


def wait_for_progress(url: str, process: subprocess.Popen[bytes]) -> None:
    """Wait until this run has loaded two more batches, so the kill lands mid-load."""
    before = query(url, "SELECT count(*) FROM appended")[0][0]
    deadline = time.monotonic() + 15
    while query(url, "SELECT count(*) FROM appended")[0][0] < before + 2 * BATCH:
        if process.poll() is not None:
            return
        assert time.monotonic() < deadline, "the daemon made no progress"
        time.sleep(0.01)


def start(tmp_path: Path, config: dict[str, Any], run: int) -> tuple[subprocess.Popen[bytes], Path]:
    script = tmp_path / "daemon.py"
    script.write_text(DAEMON)
    out, err = tmp_path / f"run{run}.out", tmp_path / f"run{run}.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, str(script), json.dumps(config)], stdout=stdout, stderr=stderr
        )
    return process, out


def wait_started(process: subprocess.Popen[bytes], out: Path) -> None:
    deadline = time.monotonic() + 15
    while "started" not in out.read_text():
        assert process.poll() is None, f"daemon exited with {process.returncode}"
        assert time.monotonic() < deadline, "daemon did not start"
        time.sleep(0.005)


@pytest.mark.timeout(90)
def test_kill_9_with_copy_into_by_key_loses_nothing_and_duplicates_nothing(
    postgres_schema_url: str, backend: str, tmp_path: Path
) -> None:
    """SIGKILL at random moments, restart until done: keyed table exact, batches whole."""
    url = postgres_schema_url
    with connect(url) as connection:
        connection.execute("CREATE TABLE loaded (id BIGINT PRIMARY KEY, value TEXT NOT NULL)")
        connection.execute("CREATE TABLE appended (id BIGINT NOT NULL, value TEXT NOT NULL)")
    config = {"url": url, "backend": backend, "n": N, "batch": BATCH, "max_in_flight": 8}
    config["delay"] = 0.05
    rng = random.Random(f"copy-kill-9:{backend}")
    processes: list[subprocess.Popen[bytes]] = []
    kills = 0
    try:
        for run in range(5):
            process, out = start(tmp_path, config, run)
            processes.append(process)
            wait_started(process, out)
            wait_for_progress(url, process)
            time.sleep(rng.uniform(0.0, 0.2))
            if process.poll() is not None:
                break
            os.kill(process.pid, signal.SIGKILL)
            assert process.wait(10) == -signal.SIGKILL
            kills += 1
            wait_for_dead_clients(url)
        process, out = start(tmp_path, config, 99)
        processes.append(process)
        assert process.wait(60) == 0, (tmp_path / "run99.err").read_text()[-3000:]
    finally:
        for each in processes:
            if each.poll() is None:  # pragma: no cover
                each.kill()
                each.wait(10)
    assert kills >= 2, "the daemon finished too early to be killed"
    (position,) = query(
        url,
        "SELECT position FROM flowgraph_checkpoints WHERE graph = %s AND source = %s",
        GRAPH,
        "batches",
    )
    assert json.loads(position[0]) == N // BATCH - 1
    loaded = query(url, "SELECT id, value FROM loaded ORDER BY id")
    assert loaded == [(i, f"v{i}") for i in range(N)], "keyed load must hold each row once"
    appended = Counter(row[0] for row in query(url, "SELECT id FROM appended"))
    assert set(appended) == set(range(N)), "nothing lost"
    for number in range(N // BATCH):
        copies = {appended[i] for i in range(number * BATCH, (number + 1) * BATCH)}
        assert len(copies) == 1, f"batch {number} was loaded in part: {copies}"
    replayed = sum(appended.values()) - N
    assert replayed > 0, "no kill landed between a load and its checkpoint: nothing was replayed"
    print(f"kills={kills} replayed rows={replayed}")
