"""Measure flowgraph's engine against hand-written anyio code doing the same work.

Run ``python benchmarks/bench_core.py [--quick] [--backend asyncio|trio|asyncio+uvloop]
[--workload W1,W2,...]``. Every workload runs on each chosen backend in this one
process, except W5, which measures peak RSS in a fresh subprocess per case so
that runs cannot inflate each other's peak. The table is printed as Markdown;
the exit status is 1 if any target was missed. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from _pipelines import (
    MemoryCheckpoints,
    Tally,
    bare_workers,
    batched_graph,
    blocking_call,
    checkpointed_linear_graph,
    fan_graph,
    hand_batched,
    hand_fan,
    hand_linear,
    hand_workers,
    in_threads,
    io_call,
    linear_graph,
    memory_graph,
    plain_threads,
    worker_graph,
)

import flowgraph as fg

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

BACKENDS = ("asyncio", "trio")
UVLOOP = "asyncio+uvloop"
"""asyncio on uvloop's event loop (``pip install uvloop``): run only when asked for."""


def run_on(backend: str, func: Callable[..., Any], *args: Any) -> Any:
    """``anyio.run`` on *backend*, where ``asyncio+uvloop`` is asyncio with ``use_uvloop``."""
    if backend == UVLOOP:
        return anyio.run(func, *args, backend="asyncio", backend_options={"use_uvloop": True})
    return anyio.run(func, *args, backend=backend)


WORKLOADS = ("W1", "W2", "W3", "W4", "W5", "W6")


@dataclass(frozen=True, slots=True)
class Sizes:
    """How much work each workload does, and how often throughput runs are repeated."""

    linear: int
    io_items: int
    blocking_items: int
    memory_items: int
    memory_baseline: int
    repeats: int
    naive_repeats: int


