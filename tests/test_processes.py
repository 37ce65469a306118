"""Sync nodes in worker processes: fg.Processes and executor="processes" (#12).

The functions the processes run live in ``tests/remote.py``, a module that
imports only the standard library, so that starting a worker is cheap.
"""

from __future__ import annotations

import concurrent.futures
import os
import pickle
import signal
import sys
import time
import types
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import pytest
import remote
from hypothesis import given, settings
from hypothesis import strategies as st

import flowgraph as fg
from flowgraph._executors._pickling import RemoteTraceback
from flowgraph._executors._slot import WorkerProcessDied
from flowgraph.testing import VirtualClock


@pytest.fixture(scope="module")
def pool() -> Iterator[fg.Processes]:
    """Two worker processes shared by the tests of this module, as a daemon would share them."""
    processes = fg.Processes(2)
    yield processes
    processes.close()


def _chain(fn: Any, items: list[Any], **options: Any) -> tuple[fg.Graph, list[Any]]:
    g = fg.Graph("processes")
    seen: list[Any] = []
    g.chain(
        g.source(items, name="src"),
        g.transform(fn, name="work", **options),
        g.sink(seen.append, name="out", executor="loop"),
    )
    return g, seen


async def test_calls_run_in_worker_processes(pool: fg.Processes) -> None:
    """Items go to other processes and their results come back, in the graph."""
    g, seen = _chain(remote.pid_and_square, list(range(50)), executor=pool, workers=8)
    result = await g.run()
    assert sorted(square for _, square in seen) == [x * x for x in range(50)]
    assert os.getpid() not in {pid for pid, _ in seen}
    assert result.statistics["work"].items_out == 50


async def test_a_shared_pool_outlives_runs_and_serves_several_nodes(pool: fg.Processes) -> None:
    """Two nodes and two runs use the same two processes: no process starts per run."""
    g = fg.Graph("shared", executor=pool)
    seen: list[tuple[int, int]] = []
    g.chain(
        g.source(range(20), name="src"),
        g.transform(remote.add_one, workers=4),
        g.transform(remote.pid_and_square, workers=4),
        g.sink(seen.append, name="out", executor="loop"),
    )
    await g.run()
    first = {pid for pid, _ in seen}
    seen.clear()
    await g.run()
    assert sorted(square for _, square in seen) == [x * x for x in range(1, 21)]
    assert {pid for pid, _ in seen} <= first
    assert len(first) <= 2


async def test_executor_processes_gives_each_node_a_private_pool_for_the_run() -> None:
    """executor="processes" starts the node's workers processes, and stops them after the run."""
    g, seen = _chain(remote.pid_and_square, list(range(20)), executor="processes", workers=2)
    await g.run()
    pids = {pid for pid, _ in seen}
    assert 1 <= len(pids) <= 2
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


async def test_a_generator_runs_to_the_end_in_its_process(pool: fg.Processes) -> None:
    """A sync generator in a process sends all its outputs."""
    g, seen = _chain(remote.digits, [123, 45], executor=pool)
    result = await g.run()
    assert sorted(seen) == [1, 2, 3, 4, 5]
    assert result.statistics["work"].items_out == 5


async def test_an_exception_comes_back_as_itself_with_the_remote_traceback(
    pool: fg.Processes,
) -> None:
    """The function's own exception type and message, chained with where it was raised."""
    g, _ = _chain(remote.fail_on_three, [1, 2, 3], executor=pool)
    with pytest.raises(fg.NodeError) as caught:
        await g.run()
    error = caught.value.__cause__
    assert type(error) is ValueError
    assert str(error) == "three is not allowed (got 3)"
    assert isinstance(error.__cause__, RemoteTraceback)
    assert "in fail_on_three" in str(error.__cause__)
    assert 'raise ValueError(f"three is not allowed' in str(error.__cause__)


# --- what cannot be pickled -----------------------------------------------------------


def _module_without_file() -> types.ModuleType:
    module = types.ModuleType("made_in_memory")
    exec("def triple(x):\n    return 3 * x\n", module.__dict__)
    sys.modules[module.__name__] = module
    return module


