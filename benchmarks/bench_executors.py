"""Measure where a node's sync work runs: threads, worker processes, Dask and Ray (#12).

Run ``python benchmarks/bench_executors.py [--quick] [--backend asyncio|trio]
[--workload W7,W8]``. Each flowgraph row runs on each chosen backend in this
one process; runs of the implementations compared are interleaved and the best
of the repeats is kept. The table is printed as Markdown; the exit status is 1
if a target was missed. See benchmarks/README.md.

W7: pure-Python CPU work, calibrated to ~1 ms per item, 2,000 items: worker
processes against threads (the GIL lets threads use one core); and the cost of
the process executor per item on ~0.01 ms of work, where chunks carry the calls.
W8: 1,000 of the same ~1 ms items on a Dask LocalCluster (two worker processes)
and a local Ray (two CPUs): flowgraph (16 and 64 workers) against ``client.map``
/ ``ray.remote`` called directly on all the items at once, and against Dask's
and Ray's own loops that keep 16 tasks in flight.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

import flowgraph as fg

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

BACKENDS = ("asyncio", "trio")
IN_FLIGHT = (16, 64)
"""W8: the node's workers, so its tasks in flight: 16 as Dask's and Ray's own bounded loops
keep, and 64, enough to cover a cluster's per-task latency on this machine."""


def cpu_work(iterations: int) -> int:
    """Pure-Python CPU work: holds the GIL for its whole duration."""
    total = 0
    for i in range(iterations):
        total += i * i % 7
    return total


def calibrate(seconds: float) -> int:
    """Iterations of :func:`cpu_work` that take about *seconds* here (best of 5)."""
    probe = 200_000
    best = min(_timed_work(probe) for _ in range(5))
    return max(1, round(probe * seconds / best))


def _timed_work(iterations: int) -> float:
    started = time.perf_counter()
    cpu_work(iterations)
    return time.perf_counter() - started


@dataclass(frozen=True)
class Row:
    workload: str
    backend: str
    implementation: str
    result: str
    ratio: str = ""
    target: str = ""
    passed: bool | None = None


async def run_graph(executor: Any, items: list[int], workers: int) -> float:
    """Seconds for source -> cpu_work on *executor* -> counting sink; checks every item."""
    expected = cpu_work(items[0]) * len(items)
    total = 0

    def count(x: int) -> None:
        nonlocal total
        total += x

    g = fg.Graph("bench")
    g.chain(
        g.source(items, name="src"),
        g.transform(cpu_work, name="work", executor=executor, workers=workers),
        g.sink(count, name="out", executor="loop"),
    )
    started = time.perf_counter()
    await g.run()
    elapsed = time.perf_counter() - started
    assert total == expected, (total, expected)
    return elapsed


def best(jobs: dict[str, Callable[[], float]], repeats: int) -> dict[str, float]:
    """Run every job *repeats* times, interleaved; keep each one's fastest time."""
    times: dict[str, list[float]] = {name: [] for name in jobs}
    for _ in range(repeats):
        for name, job in jobs.items():
            times[name].append(job())
            print(f"  {name}: {times[name][-1]:.3f} s", file=sys.stderr)
    return {name: min(values) for name, values in times.items()}


def on(backend: str, body: Callable[[], Awaitable[float]]) -> Callable[[], float]:
    return lambda: anyio.run(body, backend=backend)


def w7(backends: tuple[str, ...], quick: bool) -> list[Row]:
    n, repeats = (500, 2) if quick else (2000, 5)
    items = [calibrate(0.001)] * n
    pool = fg.Processes(2)
    rows: list[Row] = []
    try:
        for backend in backends:
            jobs = {
                "threads": on(backend, lambda: run_graph("threads", items, 2)),
                "processes": on(backend, lambda: run_graph("processes", items, 2)),
                "Processes(2), 4 workers": on(backend, lambda: run_graph(pool, items, 4)),
            }
            times = best(jobs, repeats)
            for name, seconds in times.items():
                ratio = times["threads"] / seconds
                is_target = name == "processes"
                rows.append(
                    Row(
                        "W7 CPU 1 ms",
                        backend,
                        name if name != "processes" else 'executor="processes", 2 workers',
                        f"{seconds:.3f} s ({n / seconds:,.0f} items/s)",
                        "" if name == "threads" else f"{ratio:.2f}x threads",
                        ">= 1.7x threads" if is_target else "",
                        ratio >= 1.7 if is_target else None,
                    )
                )
        rows += _overhead_rows(backends, pool, quick)
    finally:
        pool.close()
    return rows


def _overhead_rows(backends: tuple[str, ...], pool: fg.Processes, quick: bool) -> list[Row]:
    """Per-item cost of the process executor on ~0.01 ms of work, with and without chunks."""
    n, repeats = (5000, 2) if quick else (20_000, 5)
    work = calibrate(0.00001)
    items = [work] * n
    seconds_of_work = min(_timed_work(work) for _ in range(200))
    rows = []
    for backend in backends:
        jobs = {
            "Processes(2), 64 workers (chunks)": on(backend, lambda: run_graph(pool, items, 64)),
            "Processes(2), 2 workers (one call per message)": on(
                backend, lambda: run_graph(pool, items, 2)
            ),
        }
        for name, seconds in best(jobs, repeats).items():
            # Beyond the work itself, spread over the two processes.
            overhead = seconds / n - seconds_of_work / 2
            chunked = "chunks" in name
            rows.append(
                Row(
                    "W7 overhead 0.01 ms",
                    backend,
                    name,
                    f"{seconds / n * 1e6:.1f} us/item, overhead {overhead * 1e6:.1f} us",
                    "",
                    "<= 50 us" if chunked else "",
                    overhead <= 50e-6 if chunked else None,
                )
            )
    return rows