FULL = Sizes(200_000, 5_000, 2_000, 1_000_000, 10_000, repeats=5, naive_repeats=2)
QUICK = Sizes(50_000, 5_000, 2_000, 200_000, 10_000, repeats=3, naive_repeats=1)
W6_ITEMS = {"full": 1_000_000, "quick": 200_000}


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the results table; ``passed`` is None for reference rows."""

    workload: str
    backend: str
    impl: str
    result: str
    ratio: str = ""
    target: str = ""
    passed: bool | None = None
    rss: str = ""


def measure(backend: str, job: Callable[[], Awaitable[float]], repeats: int) -> list[float]:
    """Run *job* in a fresh event loop *repeats* times; return the values it reports."""
    values = []
    for _ in range(repeats):
        gc.collect()
        values.append(run_on(backend, job))
    return values


def timed(body: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[float]]:
    """Wrap *body* in a job that returns its wall time in seconds."""

    async def job() -> float:
        started = time.perf_counter()
        await body()
        return time.perf_counter() - started

    return job


def checked(
    tally: Tally, count: int, total: int | None, body: Callable[[], Awaitable[Any]]
) -> Callable[[], Awaitable[None]]:
    """Wrap *body* so each run starts from an empty tally and checks it afterwards."""

    async def run() -> None:
        tally.count = tally.total = 0
        await body()
        tally.check(count, total)

    return run


def interleaved(
    backend: str, jobs: dict[str, Callable[[], Awaitable[Any]]], repeats: dict[str, int]
) -> dict[str, float]:
    """Best wall time of each job; rounds alternate between jobs so load bursts hit all alike."""
    times: dict[str, list[float]] = {name: [] for name in jobs}
    for round_ in range(max(repeats.values())):
        for name, job in jobs.items():
            if round_ < repeats[name]:
                times[name] += measure(backend, timed(job), 1)
    return {name: min(seconds) for name, seconds in times.items()}


def throughput_rows(
    workload: str,
    backend: str,
    n: int,
    sizes: Sizes,
    build: Callable[[str, Tally], Any],
    variants: Mapping[str, str] | None = None,
) -> list[Row]:
    """Best items/s of flowgraph and both hand-written styles; flowgraph must beat naive 10x.

    *variants* maps further flowgraph implementations that *build* knows to
    their labels; each must beat naive 10x too.
    """
    labels = {"fg": "flowgraph", **(variants or {})}
    impls = ("naive", "fast", *labels)
    jobs = {impl: build(impl, Tally()) for impl in impls}
    repeats = {impl: sizes.naive_repeats if impl == "naive" else sizes.repeats for impl in impls}
    rates = {impl: n / seconds for impl, seconds in interleaved(backend, jobs, repeats).items()}
    fg_rate = rates["fg"]
    speedup = fg_rate / rates["naive"]
    rows = [
        Row(
            workload,
            backend,
            "anyio naive",
            f"{rates['naive']:,.0f} items/s",
            f"{speedup:.1f}x",
            ">= 10x",
            speedup >= 10,
        ),
        Row(
            workload,
            backend,
            "anyio fast",
            f"{rates['fast']:,.0f} items/s",
            f"{fg_rate / rates['fast']:.2f}x",
        ),
        Row(workload, backend, "flowgraph", f"{fg_rate:,.0f} items/s"),
    ]
    for impl, label in (variants or {}).items():
        speedup = rates[impl] / rates["naive"]
        rows.append(
            Row(
                workload,
                backend,
                label,
                f"{rates[impl]:,.0f} items/s",
                f"{speedup:.1f}x naive, {rates[impl] / fg_rate:.2f}x flowgraph",
                ">= 10x naive",
                speedup >= 10,
            )
        )
    return rows


def w1(backend: str, sizes: Sizes) -> list[Row]:
    n = sizes.linear
    total = n * (n - 1) // 2

    def build(impl: str, tally: Tally) -> Any:
        if impl == "fg":
            graph = linear_graph(n, tally)
            return checked(tally, n, total, graph.run)
        if impl == "fg_checkpointed":
            graph = checkpointed_linear_graph(n, tally)
            return checked(tally, n, total, lambda: graph.run(checkpoints=MemoryCheckpoints()))
        return checked(tally, n, total, lambda: hand_linear(impl, n, tally))

    variants = {"fg_checkpointed": "flowgraph, checkpointed source"}
    rows = throughput_rows("W1 linear", backend, n, sizes, build, variants)
    gaps = measure(backend, lambda: heartbeat_gap(n), sizes.repeats)
    gap = statistics.median(gaps) * 1000
    rows.append(
        Row(
            "W1 fairness",
            backend,
            "flowgraph",
            f"max tick gap {gap:.1f} ms",
            target="< 50 ms",
            passed=gap < 50,
        )
    )
    latencies = measure(backend, cancel_latency, sizes.repeats)
    latency = statistics.median(latencies) * 1000
    rows.append(
        Row(
            "W1 cancel",
            backend,
            "flowgraph",
            f"cancel -> return {latency:.1f} ms",
            target="< 100 ms",
            passed=latency < 100,
        )
    )
    return rows


async def heartbeat_gap(n: int) -> float:
    """The longest interval between ticks of a 10 ms heartbeat beside a full W1 run."""
    tally = Tally()
    graph = linear_graph(n, tally)
    ticks = [time.perf_counter()]

    async def heartbeat() -> None:
        while True:
            await anyio.sleep(0.01)
            ticks.append(time.perf_counter())

    async with anyio.create_task_group() as tg:
        tg.start_soon(heartbeat)
        await graph.run()
        ticks.append(time.perf_counter())
        tg.cancel_scope.cancel()
    tally.check(n, n * (n - 1) // 2)
    return max(later - earlier for earlier, later in itertools.pairwise(ticks))


async def cancel_latency() -> float:
    """Seconds from cancelling an endless W1 run at full throughput until ``run`` returns."""
    tally = Tally()
    graph = linear_graph(None, tally)
    cancelled_at = 0.0
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:

            async def cancel_soon() -> None:
                nonlocal cancelled_at
                await anyio.sleep(0.2)
                cancelled_at = time.perf_counter()
                scope.cancel()

            tg.start_soon(cancel_soon)
            await graph.run()
    returned_at = time.perf_counter()
    if tally.count < 1_000:
        raise AssertionError(f"only {tally.count} items before cancelling: not at full speed")
    return returned_at - cancelled_at


def w2(backend: str, sizes: Sizes) -> list[Row]:
    n = sizes.linear
    total = n * (n - 1)  # every item arrives twice, once per branch

    def build(impl: str, tally: Tally) -> Any:
        if impl == "fg":
            return checked(tally, 2 * n, total, fan_graph(n, tally).run)
        return checked(tally, 2 * n, total, lambda: hand_fan(impl, n, tally))

    return throughput_rows("W2 fan-out/in", backend, n, sizes, build)


def efficiency_rows(
    workload: str,
    backend: str,
    ideal: float,
    repeats: int,
    jobs: dict[str, Callable[[], Awaitable[Any]]],
    target: float,
) -> list[Row]:
    """Best wall times of flowgraph, hand-written anyio and the bare floor; efficiency = ideal/time.

    *jobs* maps "flowgraph", "hand" and "floor" to their runs.
    """
    best = interleaved(backend, jobs, dict.fromkeys(jobs, repeats))
    fg_seconds = best["flowgraph"]

    def result(name: str) -> str:
        return f"{best[name]:.3f} s (efficiency {ideal / best[name]:.3f})"

    return [
        Row(workload, backend, "anyio bare floor", result("floor"),
            f"{best['floor'] / fg_seconds:.2f}x"),
        Row(workload, backend, "anyio hand-written", result("hand"),
            f"{best['hand'] / fg_seconds:.2f}x"),
        Row(workload, backend, "flowgraph", result("flowgraph"),
            target=f"efficiency >= {target}", passed=ideal / fg_seconds >= target),
    ]  # fmt: skip


def w3(backend: str, sizes: Sizes) -> list[Row]:
    n, workers = sizes.io_items, 100
    tally, total = Tally(), n * (n - 1) // 2
    graph = worker_graph(n, tally, io_call, workers)
    jobs = {
        "flowgraph": checked(tally, n, total, graph.run),
        "hand": checked(tally, n, total, lambda: hand_workers(n, tally, io_call, workers)),
        "floor": checked(tally, n, total, lambda: bare_workers(n, tally, io_call, workers)),
    }
    return efficiency_rows(
        "W3 I/O-bound", backend, n * 0.01 / workers, sizes.repeats, jobs, target=0.9
    )


def w4(backend: str, sizes: Sizes) -> list[Row]:
    n, workers = sizes.blocking_items, 16
    tally, total = Tally(), n * (n - 1) // 2
    graph = worker_graph(n, tally, blocking_call, workers)

    async def hand() -> None:
        await hand_workers(n, tally, in_threads(blocking_call, workers), workers)

    async def floor() -> None:
        await bare_workers(n, tally, in_threads(blocking_call, workers), workers)

    jobs = {
        "flowgraph": checked(tally, n, total, graph.run),
        "hand": checked(tally, n, total, hand),
        "floor": checked(tally, n, total, floor),
    }
    ideal = n * 0.002 / workers
    rows = efficiency_rows("W4 sync blocking", backend, ideal, sizes.repeats, jobs, target=0.9)
    threads = min(plain_threads(n, workers) for _ in range(sizes.repeats))
    rows.insert(
        0,
        Row("W4 sync blocking", backend, "plain threads, no event loop",
            f"{threads:.3f} s (efficiency {ideal / threads:.3f})"),
    )  # fmt: skip
    return rows


def w6(backend: str, sizes: Sizes) -> list[Row]:
    n = W6_ITEMS["quick" if sizes is QUICK else "full"]
    total = n * (n - 1) // 2 * 8
    tally = Tally()
    linear_tally = Tally()
    jobs = {
        "batched": checked(tally, n, total, batched_graph(n, tally).run),
        "hand": checked(tally, n, total, lambda: hand_batched(n, tally)),
        "w1": checked(linear_tally, n, n * (n - 1) // 2, linear_graph(n, linear_tally).run),
    }
    best = interleaved(backend, jobs, dict.fromkeys(jobs, sizes.repeats))
    rate = n / best["batched"]
    w1_rate = n / best["w1"]
    return [
        Row("W6 batches", backend, "anyio hand-written batches", f"{n / best['hand']:,.0f} items/s",
            f"{rate / (n / best['hand']):.2f}x"),
        Row("W6 batches", backend, "flowgraph W1 (per item)", f"{w1_rate:,.0f} items/s"),
        Row("W6 batches", backend, "flowgraph", f"{rate:,.0f} items/s ({rate / w1_rate:.1f}x W1)",
            target=">= 1,000,000 items/s and >= 2x W1",
            passed=rate >= 1_000_000 and rate >= 2 * w1_rate),
    ]  # fmt: skip


# -- W5: peak memory, one fresh subprocess per case ----------------------------------


def w5(backend: str, sizes: Sizes) -> list[Row]:
    base = _memory_child(backend, sizes.memory_baseline)
    rows = [
        Row(
            "W5 memory",
            backend,
            "flowgraph",
            _memory_result(base),
            rss=f"{base['peak_rss_kib'] / 1024:.1f} MiB",
        )
    ]
    for flatmap in (False, True):
        big = _memory_child(backend, sizes.memory_items, flatmap=flatmap)
        growth = (big["peak_rss_kib"] - base["peak_rss_kib"]) / 1024
        rows.append(
            Row(
                "W5 memory",
                backend,
                "flowgraph, one item yields them all" if flatmap else "flowgraph",
                _memory_result(big),
                f"{growth:+.1f} MiB",
                "<= +50 MiB",
                growth <= 50,
                f"{big['peak_rss_kib'] / 1024:.1f} MiB",
            )
        )
    return rows


def _memory_result(report: dict[str, Any]) -> str:
    return (
        f"{report['items']:,} x 1 KiB, {report['seconds']:.1f} s, "
        f"sink queue max {report['max_sink_queue']}/{report['queue_capacity']}, "
        f"max in graph {report['max_in_graph']}"
    )


def _memory_child(backend: str, n: int, *, flatmap: bool = False) -> dict[str, Any]:
    command = [sys.executable, str(Path(__file__).resolve()), "--memory-child", str(n)]
    if flatmap:
        command.append("--flatmap")
    output = subprocess.run(
        [*command, "--backend", backend], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(output)  # type: ignore[no-any-return]


def memory_child(backend: str, n: int, *, flatmap: bool = False) -> None:
    """Run W5 with *n* items in this (fresh) process and print a JSON report with peak RSS."""
    report = run_on(backend, _memory_run, n, flatmap)
    report["peak_rss_kib"] = peak_rss_kib()
    print(json.dumps(report))


async def _memory_run(n: int, flatmap: bool) -> dict[str, Any]:
    """Run W5 while sampling how full the sink's queue is and how many items are in the graph.

    A full sink queue shows that the sink is the bottleneck, so backpressure is what
    keeps the source from running ahead; "in graph" is source output minus sink input.
    """
    tally = Tally()
    graph = memory_graph(n, tally, flatmap=flatmap)
    producer = "touch" if flatmap else "blobs"
    max_queue = max_in_graph = capacity = 0
    started = time.perf_counter()
    async with fg.open_run(graph) as run:
        while True:
            stats = run.statistics()
            sink = stats["slow_sink"]
            max_queue = max(max_queue, sink.queue_depth)
            max_in_graph = max(max_in_graph, stats[producer].items_out - sink.items_in)
            capacity = sink.queue_capacity
            if sink.finished:
                break
            await anyio.sleep(0.005)
    seconds = time.perf_counter() - started
    tally.check(n, n * 1024)
    return {
        "items": n,
        "seconds": seconds,
        "max_sink_queue": max_queue,
        "queue_capacity": capacity,
        "max_in_graph": max_in_graph,
    }


def peak_rss_kib() -> int:
    """This process's peak resident set size in KiB (VmHWM on Linux, else ru_maxrss)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak  # bytes on macOS, KiB elsewhere