@pytest.mark.parametrize("executor", ["processes", "pool"])
def test_a_function_that_cannot_be_pickled_is_refused_at_declaration(
    executor: str, pool: fg.Processes
) -> None:
    """A lambda cannot reach a worker process: the node is refused when declared, by name."""
    with pytest.raises(
        fg.GraphError,
        match=r"^node 'tripled' runs in worker processes, but its function '(?P<name>test_a_function"
        r"_that_cannot_be_pickled_is_refused_at_declaration.<locals>.<lambda>)' cannot be pickled "
        r"\(AttributeError: Can't pickle local object '(?P=name)'\): define it at the top level "
        r"of a module, not as a lambda or a nested function$",
    ):
        fg.Graph("g").transform(
            lambda x: 3 * x, name="tripled", executor=pool if executor == "pool" else executor
        )


@pytest.mark.parametrize("start_method", ["spawn", "forkserver"])
def test_a_function_from_a_module_without_a_file_is_refused_when_processes_start_afresh(
    start_method: str,
) -> None:
    """Under spawn and forkserver the child imports the function's module: it needs a file."""
    module = _module_without_file()
    try:
        with pytest.raises(
            fg.GraphError,
            match=rf"^node 'triple' runs in worker processes started with '{start_method}', but "
            r"its function 'triple' comes from module 'made_in_memory', which a new process "
            r"cannot import \(it was not loaded from a file\): move the function into a module "
            r"file$",
        ):
            fg.Graph("g").transform(
                module.triple, executor=fg.Processes(1, start_method=start_method)
            )
        # A forked child inherits the module: the same function is accepted.
        fg.Graph("g").transform(module.triple, executor=fg.Processes(1, start_method="fork"))
    finally:
        del sys.modules[module.__name__]


def test_bad_pool_arguments_are_refused() -> None:
    with pytest.raises(fg.GraphError, match=r"^processes must be an int >= 1 \(got 0\)$"):
        fg.Processes(0)
    with pytest.raises(
        fg.GraphError, match=r"^start_method must be one of .*'spawn'.* \(got 'thread'\)$"
    ):
        fg.Processes(2, start_method="thread")
    assert repr(fg.Processes(2, start_method="spawn")) == "Processes(2, start_method='spawn')"
    assert repr(fg.Processes(3)) == "Processes(3)"


async def test_an_item_that_cannot_be_pickled_fails_alone(pool: fg.Processes) -> None:
    """The unpicklable item fails with a clear error; the others of its chunk go through."""
    failures: list[BaseException] = []
    items: list[Any] = [1, 2, remote.Unpicklable(), 4]
    g, seen = _chain(remote.square, items, executor=pool, workers=4, on_error="skip")
    g.on(fg.ItemFailed)(lambda event: failures.append(event.failure.error))
    result = await g.run()
    assert sorted(seen) == [1, 4, 16]
    assert result.statistics["work"].skipped == 1
    (error,) = failures
    assert isinstance(error, pickle.PicklingError)
    assert str(error) == (
        "item Unpicklable() of node 'work' cannot be pickled to go to a worker process: "
        "TypeError: not picklable, on purpose"
    )


async def test_an_idle_pool_is_not_stalled_by_an_item_that_cannot_be_pickled() -> None:
    """Regression: a chunk of nothing but an unpicklable item left its process's thread waiting
    for results that would never come, and the next item with it."""
    pool = fg.Processes(1)
    try:
        with anyio.fail_after(20):
            warm, _ = _chain(remote.square, [1], executor=pool)
            await warm.run()
            g, seen = _chain(
                remote.square, [remote.Unpicklable(), 5], executor=pool, on_error="skip"
            )
            result = await g.run()
    finally:
        pool.close()
    assert seen == [25]
    assert result.statistics["work"].skipped == 1


