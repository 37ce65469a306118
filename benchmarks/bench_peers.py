"""Measure W1 (linear pipeline) in flowgraph and in peer libraries, all on asyncio.

Run ``python benchmarks/bench_peers.py`` (peers: ``pip install -e '.[bench-peers]'``).

W1 as in bench_core.py: an async generator source of 200,000 ints -> 3 async
transforms that return their input (``identity``) -> a counting sink, with
buffers of 100 items wherever the library lets you set them, written as a user
of each library would write it:

- flowgraph: ``linear_graph`` from _pipelines.py, run with ``anyio.run(..., backend="asyncio")``.
- aiostream: ``stream.iterate(source) | pipe.map(identity, task_limit=1)`` x3,
  consumed with ``async for``. Its operators have no buffer to set.
- pypeln: ``pl.task.map(identity, stage, workers=1, maxsize=100)`` x3, then
  ``await pl.task.each(sink, stage, workers=1, maxsize=100)``. Fed the async
  generator: a plain ``range`` would be read in a thread.
- async-graph-data-flow: an ``AsyncGraph`` of async-generator nodes, transforms
  and sink each fed by an ``asyncio.Queue(maxsize=100)``, run by
  ``AsyncExecutor(graph).execute()``.

Each run is timed around one whole synchronous call, event loop start and
teardown included, since ``AsyncExecutor.execute`` starts its own loop. Rounds
alternate between libraries so that a burst of load hits all alike; the table
reports the best of 3 runs and flowgraph's speed divided by each peer's (above 1
means flowgraph is faster). Every run checks the sink's count and sum. A peer
that is missing or fails is left out with a line saying why.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

import anyio
from _pipelines import BUFFER, Tally, identity, linear_graph

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

N = 200_000
TOTAL = N * (N - 1) // 2
REPEATS = 3
STAGES = 3


async def numbers(n: int) -> AsyncIterator[int]:
    """The source every peer gets: an async generator, as in flowgraph's W1 graph."""
    for i in range(n):
        yield i


def run_flowgraph(tally: Tally) -> None:
    graph = linear_graph(N, tally, stages=STAGES)
    anyio.run(graph.run, backend="asyncio")


def run_aiostream(tally: Tally) -> None:
    from aiostream import pipe, stream

    async def main() -> None:
        xs = stream.iterate(numbers(N))
        for _ in range(STAGES):
            xs = xs | pipe.map(identity, task_limit=1)
        async with xs.stream() as streamer:
            async for item in streamer:
                tally.add(item)

    asyncio.run(main())


def run_pypeln(tally: Tally) -> None:
    import pypeln as pl

    async def sink(item: int) -> None:
        tally.add(item)

    async def main() -> None:
        stage: Any = numbers(N)
        for _ in range(STAGES):
            stage = pl.task.map(identity, stage, workers=1, maxsize=BUFFER)
        await pl.task.each(sink, stage, workers=1, maxsize=BUFFER)

    asyncio.run(main())


def run_async_graph_data_flow(tally: Tally) -> None:
    from async_graph_data_flow import AsyncExecutor, AsyncGraph

    async def source() -> AsyncIterator[int]:
        for i in range(N):
            yield i

    async def transform(item: int) -> AsyncIterator[int]:
        yield await identity(item)

    async def sink(item: int) -> AsyncIterator[None]:
        tally.add(item)
        return
        yield

    graph = AsyncGraph(halt_on_exception=True)
    graph.add_node(source)
    names = [f"t{i}" for i in range(STAGES)]
    for name in names:
        graph.add_node(transform, name=name, queue=asyncio.Queue(maxsize=BUFFER))
    graph.add_node(sink, queue=asyncio.Queue(maxsize=BUFFER))
    for src, dst in zip(["source", *names], [*names, "sink"], strict=True):
        graph.add_edge(src, dst)
    AsyncExecutor(graph).execute()


LIBRARIES: dict[str, Callable[[Tally], None]] = {
    "flowgraph": run_flowgraph,
    "aiostream": run_aiostream,
    "pypeln": run_pypeln,
    "async-graph-data-flow": run_async_graph_data_flow,
}


def timed_run(run: Callable[[Tally], None]) -> float:
    """Seconds for one checked run of *run*."""
    tally = Tally()
    gc.collect()
    started = time.perf_counter()
    run(tally)
    seconds = time.perf_counter() - started
    tally.check(N, TOTAL)
    return seconds


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def main() -> int:
    versions = {name: _version(name) for name in LIBRARIES}
    times: dict[str, list[float]] = {}
    for name in LIBRARIES:
        if versions[name] is None:
            print(f"left out {name}: not installed (pip install -e '.[bench-peers]')")
        else:
            times[name] = []
    for round_ in range(REPEATS):
        for name in list(times):
            try:
                times[name].append(timed_run(LIBRARIES[name]))
            except Exception as exc:
                if name == "flowgraph":
                    raise
                print(f"left out {name}: run {round_ + 1} failed: {type(exc).__name__}: {exc}")
                del times[name]
            else:
                print(f"# {name} run {round_ + 1}: {times[name][-1]:.2f} s", file=sys.stderr)
    rates = {name: N / min(seconds) for name, seconds in times.items()}
    print(
        f"\nW1: {N:,} ints -> {STAGES} async identity transforms -> counting sink, "
        f"buffers {BUFFER}, asyncio, best of {REPEATS}; Python {sys.version.split()[0]}, "
        f"anyio {_version('anyio')}\n"
    )
    print("| library | version | items/s | flowgraph / peer |")
    print("| --- | --- | --- | --- |")
    for name, rate in rates.items():
        ratio = "" if name == "flowgraph" else f"{rates['flowgraph'] / rate:.2f}x"
        print(f"| {name} | {versions[name]} | {rate:,.0f} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
