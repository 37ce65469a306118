"""W9 and the scaling curves: how flowgraph's cost grows with workers, stages, branches and nodes.

Each point runs in a fresh Python process (so one point's garbage and caches
cannot help or hurt the next) and keeps the best of ``--repeats``.

* W9 workers: source -> one async stage awaiting ``anyio.sleep(0.01)`` with
  ``w`` workers -> sink, 20 items per worker. Efficiency = ideal / wall time,
  ideal = 20 x 10 ms. Compared with the bare floor (``w`` tasks that only
  sleep in a loop: no streams) and hand-written anyio memory streams.
* chain: source -> ``k`` trivial async stages -> sink, 50,000 items: cost per
  item per stage, flowgraph and hand-written.
* fan-out: source -> ``b`` trivial branches -> one sink, 50,000 items.
* start-up: a graph of ``k`` nodes in a chain with 1 item: cost per node of
  declaring and starting it, flowgraph and hand-written tasks and streams.

    python benchmarks/bench_scale.py                       # everything, both backends
    python benchmarks/bench_scale.py --curve workers --backend asyncio --points 100,1000
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel

import flowgraph as fg

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

ITEMS_PER_WORKER = 20
SLEEP = 0.01
CURVES = {
    "workers": [10, 100, 300, 1000, 2000, 5000],
    "chain": [1, 10, 30, 100],
    "fanout": [1, 4, 16, 32],
    "startup": [10, 100, 1000],
}
IMPLEMENTATIONS = {
    "workers": ("floor", "hand", "flowgraph"),
    "chain": ("hand", "flowgraph"),
    "fanout": ("hand", "flowgraph"),
    "startup": ("hand", "flowgraph"),
}


# -- the measured jobs (run in the child process) ---------------------------------------


async def _sleepy(x: int) -> int:
    await anyio.sleep(SLEEP)
    return x


async def _identity(x: int) -> int:
    return x


def _flowgraph_workers(workers: int) -> Callable[[], Awaitable[int]]:
    n = workers * ITEMS_PER_WORKER

    async def job() -> int:
        count = 0
        g = fg.Graph("w9")

        async def numbers() -> AsyncIterator[int]:
            for i in range(n):
                yield i

        async def sink(x: int) -> None:
            nonlocal count
            count += 1

        g.chain(
            g.source(numbers),
            g.transform(_sleepy, workers=workers, buffer=100),
            g.sink(sink, buffer=100),
        )
        await g.run()
        return count

    return job


def _hand_workers(workers: int) -> Callable[[], Awaitable[int]]:
    n = workers * ITEMS_PER_WORKER

    async def job() -> int:
        count = 0
        send, receive = anyio.create_memory_object_stream[int](100)
        out_send, out_receive = anyio.create_memory_object_stream[int](100)

        async def source() -> None:
            async with send:
                for i in range(n):
                    await send.send(i)

        async def stage(inbox: Any, outbox: Any) -> None:
            async with inbox, outbox:
                async for item in inbox:
                    await outbox.send(await _sleepy(item))

        async def sink() -> None:
            nonlocal count
            async with out_receive:
                async for _ in out_receive:
                    count += 1

        async with anyio.create_task_group() as tg:
            for _ in range(workers):
                tg.start_soon(stage, receive.clone(), out_send.clone())
            receive.close()
            out_send.close()
            tg.start_soon(source)
            tg.start_soon(sink)
        return count

    return job


def _floor_workers(workers: int) -> Callable[[], Awaitable[int]]:
    async def job() -> int:
        count = 0

        async def lane() -> None:
            nonlocal count
            for i in range(ITEMS_PER_WORKER):
                await _sleepy(i)
                count += 1

        async with anyio.create_task_group() as tg:
            for _ in range(workers):
                tg.start_soon(lane)
        return count

    return job


def _flowgraph_chain(
    stages: int, n: int = 50_000, branches: int = 0
) -> Callable[[], Awaitable[int]]:
    async def job() -> int:
        count = 0
        g = fg.Graph("chain")

        async def numbers() -> AsyncIterator[int]:
            for i in range(n):
                yield i

        async def sink(x: int) -> None:
            nonlocal count
            count += 1

        src, out = g.source(numbers), g.sink(sink, buffer=100)
        if branches:
            middle = [g.transform(_identity, name=f"b{i}", buffer=100) for i in range(branches)]
            g.connect(src, *middle)
            for node in middle:
                g.connect(node, out)
        else:
            middle = [g.transform(_identity, name=f"t{i}", buffer=100) for i in range(stages)]
            g.chain(src, *middle, out)
        await g.run()
        return count

    return job


def _hand_chain(stages: int, n: int = 50_000, branches: int = 0) -> Callable[[], Awaitable[int]]:
    async def job() -> int:
        count = 0

        async def pump(inbox: Any, outboxes: list[Any]) -> None:
            async with inbox:
                async for item in inbox:
                    for outbox in outboxes:
                        await outbox.send(item)
            for outbox in outboxes:
                await outbox.aclose()

        async with anyio.create_task_group() as tg:
            first_send, receive = anyio.create_memory_object_stream[int](100)
            if branches:
                sink_send, sink_receive = anyio.create_memory_object_stream[int](100)
                branch_sends = []
                for _ in range(branches):
                    s, r = anyio.create_memory_object_stream[int](100)
                    branch_sends.append(s)
                    tg.start_soon(pump, r, [sink_send.clone()])
                sink_send.close()
                tg.start_soon(pump, receive, branch_sends)
                receive = sink_receive
            else:
                for _ in range(stages):
                    s, r = anyio.create_memory_object_stream[int](100)
                    tg.start_soon(pump, receive, [s])
                    receive = r

            async def sink(inbox: Any) -> None:
                nonlocal count
                async with inbox:
                    async for _ in inbox:
                        count += 1

            tg.start_soon(sink, receive)
            async with first_send:
                for i in range(n):
                    await first_send.send(i)
        return count

    return job


def _job(curve: str, impl: str, point: int) -> Callable[[], Awaitable[int]]:
    if curve == "workers":
        make = {"floor": _floor_workers, "hand": _hand_workers, "flowgraph": _flowgraph_workers}
        return make[impl](point)
    if curve == "chain":
        return (_hand_chain if impl == "hand" else _flowgraph_chain)(point)
    if curve == "fanout":
        return (_hand_chain if impl == "hand" else _flowgraph_chain)(0, branches=point)
    return (_hand_chain if impl == "hand" else _flowgraph_chain)(point, n=1)


def child(backend: str, curve: str, impl: str, point: int) -> dict[str, Any]:
    """Measure one point in this process: wall time, CPU time and garbage collections."""
    job = _job(curve, impl, point)
    collections = sum(stat["collections"] for stat in gc.get_stats())
    gc_time = 0.0
    started_gc = 0.0

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        nonlocal gc_time, started_gc
        if phase == "start":
            started_gc = time.perf_counter()
        else:
            gc_time += time.perf_counter() - started_gc

    gc.callbacks.append(on_gc)
    wall, cpu = time.perf_counter(), time.process_time()
    count = anyio.run(job, backend=backend)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    gc.callbacks.remove(on_gc)
    return {
        "wall": wall,
        "cpu": cpu,
        "count": count,
        "gc_time": gc_time,
        "collections": sum(stat["collections"] for stat in gc.get_stats()) - collections,
    }


# -- the driver -----------------------------------------------------------------------------


def measure(backend: str, curve: str, impl: str, point: int, repeats: int) -> dict[str, Any]:
    best: dict[str, Any] | None = None
    for _ in range(repeats):
        out = subprocess.run(
            [sys.executable, __file__, "--child", backend, curve, impl, str(point)],
            capture_output=True,
            text=True,
            check=True,
        )
        result = json.loads(out.stdout)
        if best is None or result["wall"] < best["wall"]:
            best = result
    assert best is not None
    return best


def describe(curve: str, point: int, result: dict[str, Any]) -> str:
    if curve == "workers":
        ideal = ITEMS_PER_WORKER * SLEEP
        per_item = result["cpu"] / (point * ITEMS_PER_WORKER) * 1e6
        return (
            f"efficiency {ideal / result['wall']:.2f}, CPU {per_item:.1f} µs/item, "
            f"GC {result['gc_time'] / result['wall']:.2f} of wall"
        )
    if curve in ("chain", "fanout"):
        per = result["wall"] / (50_000 * point) * 1e6
        unit = "stage" if curve == "chain" else "branch"
        return f"{result['wall']:.3f} s, {per:.2f} µs per item per {unit}"
    return f"{result['wall'] * 1e6 / point:.1f} µs per node"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--backend", default="asyncio,trio")
    parser.add_argument("--curve", default=",".join(CURVES))
    parser.add_argument("--points", help="comma-separated points, instead of the defaults")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    if args.child:
        backend, curve, impl, point = args.child
        print(json.dumps(child(backend, curve, impl, int(point))))
        return 0
    print("| curve | backend | point | " + " | ".join(["implementation", "result"]) + " |")
    print("| --- | --- | ---: | --- | --- |")
    for curve in args.curve.split(","):
        points = [int(p) for p in args.points.split(",")] if args.points else CURVES[curve]
        for backend in args.backend.split(","):
            for point in points:
                for impl in IMPLEMENTATIONS[curve]:
                    result = measure(backend, curve, impl, point, args.repeats)
                    cells = [curve, backend, str(point), impl, describe(curve, point, result)]
                    print(f"| {' | '.join(cells)} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