async def test_a_result_that_cannot_be_pickled_fails_its_item(pool: fg.Processes) -> None:
    """The worker says which result could not come back; the item fails per on_error."""
    failures: list[BaseException] = []
    g, seen = _chain(remote.lock_for_two, [1, 2, 3], executor=pool, on_error="skip")
    g.on(fg.ItemFailed)(lambda event: failures.append(event.failure.error))
    await g.run()
    assert sorted(seen) == [1, 3]
    (error,) = failures
    assert isinstance(error, pickle.PicklingError)
    assert str(error).startswith("the result <unlocked _thread.lock object at ")
    assert str(error).endswith(
        "> cannot be pickled to leave the worker process: TypeError: cannot pickle "
        "'_thread.lock' object"
    )


# --- dying processes ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("how", "reason"), [("sigkill", "killed by signal SIGKILL"), ("exit", "exit code 3")]
)
async def test_a_process_that_dies_fails_only_its_item(how: str, reason: str) -> None:
    """kill -9 or os._exit mid-item: that item fails, naming the cause; the calls sent with it
    in the same chunk run in the replacement process; the run goes on."""
    pool = fg.Processes(1)
    failures: list[BaseException] = []
    items = [("", 0, ""), (how, 1, ""), ("", 2, ""), ("", 3, "")]
    try:
        g, seen = _chain(remote.die, items, executor=pool, workers=4, on_error="skip")
        g.on(fg.ItemFailed)(lambda event: failures.append(event.failure.error))
        with anyio.fail_after(30):
            result = await g.run()
    finally:
        pool.close()
    assert sorted(seen) == [0, 2, 3]
    assert result.statistics["work"].skipped == 1
    (error,) = failures
    assert isinstance(error, WorkerProcessDied)
    assert isinstance(error, concurrent.futures.process.BrokenProcessPool)
    assert str(error) == (
        f"the worker process of node 'work' died ({reason}) while running item "
        f"({how!r}, 1, ''); it has been replaced"
    )


async def test_an_item_whose_process_died_is_retried_in_a_new_one(
    pool: fg.Processes, tmp_path: Path
) -> None:
    """Retry treats a dead process like any failure: the second attempt succeeds."""
    marker = str(tmp_path / "died-once")
    retry = fg.Retry(attempts=2, initial=0.01)
    g, seen = _chain(remote.die, [("sigkill", 7, marker)], executor=pool, retry=retry)
    result = await g.run()
    assert seen == [7]
    assert result.statistics["work"].retries == 1


async def test_a_process_killed_from_outside_fails_its_item(tmp_path: Path) -> None:
    """SIGKILL sent by someone else to a busy worker process: only its item fails."""
    pool = fg.Processes(2)
    failures: list[BaseException] = []
    fifo = tmp_path / "pid"
    os.mkfifo(fifo)
    items = [(x, str(fifo)) for x in range(4)]
    g, seen = _chain(remote.report_pid_then_hang, items, executor=pool, workers=2, on_error="skip")
    g.on(fg.ItemFailed)(lambda event: failures.append(event.failure.error))

    async def kill_when_hung() -> None:
        pid = await anyio.to_thread.run_sync(fifo.read_text)  # blocks until item 0 writes it
        os.kill(int(pid), signal.SIGKILL)

    try:
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(kill_when_hung)
                result = await g.run()
    finally:
        pool.close()
    assert sorted(seen) == [1, 2, 3]
    assert result.statistics["work"].skipped == 1
    assert "died (killed by signal SIGKILL) while running item (0, " in str(failures[0])


async def test_the_calls_sent_with_a_dying_one_are_not_lost() -> None:
    """Once a function is known to be quick its calls travel in chunks; when the process dies
    in the middle of one, the calls after the dying one run in its replacement."""
    pool = fg.Processes(1)
    try:
        warm, _ = _chain(remote.die, [("", x, "") for x in range(50)], executor=pool, workers=8)
        await warm.run()
        items = [("exit" if x == 20 else "", x, "") for x in range(40)]
        g, seen = _chain(remote.die, items, executor=pool, workers=16, on_error="skip")
        result = await g.run()
    finally:
        pool.close()
    assert sorted(seen) == [x for x in range(40) if x != 20]
    assert result.statistics["work"].skipped == 1


