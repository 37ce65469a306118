"""Sync nodes in long-lived worker threads: timeouts hold, abandoned calls stay honest (#12)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

import flowgraph as fg
from flowgraph.testing import VirtualClock


def discard(x: object) -> None:
    pass


class Gate:
    """A sync call that blocks until released (or 10 s pass): a hung call we can end."""

    def __init__(self) -> None:
        self.released = threading.Event()
        self.running = 0
        self.most = 0
        self.lock = threading.Lock()

    def __call__(self, x: int) -> int:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            if x == 0:
                self.released.wait(10)
            return x
        finally:
            with self.lock:
                self.running -= 1


def _graph(gate: Gate, items: list[int], **options: Any) -> tuple[fg.Graph, list[int]]:
    g = fg.Graph("threads")
    seen: list[int] = []

    async def keep(x: int) -> None:
        seen.append(x)

    g.chain(g.source(items, name="src"), g.transform(gate, name="hang", **options), g.sink(keep))

    @g.on(fg.ItemFailed)
    def release(event: fg.ItemFailed) -> None:
        gate.released.set()

    return g, seen


async def test_a_sync_call_that_overruns_its_timeout_fails_at_the_deadline() -> None:
    """timeout= on a sync node fails the item with TimeoutError; the run goes on (#12)."""
    gate = Gate()
    g, seen = _graph(gate, [0, 1, 2], timeout=0.3, on_error="skip")
    started = time.monotonic()
    result = await g.run()
    assert time.monotonic() - started < 1.5
    stats = result.statistics["hang"]
    assert (stats.errors, stats.skipped, stats.items_out) == (1, 1, 2)
    assert sorted(seen) == [1, 2]


async def test_a_sync_timeout_holds_in_virtual_time(virtual_clock: VirtualClock) -> None:
    """Under virtual time a thread's work takes real time: the timeout fires at 0.3 s, not at once
    and not thousands of virtual seconds later (#12)."""
    gate = Gate()
    g, seen = _graph(gate, [0, 1], timeout=0.3, on_error="skip")
    real = time.monotonic()
    result = await g.run()
    assert time.monotonic() - real < 2
    assert 0.3 <= anyio.current_time() < 1.5
    assert result.statistics["hang"].skipped == 1
    assert seen == [1]


async def test_retry_attempt_timeout_holds_on_sync_nodes() -> None:
    """Retry(attempt_timeout=) abandons a hung attempt in a thread and retries (#12)."""
    calls: list[float] = []
    release = threading.Event()

    def slow_once(x: int) -> int:
        calls.append(time.monotonic())
        if len(calls) == 1:
            release.wait(10)
        return x * 10

    g = fg.Graph("retry")
    seen: list[int] = []

    async def keep(x: int) -> None:
        seen.append(x)
        release.set()

    retry = fg.Retry(attempts=3, attempt_timeout=0.2, initial=0.01)
    # Two threads: the abandoned first attempt keeps one busy until it returns.
    g.chain(g.source([4], name="src"), g.transform(slow_once, retry=retry, workers=2), g.sink(keep))
    result = await g.run()
    assert seen == [40]
    assert result.statistics["slow_once"].retries == 1


async def test_an_abandoned_call_keeps_its_thread_busy() -> None:
    """A node never runs more sync calls at once than its workers, abandoned ones included."""
    gate = Gate()
    g = fg.Graph("honest")
    seen: list[int] = []
    abandoned: list[int] = []

    async def keep(x: int) -> None:
        seen.append(x)

    g.chain(
        g.source([0, 1, 2, 3], name="src"),
        g.transform(gate, name="hang", workers=2, timeout=0.2, on_error="skip"),
        g.sink(keep),
    )
    failed = anyio.Event()
    g.on(fg.ItemFailed)(lambda event: failed.set())
    async with fg.open_run(g) as run:
        with anyio.fail_after(5):
            await failed.wait()
        abandoned.append(run.statistics()["hang"].abandoned)
        gate.released.set()
    assert abandoned == [1]
    assert gate.most <= 2
    assert sorted(seen) == [1, 2, 3]
    assert run.result.statistics["hang"].abandoned == 0


async def test_a_run_does_not_wait_long_for_a_hung_thread(caplog: pytest.LogCaptureFixture) -> None:
    """A finished run waits at most a second for calls abandoned in threads, and names them."""
    release = threading.Event()

    def stuck(x: int) -> int:
        release.wait(30)
        return x

    g = fg.Graph("stuck")
    g.chain(
        g.source([7], name="src"),
        g.transform(stuck, timeout=0.1, on_error="skip"),
        g.sink(discard, inline=True),
    )
    started = time.monotonic()
    try:
        await g.run()
    finally:
        release.set()
    assert time.monotonic() - started < 2.5
    assert (
        "node 'stuck': abandoning 1 sync call(s) still running in threads after 1s: stuck(7)"
        in (caplog.text)
    )


def test_an_abandoned_thread_cannot_keep_the_process_alive(tmp_path: Any) -> None:
    """A sync call hung forever does not stop the program from exiting (#13)."""
    script = tmp_path / "hung.py"
    script.write_text(
        textwrap.dedent(
            """
            import time
            import flowgraph as fg

            g = fg.Graph("hung")
            g.chain(
                g.source([1], name="src"),
                g.transform(lambda x: time.sleep(1000), name="forever", timeout=0.2,
                            on_error="skip"),
                g.sink(lambda x: None, name="out", inline=True),
            )
            result = fg.run(g)
            print("skipped", result.statistics["forever"].skipped)
            """
        )
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "skipped 1"
    assert time.monotonic() - started < 10


async def test_collections_are_read_on_the_loop_under_virtual_time(
    virtual_clock: VirtualClock,
) -> None:
    """graph.source([1, 2, 3]) finishes at virtual t=3 at once: nothing waits on a thread (#12)."""
    g = fg.Graph("virtual")
    seen: list[tuple[int, float]] = []

    async def slow(x: int) -> None:
        await anyio.sleep(1)
        seen.append((x, anyio.current_time()))

    g.chain(g.source([1, 2, 3], name="src"), g.sink(slow))
    real = time.monotonic()
    with anyio.fail_after(60):
        await g.run()
    assert time.monotonic() - real < 1
    assert seen == [(1, 1.0), (2, 2.0), (3, 3.0)]


async def test_a_sync_source_reads_a_bounded_number_of_items_ahead() -> None:
    """A sync generator source runs ahead of a blocked graph by at most its read-ahead."""
    produced = 0

    def numbers() -> Iterator[int]:
        nonlocal produced
        for n in range(10_000):
            produced += 1
            yield n

    release = anyio.Event()

    async def blocked(x: int) -> None:
        await release.wait()

    g = fg.Graph("ahead")
    g.chain(g.source(numbers), g.sink(blocked, buffer=4))
    async with fg.open_run(g) as run:
        await anyio.sleep(0.3)
        ahead = produced
        run.stop(grace=0)
    # 4 in the sink's buffer, 1 in its worker, 1 waiting to be sent, 64 read ahead in the thread.
    assert ahead <= 4 + 1 + 1 + 64


async def test_sync_calls_run_in_long_lived_threads() -> None:
    """A node's calls run in the same few flowgraph threads, not one thread hop each."""
    names: set[str] = set()

    def where(x: int) -> int:
        names.add(threading.current_thread().name)
        return x

    g = fg.Graph("where")
    g.chain(
        g.source(range(500), name="src"),
        g.transform(where, workers=3),
        g.sink(discard, inline=True),
    )
    await g.run()
    assert 1 <= len(names) <= 3
    assert all(name.startswith("flowgraph-worker-") for name in names)


async def test_a_shared_thread_pool_serves_several_nodes() -> None:
    """fg.Threads(2) given to two nodes runs at most two of their calls at once, in total."""
    lock = threading.Lock()
    running = most = 0

    def work(x: int) -> int:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.002)
        with lock:
            running -= 1
        return x

    pool = fg.Threads(2)
    g = fg.Graph("shared", executor=pool)
    src = g.source(range(60), name="src")
    a = g.transform(work, name="a", workers=4)
    b = g.transform(work, name="b", workers=4)
    out = g.sink(lambda x: None, name="out", workers=2, executor="loop")
    g.connect(src, a, b)
    g.connect(a, out)
    g.connect(b, out)
    try:
        result = await g.run()
    finally:
        pool.close()
    assert result.statistics["out"].items_in == 120
    assert most <= 2
