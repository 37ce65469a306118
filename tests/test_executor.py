"""The executor seam: executor= on nodes and graphs, and any concurrent.futures.Executor (#12)."""

from __future__ import annotations

import concurrent.futures
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

import flowgraph as fg


def square(x: int) -> int:
    return x * x


def pid_and_square(x: int) -> tuple[int, int]:
    return os.getpid(), x * x


def digits(x: int) -> Iterator[int]:
    yield from (int(d) for d in str(x))


def nap(x: int) -> int:
    time.sleep(5)
    return x


async def async_square(x: int) -> int:
    return x * x


async def async_digits(x: int) -> AsyncIterator[int]:
    yield x


def _run_through(fn: Any, items: list[int], **options: Any) -> tuple[fg.Graph, list[Any]]:
    g = fg.Graph("executors")
    seen: list[Any] = []

    async def keep(x: Any) -> None:
        seen.append(x)

    g.chain(g.source(items, name="src"), g.transform(fn, name="work", **options), g.sink(keep))
    return g, seen


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"executor": "thread"},
            r"^executor of transform 'square': there is no executor 'thread': did you mean "
            r"'threads'\?",
        ),
        (
            {"executor": 4},
            r"^executor of transform 'square' must be 'loop', 'threads', 'processes', an "
            r"executor such as fg.Threads\(8\), or a concurrent.futures.Executor \(got 4\)$",
        ),
        (
            {"executor": "threads", "inline": True},
            r"^transform 'square' has inline=True \(run on the event loop\) and "
            r"executor='threads': choose one$",
        ),
    ],
)
def test_bad_executors_are_refused_at_declaration(options: dict[str, Any], message: str) -> None:
    """A misspelt name, a wrong type, or two contradicting choices fail when declared."""
    with pytest.raises(fg.GraphError, match=message):
        fg.Graph("g").transform(square, **options)


@pytest.mark.parametrize("fn", [async_square, async_digits])
def test_async_functions_refuse_a_non_loop_executor(fn: Any) -> None:
    """An async function runs on the event loop; executor='threads' for it is a mistake."""
    with pytest.raises(fg.GraphError, match=r"which runs on the event loop: executor='threads'"):
        fg.Graph("g").transform(fn, executor="threads")


def test_a_graph_default_executor_applies_to_sync_functions_only() -> None:
    """fg.Graph(executor=...) is where sync nodes run; async nodes stay on the loop."""
    g = fg.Graph("g", executor="loop")
    assert g.transform(square).executor == "loop"
    assert g.transform(async_square).executor is None


async def test_executor_loop_runs_sync_functions_on_the_event_loop() -> None:
    """executor='loop' calls the function in the event loop's thread."""
    loop_thread = threading.get_ident()

    def where(x: int) -> int:
        return threading.get_ident()

    g, seen = _run_through(where, [1, 2], executor="loop")
    await g.run()
    assert seen == [loop_thread, loop_thread]


async def test_a_thread_pool_executor_plugs_in() -> None:
    """Any concurrent.futures.Executor runs a node's calls."""
    with concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="mine") as pool:
        names: list[str] = []

        def named(x: int) -> int:
            names.append(threading.current_thread().name)
            return x * 2

        g, seen = _run_through(named, list(range(20)), executor=pool, workers=2)
        await g.run()
    assert sorted(seen) == [x * 2 for x in range(20)]
    assert all(name.startswith("mine") for name in names)


async def test_a_process_pool_executor_runs_functions_in_other_processes() -> None:
    """A ProcessPoolExecutor computes in worker processes; results come back in the graph."""
    with concurrent.futures.ProcessPoolExecutor(2) as pool:
        g, seen = _run_through(pid_and_square, list(range(10)), executor=pool, workers=2)
        await g.run()
    assert sorted(square for _, square in seen) == [x * x for x in range(10)]
    assert os.getpid() not in {pid for pid, _ in seen}


async def test_a_generator_on_a_process_pool_sends_every_output() -> None:
    """A sync generator on a pool runs to the end there; its outputs are then sent one by one."""
    with concurrent.futures.ProcessPoolExecutor(1) as pool:
        g, seen = _run_through(digits, [123, 45], executor=pool)
        result = await g.run()
    assert sorted(seen) == [1, 2, 3, 4, 5]
    assert result.statistics["work"].items_out == 5


async def test_a_timeout_abandons_a_call_on_a_pool() -> None:
    """A call running in a pool's process that overruns times out; the run does not wait for it."""
    with concurrent.futures.ProcessPoolExecutor(1) as pool:
        g, seen = _run_through(nap, [1], executor=pool, timeout=0.3, on_error="skip")
        started = time.monotonic()
        result = await g.run()
        elapsed = time.monotonic() - started
        pool.shutdown(wait=False, cancel_futures=True)
    assert result.statistics["work"].skipped == 1
    assert seen == []
    assert elapsed < 3
