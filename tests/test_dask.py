"""Sync nodes on a real Dask LocalCluster: fg.Dask (#12).

The cluster (two worker processes) is started once per session by the
``dask_client`` fixture of ``tests/clusters.py``.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest
import remote

import flowgraph as fg
from flowgraph.testing import VirtualClock

pytestmark = pytest.mark.xdist_group("dask")  # one cluster per session


@pytest.fixture
def dask(dask_client: Any) -> fg.Dask:
    return fg.Dask(dask_client)


def _chain(fn: Any, items: list[Any], **options: Any) -> tuple[fg.Graph, list[Any]]:
    g = fg.Graph("dask")
    seen: list[Any] = []
    g.chain(
        g.source(items, name="src"),
        g.transform(fn, name="work", **options),
        g.sink(seen.append, name="out", executor="loop"),
    )
    return g, seen


async def test_calls_run_on_the_cluster(dask: fg.Dask) -> None:
    """Items go to the cluster's worker processes; results come back into the graph."""
    g, seen = _chain(remote.pid_and_square, list(range(30)), executor=dask, workers=4)
    result = await g.run()
    assert sorted(square for _, square in seen) == [x * x for x in range(30)]
    assert os.getpid() not in {pid for pid, _ in seen}
    assert result.statistics["work"].items_out == 30


async def test_a_node_has_at_most_its_workers_tasks_on_the_cluster(dask: fg.Dask) -> None:
    """With one worker, the node's tasks run one after the other although two could run."""
    g, seen = _chain(remote.interval, [0.05] * 6, executor=dask, workers=1)
    await g.run()
    intervals = sorted(seen)
    assert len(intervals) == 6
    assert all(end <= start for (_, end), (start, _) in itertools.pairwise(intervals))


async def test_a_generator_sends_every_output(dask: fg.Dask) -> None:
    g, seen = _chain(remote.digits, [123, 45], executor=dask)
    result = await g.run()
    assert sorted(seen) == [1, 2, 3, 4, 5]
    assert result.statistics["work"].items_out == 5


async def test_an_exception_fails_the_item_as_itself(dask: fg.Dask) -> None:
    g, _ = _chain(remote.fail_on_three, [1, 3], executor=dask)
    with pytest.raises(
        fg.NodeError, match=r"^node 'work' failed on item 3; last error: ValueError"
    ):
        await g.run()


async def test_a_call_that_overruns_its_timeout_has_its_future_cancelled(dask: fg.Dask) -> None:
    """The item fails at its deadline; the run does not wait for the task."""
    g, seen = _chain(
        remote.sleep_for, [0.01, 2.5], executor=dask, workers=2, timeout=0.3, on_error="skip"
    )
    started = time.monotonic()
    result = await g.run()
    assert time.monotonic() - started < 2
    stats = result.statistics["work"]
    assert (stats.skipped, stats.abandoned) == (1, 0)
    assert seen == [0.01]


async def test_timeouts_on_dask_hold_in_virtual_time(
    dask: fg.Dask, virtual_clock: VirtualClock
) -> None:
    """While the cluster works, virtual time flows at the real rate."""
    g, seen = _chain(remote.sleep_for, [0.1, 1.5], executor=dask, timeout=1, on_error="skip")
    result = await g.run()
    assert seen == [0.1]
    assert result.statistics["work"].skipped == 1
    assert 1.1 <= anyio.current_time() < 10


async def test_a_task_whose_worker_died_runs_again_elsewhere(
    dask: fg.Dask, dask_client: Any, tmp_path: Path
) -> None:
    """A lost worker is Dask's business: the scheduler runs the task again, and it succeeds."""
    items = [("exit", 1, str(tmp_path / "died-once"))]
    g, seen = _chain(remote.die, items, executor=dask)
    try:
        with anyio.fail_after(30):
            result = await g.run()
    finally:
        await anyio.to_thread.run_sync(dask_client.wait_for_workers, 2)
    assert seen == [1]
    assert (result.statistics["work"].errors, result.statistics["work"].retries) == (0, 0)


async def test_a_task_that_kills_its_workers_fails_its_item(
    dask: fg.Dask, dask_client: Any
) -> None:
    """Once the task has killed more workers than allowed, the item fails with KilledWorker."""
    failures: list[BaseException] = []
    g, seen = _chain(remote.die, [("exit", 2, "")], executor=dask, on_error="skip")
    g.on(fg.ItemFailed)(lambda event: failures.append(event.failure.error))
    try:
        with anyio.fail_after(30):
            result = await g.run()
    finally:
        await anyio.to_thread.run_sync(dask_client.wait_for_workers, 2)
    assert seen == []
    assert result.statistics["work"].skipped == 1
    assert [type(error).__name__ for error in failures] == ["KilledWorker"]