def w8(backends: tuple[str, ...], quick: bool) -> list[Row]:
    n, repeats = (300, 2) if quick else (1000, 3)
    items = [calibrate(0.001)] * n
    return _dask_rows(backends, items, repeats) + _ray_rows(backends, items, repeats)


def _dask_rows(backends: tuple[str, ...], items: list[int], repeats: int) -> list[Row]:
    from distributed import Client, LocalCluster, as_completed

    expected = cpu_work(items[0]) * len(items)
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0"
        ) as cluster,
        Client(cluster) as client,
    ):
        client.gather(client.map(cpu_work, items[:50], pure=False))  # warm up the workers

        def direct() -> float:
            started = time.perf_counter()
            total = sum(client.gather(client.map(cpu_work, items, pure=False)))
            elapsed = time.perf_counter() - started
            assert total == expected
            return elapsed

        def bounded() -> float:
            """Dask's own way to keep 16 tasks in flight."""
            started = time.perf_counter()
            pending = iter(items)
            first = [client.submit(cpu_work, next(pending), pure=False) for _ in range(16)]
            done = as_completed(first, with_results=True)
            total = 0
            for _, result in done:
                total += result
                item = next(pending, None)
                if item is not None:
                    done.add(client.submit(cpu_work, item, pure=False))
            elapsed = time.perf_counter() - started
            assert total == expected
            return elapsed

        dask = fg.Dask(client)
        jobs: dict[str, Callable[[], float]] = {
            "client.map + gather": direct,
            "as_completed, 16 in flight": bounded,
        }
        for backend in backends:
            for workers in IN_FLIGHT:
                jobs[f"flowgraph {backend} {workers}"] = on(
                    backend, lambda workers=workers: run_graph(dask, items, workers)
                )
        return _cluster_rows("W8 Dask LocalCluster", best(jobs, repeats), len(items))


def _ray_rows(backends: tuple[str, ...], items: list[int], repeats: int) -> list[Row]:
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        expected = cpu_work(items[0]) * len(items)
        remote_work = ray.remote(cpu_work)
        ray.get([remote_work.remote(x) for x in items[:50]])  # warm up the workers

        def direct() -> float:
            started = time.perf_counter()
            total = sum(ray.get([remote_work.remote(x) for x in items]))
            elapsed = time.perf_counter() - started
            assert total == expected
            return elapsed

        def bounded() -> float:
            """Ray's own way to keep 16 tasks in flight."""
            started = time.perf_counter()
            pending = iter(items)
            running = [remote_work.remote(next(pending)) for _ in range(16)]
            total = 0
            while running:
                ready, running = ray.wait(running, num_returns=1)
                total += ray.get(ready[0])
                item = next(pending, None)
                if item is not None:
                    running.append(remote_work.remote(item))
            elapsed = time.perf_counter() - started
            assert total == expected
            return elapsed

        executor = fg.Ray()
        jobs: dict[str, Callable[[], float]] = {
            "ray.remote + ray.get": direct,
            "ray.wait, 16 in flight": bounded,
        }
        for backend in backends:
            for workers in IN_FLIGHT:
                jobs[f"flowgraph {backend} {workers}"] = on(
                    backend, lambda workers=workers: run_graph(executor, items, workers)
                )
        return _cluster_rows("W8 Ray local", best(jobs, repeats), len(items))
    finally:
        ray.shutdown()


def _cluster_rows(workload: str, times: dict[str, float], n: int) -> list[Row]:
    """The direct call first, then the hand-written bounded loop, then flowgraph's rows."""
    (direct, direct_time), (bounded, bounded_time) = list(times.items())[:2]
    rows = [
        Row(workload, "", direct, f"{direct_time:.3f} s ({n / direct_time:,.0f} items/s)"),
        Row(
            workload,
            "",
            bounded,
            f"{bounded_time:.3f} s ({n / bounded_time:,.0f} items/s)",
            f"{direct_time / bounded_time:.2f}x direct",
        ),
    ]
    for name, seconds in list(times.items())[2:]:
        _, backend, workers = name.split()
        ratio = direct_time / seconds
        targeted = int(workers) == max(IN_FLIGHT)
        rows.append(
            Row(
                workload,
                backend,
                f"flowgraph, {workers} workers",
                f"{seconds:.3f} s ({n / seconds:,.0f} items/s)",
                f"{ratio:.2f}x direct"
                + (f", {bounded_time / seconds:.2f}x bounded" if workers == "16" else ""),
                ">= 0.8x direct" if targeted else "",
                ratio >= 0.8 if targeted else None,
            )
        )
    return rows


def format_table(rows: list[Row]) -> str:
    lines = [
        "| workload | backend | implementation | result | ratio | target | pass |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        verdict = "" if row.passed is None else ("PASS" if row.passed else "**FAIL**")
        lines.append(
            f"| {row.workload} | {row.backend} | {row.implementation} | {row.result} | "
            f"{row.ratio} | {row.target} | {verdict} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer items and repeats")
    parser.add_argument("--backend", choices=BACKENDS, help="one backend (default: both)")
    parser.add_argument("--workload", default="W7,W8", help="comma-separated: W7,W8")
    args = parser.parse_args(argv)
    backends = (args.backend,) if args.backend else BACKENDS
    load = os.getloadavg()[0]
    rows: list[Row] = []
    chosen = args.workload.split(",")
    if "W7" in chosen:
        rows += w7(backends, args.quick)
    if "W8" in chosen:
        rows += w8(backends, args.quick)
    print(
        f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
        f"load average {load:.1f} before, {os.getloadavg()[0]:.1f} after"
    )
    print(format_table(rows))
    return 0 if all(row.passed is not False for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