# --- timeouts -------------------------------------------------------------------------


async def test_a_call_that_overruns_its_timeout_is_killed(tmp_path: Path) -> None:
    """The hung call fails with TimeoutError at its deadline and its process is killed:
    nothing of it runs on, and the others finish in a fresh process."""
    pool = fg.Processes(1)
    items = [(x, str(tmp_path)) for x in range(3)]
    g, seen = _chain(remote.pid_then_hang, items, executor=pool, timeout=0.5, on_error="skip")
    started = time.monotonic()
    try:
        result = await g.run()
    finally:
        pool.close()
    assert time.monotonic() - started < 5
    stats = result.statistics["work"]
    assert (stats.errors, stats.skipped, stats.abandoned) == (1, 1, 0)
    assert sorted(seen) == [1, 2]
    with pytest.raises(ProcessLookupError):
        os.kill(int((tmp_path / "pid").read_text()), 0)


async def test_retry_attempt_timeout_kills_the_hung_attempt(
    pool: fg.Processes, tmp_path: Path
) -> None:
    """Retry(attempt_timeout=) kills the first, hung attempt; the second one succeeds."""
    marker = tmp_path / "hung-once"
    retry = fg.Retry(attempts=2, attempt_timeout=0.5, initial=0.01)
    g, seen = _chain(remote.hang_once, [(5, str(marker))], executor=pool, retry=retry)
    result = await g.run()
    assert seen == [5]
    assert result.statistics["work"].retries == 1


async def test_timeouts_on_processes_hold_in_virtual_time(virtual_clock: VirtualClock) -> None:
    """While a process works, virtual time flows at the real rate: calls of 0.1 s under a 1 s
    timeout are not failed early, and a hung call fails after 1 virtual (and real) second."""
    pool = fg.Processes(1)
    g, seen = _chain(remote.sleep_for, [0.1, 0.1, 60.0], executor=pool, timeout=1, on_error="skip")
    real = time.monotonic()
    try:
        result = await g.run()
    finally:
        pool.close()
    assert seen == [0.1, 0.1]
    assert result.statistics["work"].skipped == 1
    assert 1.2 <= anyio.current_time() < 10
    assert time.monotonic() - real < 10


# --- any mix of executors -------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_threads() -> Iterator[fg.Threads]:
    threads = fg.Threads(3)
    yield threads
    threads.close()


@pytest.fixture(scope="module")
def futures_pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(3) as executor:
        yield executor


EXECUTORS = ["loop", "threads", "shared threads", "shared processes", "futures pool"]
STEPS = [remote.add_one, remote.double]


@settings(max_examples=15)
@given(
    items=st.lists(st.integers(-1000, 1000), max_size=40),
    chain=st.lists(
        st.tuples(st.sampled_from(EXECUTORS), st.integers(1, 4)), min_size=1, max_size=3
    ),
)
async def test_any_mix_of_executors_delivers_exactly_the_expected_items(
    pool: fg.Processes,
    shared_threads: fg.Threads,
    futures_pool: ThreadPoolExecutor,
    items: list[int],
    chain: list[tuple[str, int]],
) -> None:
    """Sync nodes on random executors, in a chain: every item arrives once, transformed."""
    objects: dict[str, Any] = {
        "shared threads": shared_threads,
        "shared processes": pool,
        "futures pool": futures_pool,
    }
    g = fg.Graph("mix")
    seen: list[int] = []
    nodes: list[Any] = [g.source(items, name="src")]
    expected = items
    for index, (executor, workers) in enumerate(chain):
        step = STEPS[index % 2]
        nodes.append(
            g.transform(
                step, name=f"n{index}", executor=objects.get(executor, executor), workers=workers
            )
        )
        expected = [step(x) for x in expected]
    nodes.append(g.sink(seen.append, name="out", executor="loop"))
    g.chain(*nodes)
    with anyio.fail_after(30):
        await g.run()
    assert Counter(seen) == Counter(expected)