async def test_an_address_connects_on_first_use(dask_client: Any) -> None:
    """fg.Dask("tcp://...") makes its own client when a run first needs it; close() ends it."""
    address = dask_client.scheduler.address
    executor = fg.Dask(address)
    assert repr(executor) == f"Dask({address!r})"
    try:
        g, seen = _chain(remote.square, [2, 3], executor=executor)
        await g.run()
    finally:
        executor.close()
    assert sorted(seen) == [4, 9]


def test_what_cannot_go_to_dask_is_refused(dask: fg.Dask) -> None:
    lock = threading.Lock()
    with pytest.raises(
        fg.GraphError,
        match=r"^node 'locked' runs on Dask, but its function cannot be pickled \(TypeError: "
        r"cannot pickle '_thread.lock' object\)$",
    ):
        fg.Graph("g").transform(lambda x: lock, name="locked", executor=dask)
    with pytest.raises(
        fg.GraphError,
        match=r"^fg.Dask takes a distributed.Client or a scheduler address \(got 8\)$",
    ):
        fg.Dask(8)


DAEMON = r'''
"""A checkpointed daemon whose middle node runs on a Dask cluster: offsets -> work -> upsert."""
import json
import sys
import time

import anyio

import flowgraph as fg

config = json.loads(sys.argv[1])
URL, N = config["url"], config["n"]


def work(row):
    time.sleep(0.002)
    return {"id": row["id"], "value": f"v{row['id']}"}


graph = fg.Graph("on-dask")


@graph.source(checkpoint=True, max_in_flight=config["max_in_flight"])
async def offsets(after):
    for i in range(0 if after is None else after + 1, N):
        yield fg.Positioned({"id": i}, i)


dask = fg.Dask(config["scheduler"])
graph.chain(
    offsets,
    graph.transform(work, executor=dask, workers=8),
    graph.sink(fg.Upsert(URL, "upserted"), name="upsert"),
)


async def main():
    checkpoints = fg.Checkpoints(URL, every=10, interval=0.2)
    async with fg.open_run(graph, checkpoints=checkpoints) as run:
        print("started", flush=True)
        await run.wait_finished()
    dask.close()
    print("finished", flush=True)


anyio.run(main, backend=config["backend"])
'''


@pytest.mark.timeout(120)
def test_kill_9_of_a_daemon_working_on_dask_loses_nothing(
    dask_client: Any, backend: str, tmp_path: Path
) -> None:
    """SIGKILL the daemon while its items are on the cluster, restart until done: every offset is
    in the table once (an upsert) and the checkpoint reaches the end (#12)."""
    n, url = 400, f"sqlite:///{tmp_path / 'daemon.db'}"
    script = tmp_path / "daemon.py"
    script.write_text(DAEMON)
    config = {
        "url": url,
        "n": n,
        "max_in_flight": 40,
        "scheduler": dask_client.scheduler.address,
        "backend": backend,
    }
    rng = random.Random(f"dask-kill-9:{backend}")
    kills = 0
    for _ in range(10):
        out = tmp_path / f"run{kills}.out"
        with out.open("wb") as stdout:
            daemon = subprocess.Popen(
                [sys.executable, str(script), json.dumps(config)],
                stdout=stdout,
                stderr=subprocess.STDOUT,
                cwd=tmp_path,
            )
        try:
            deadline = time.monotonic() + 30
            while "started" not in out.read_text() and daemon.poll() is None:
                assert time.monotonic() < deadline, out.read_text()
                time.sleep(0.01)
            if kills < 2:
                time.sleep(rng.uniform(0.2, 0.6))
                daemon.send_signal(signal.SIGKILL)
            code = daemon.wait(60)
        finally:
            if daemon.poll() is None:
                daemon.kill()
                daemon.wait()
        if code == 0:
            break
        assert code == -signal.SIGKILL, out.read_text()
        kills += 1
    assert "finished" in out.read_text(), out.read_text()
    assert kills == 2, "the daemon finished before it could be killed twice"
    with sqlite3.connect(tmp_path / "daemon.db") as db:
        ids = Counter(row[0] for row in db.execute("SELECT id FROM upserted"))
        (position,) = db.execute(
            "SELECT position FROM flowgraph_checkpoints WHERE graph = 'on-dask'"
        ).fetchone()
    assert ids == Counter(range(n))
    assert json.loads(position) == n - 1


def test_without_dask_installed_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(
        ImportError, match=r"^fg.Dask needs dask.distributed: pip install 'flowgraph\[dask\]'$"
    ):
        fg.Dask("tcp://scheduler:8786")