# -- command line ---------------------------------------------------------------------


RUNNERS: dict[str, Callable[[str, Sizes], list[Row]]] = {
    "W1": w1,
    "W2": w2,
    "W3": w3,
    "W4": w4,
    "W5": w5,
    "W6": w6,
}


def format_table(rows: list[Row]) -> str:
    header = (
        "workload",
        "backend",
        "implementation",
        "result",
        "flowgraph / hand-written",
        "target",
        "pass",
        "peak RSS",
    )
    lines = [header, tuple("---" for _ in header)]
    for r in rows:
        verdict = "" if r.passed is None else ("PASS" if r.passed else "**FAIL**")
        lines.append((r.workload, r.backend, r.impl, r.result, r.ratio, r.target, verdict, r.rss))
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    parser.add_argument(
        "--backend",
        choices=[*BACKENDS, UVLOOP],
        help=f"one backend (default: {' and '.join(BACKENDS)}); {UVLOOP} needs uvloop",
    )
    parser.add_argument(
        "--workload",
        default=",".join(WORKLOADS),
        help=f"comma-separated subset of {','.join(WORKLOADS)} (default: all)",
    )
    parser.add_argument("--memory-child", type=int, metavar="N", help=argparse.SUPPRESS)
    parser.add_argument("--flatmap", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.workloads = [w.strip().upper() for w in args.workload.split(",") if w.strip()]
    unknown = sorted(set(args.workloads) - set(WORKLOADS))
    if unknown:
        choices = ", ".join(WORKLOADS)
        parser.error(f"unknown workload(s) {', '.join(unknown)}; choose from {choices}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.memory_child is not None:
        memory_child(args.backend or "asyncio", args.memory_child, flatmap=args.flatmap)
        return 0
    sizes = QUICK if args.quick else FULL
    rows: list[Row] = []
    for backend in (args.backend,) if args.backend else BACKENDS:
        for workload in args.workloads:
            started = time.perf_counter()
            rows += RUNNERS[workload](backend, sizes)
            print(
                f"# {workload} on {backend}: {time.perf_counter() - started:.1f} s",
                file=sys.stderr,
                flush=True,
            )
    print(
        f"flowgraph {fg.__version__}, anyio {_version('anyio')}, trio {_version('trio')}, "
        f"Python {sys.version.split()[0]}, {'quick' if args.quick else 'full'} sizes\n"
    )
    print(format_table(rows))
    return 1 if any(r.passed is False for r in rows) else 0


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


if __name__ == "__main__":
    sys.exit(main())
