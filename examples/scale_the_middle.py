"""Scale only the middle: a generator -> a CPU-heavy layer of 8 workers -> a collector.

The cookbook's third recipe (docs/cookbook/scale-the-middle.md). It counts the
primes below ``--limit``, block by block: a generator yields the blocks, a
layer of 8 workers counts each block's primes by trial division (pure Python,
which threads could run on one core only), and a collector adds them up. The
graph is the same everywhere; only the layer's ``executor=`` changes:

    python examples/scale_the_middle.py                      # worker processes
    python examples/scale_the_middle.py --executor dask      # a Dask LocalCluster
    python examples/scale_the_middle.py --executor ray       # a local Ray
    python examples/scale_the_middle.py --limit 20000000 --cpus 8

Each run starts its cluster (``--cpus`` worker processes, one per CPU by
default), shows its progress on stderr and stops the cluster at the end.
Against a cluster of your own, give the layer ``fg.Dask("tcp://scheduler:8786")``
or ``fg.Ray("ray://head:10001")`` instead.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from typing import TYPE_CHECKING, Any

import flowgraph as fg

if TYPE_CHECKING:
    from collections.abc import Iterator

Block = tuple[int, int]  # the numbers [start, stop)


def build_graph(
    executor: Any, *, limit: int, width: int = 10_000, workers: int = 8
) -> tuple[fg.Graph, dict[int, int]]:
    """Blocks below *limit* -> count their primes on *executor* -> one count per block."""
    graph = fg.Graph("primes")
    counts: dict[int, int] = {}  # the collector's: primes by block start

    @graph.source
    def blocks() -> Iterator[Block]:
        for start in range(0, limit, width):
            yield start, min(start + width, limit)

    layer = graph.transform(count_primes, executor=executor, workers=workers)

    @graph.sink(executor="loop")  # quick: on the event loop, in this process
    def collect(counted: tuple[Block, int]) -> None:
        (start, _), primes = counted
        counts[start] = primes

    graph.chain(blocks, layer, collect)
    return graph, counts


def count_primes(block: Block) -> tuple[Block, int]:
    """The number of primes in the block: CPU work in plain Python, holding the GIL."""
    start, stop = block
    return block, sum(1 for n in range(start, stop) if is_prime(n))


def is_prime(n: int) -> bool:
    if n < 5:
        return n in (2, 3)
    if n % 2 == 0 or n % 3 == 0:
        return False
    factor = 5
    while factor * factor <= n:
        if n % factor == 0 or n % (factor + 2) == 0:
            return False
        factor += 6
    return True


# -- where the layer runs -------------------------------------------------------------------


@contextlib.contextmanager
def executor_for(name: str, cpus: int) -> Iterator[Any]:
    """The layer's executor, with *cpus* worker processes, started here and stopped after."""
    if name == "processes":
        pool = fg.Processes(cpus)
        try:
            yield pool
        finally:
            pool.close()
    elif name == "dask":
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            sys.exit("--executor dask needs Dask's distributed: pip install 'flowgraph[dask]'")
        cluster = LocalCluster(
            n_workers=cpus, threads_per_worker=1, dashboard_address="127.0.0.1:0"
        )
        with cluster, Client(cluster) as client:
            yield fg.Dask(client)
    else:
        try:
            ray = fg.Ray(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
        except ImportError:
            sys.exit("--executor ray needs Ray: pip install 'flowgraph[ray]'")
        ray.connect()  # here, rather than on the run's first call
        try:
            yield ray
        finally:
            ray.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--executor", default="processes", choices=["processes", "dask", "ray"])
    parser.add_argument("--limit", type=int, default=1_000_000, help="count below (1000000)")
    parser.add_argument("--width", type=int, default=10_000, help="numbers a block (10000)")
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 2, help="worker processes")
    parser.add_argument("--no-progress", action="store_true", help="no progress on stderr")
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    args = parser.parse_args(argv)

    with executor_for(args.executor, args.cpus) as executor:
        graph, counts = build_graph(executor, limit=args.limit, width=args.width)
        started = time.perf_counter()
        fg.run(graph, backend=args.backend, progress=not args.no_progress)
        seconds = time.perf_counter() - started
    print(f"primes below {args.limit:,}: {sum(counts.values()):,}, in {len(counts)} blocks")
    print(
        f"on {args.executor}, {args.cpus} worker processes, 8 blocks at a time: "
        f"{seconds:.1f}s, {len(counts) / seconds:,.0f} blocks/s"
    )


if __name__ == "__main__":
    main()
