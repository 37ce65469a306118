"""Per-node counters bumped in the engine's hot loop, and the frozen snapshots handed out."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any, final

import anyio

LATENCY_EXACT_FIRST = 256
"""A node times each of its first calls (this many, shared among its workers), so slow,
low-volume nodes get real percentiles.

Past them it times the call after each yield (one in 64 while items keep
coming) and every call that followed a wait for input, so a node that waits for
every item still has every call timed. Timing a call costs two clock reads and
a histogram update; timing every call cost W1 12-14% of its throughput.
"""

_BUCKETS_PER_OCTAVE = 4
_LOWEST = -24 * _BUCKETS_PER_OCTAVE  # 2**-24 s, about 60 ns
_HIGHEST = 12 * _BUCKETS_PER_OCTAVE  # 2**12 s, about 68 minutes


class LatencyHistogram:
    """A log-bucketed histogram of call durations: four buckets per octave, so
    percentiles read from it are within about 9% of the true value."""

    __slots__ = ("counts", "samples", "total")

    def __init__(self) -> None:
        self.counts = [0] * (_HIGHEST - _LOWEST + 1)
        self.samples = 0
        self.total = 0.0

    def record(self, seconds: float) -> None:
        index = math.floor(math.log2(seconds) * _BUCKETS_PER_OCTAVE) if seconds > 0 else _LOWEST
        self.counts[min(max(index, _LOWEST), _HIGHEST) - _LOWEST] += 1
        self.samples += 1
        self.total += seconds

    def percentile(self, q: float) -> float | None:
        """The *q* quantile (0 < q <= 1) in seconds: the middle of its bucket."""
        if not self.samples:
            return None
        rank = q * self.samples
        seen = 0
        for offset, count in enumerate(self.counts):
            seen += count
            if count and seen >= rank:
                return float(2 ** ((offset + _LOWEST + 0.5) / _BUCKETS_PER_OCTAVE))
        return None  # pragma: no cover - rank <= samples always lands in a bucket

    def buckets(self) -> tuple[tuple[float, int], ...]:
        """Non-empty buckets as ``(upper bound in seconds, count)``, ascending."""
        return tuple(
            (float(2 ** ((offset + _LOWEST + 1) / _BUCKETS_PER_OCTAVE)), count)
            for offset, count in enumerate(self.counts)
            if count
        )


class Counters:
    """Mutable counters of one node during one run; plain attributes, so bumping costs nothing.

    What every item moves is counted per worker (:class:`WorkerCounters`), by
    plain stores from the worker's locals; ``items_out`` is counted here only
    for sources and generator nodes: for the others it is the items finished
    minus the items whose call ``failed`` and were skipped or dead-lettered.
    """

    __slots__ = (
        "dead_lettered",
        "errors",
        "failed",
        "finished_at",
        "items_out",
        "latency",
        "retries",
        "skipped",
        "started_at",
        "workers",
    )

    def __init__(self) -> None:
        self.items_out = 0
        self.errors = 0
        self.failed = 0
        self.retries = 0
        self.skipped = 0
        self.dead_lettered = 0
        self.latency = LatencyHistogram()
        self.workers: list[WorkerCounters] = []
        self.started_at: float | None = None
        self.finished_at: float | None = None

    def worker(self) -> WorkerCounters:
        """New counters for one more worker of the node."""
        counters = WorkerCounters()
        self.workers.append(counters)
        return counters

    @property
    def items_in(self) -> int:
        return sum(worker.taken for worker in self.workers)

    @property
    def busy(self) -> int:
        return sum(not worker.idle for worker in self.workers)


class WorkerCounters:
    """How many items one worker has taken, and whether it is between items.

    A busy worker has finished every item it took but the last. Only ``taken``
    is stored per item; ``idle`` changes when the worker waits for input or exits,
    which is when a reader can look.
    """

    __slots__ = ("idle", "taken")

    def __init__(self) -> None:
        self.taken = 0
        self.idle = True


@final
@dataclass(frozen=True, slots=True)
class NodeStatistics:
    """A snapshot of one node's counters.

    Attributes:
        name: the node's name.
        kind: ``"source"``, ``"transform"`` or ``"sink"``.
        items_in: items taken from the input stream (0 for a source).
        items_out: items emitted downstream (for a sink: items consumed successfully).
        errors: items whose function failed after all attempts.
        retries: extra attempts made by the node's retry policy.
        skipped: failed items dropped by ``on_error="skip"``.
        dead_lettered: failed items sent to the dead-letter store.
        busy: workers busy with an item (taken, not yet finished); 0 for a source.
        abandoned: calls given up on (a timeout, a stop) that still run in a
            thread, process or cluster; each still occupies its worker there.
        key_skew: for an ``ordered="key"`` node, the most items ever queued
            behind one key: a hot key shows here.
        queue_depth: items waiting for a worker, in the input stream or in a taken chunk.
        queue_capacity: the most items that may wait (the node's ``buffer``).
        workers: how many workers the node runs.
        elapsed: seconds since the node started (until it finished, once it has).
        finished: whether every worker of the node has exited.
        latency_p50: median duration of the node's function, in seconds: every
            call of the first 256, then one call in 64 and every call that followed a
            wait for input; ``None`` before the first.
        latency_p90: 90th percentile, likewise.
        latency_p99: 99th percentile, likewise.
        latency_buckets: the sampled durations as ``(upper bound, count)`` pairs,
            for exporters that want a histogram.
        throughput: items out per second since the node started.
    """

    name: str
    kind: str
    items_in: int
    items_out: int
    errors: int
    retries: int
    skipped: int
    dead_lettered: int
    busy: int
    queue_depth: int
    queue_capacity: int
    workers: int
    elapsed: float
    finished: bool
    latency_p50: float | None = None
    latency_p90: float | None = None
    latency_p99: float | None = None
    latency_buckets: tuple[tuple[float, int], ...] = ()
    abandoned: int = 0
    key_skew: int = 0

    @property
    def in_flight(self) -> int:
        """Deprecated name of :attr:`busy` (busy workers, not items in flight)."""
        warnings.warn(
            "NodeStatistics.in_flight is now NodeStatistics.busy", DeprecationWarning, stacklevel=2
        )
        return self.busy

    @property
    def throughput(self) -> float:
        """Items out per second since the node started."""
        return self.items_out / self.elapsed if self.elapsed > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """Return the snapshot as a plain dict, ready for JSON."""
        data = asdict(self)
        data["latency_buckets"] = [list(pair) for pair in self.latency_buckets]
        data["throughput"] = self.throughput
        return data

    def describe(self) -> str:
        """One concise log line: counts, queue fill, busy workers, latency."""
        line = (
            f"{self.name}: in={self.items_in} out={self.items_out} errors={self.errors}"
            f" retries={self.retries} skipped={self.skipped} dead={self.dead_lettered}"
            f" queue={self.queue_depth}/{self.queue_capacity}"
            f" busy={self.busy}/{self.workers} rate={self.throughput:.1f}/s"
        )
        if self.abandoned:
            line += f" abandoned={self.abandoned}"
        if self.latency_p50 is not None:
            line += f" p50={_ms(self.latency_p50)} p99={_ms(self.latency_p99)}"
        return line + (" done" if self.finished else "")


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.3g}ms"


@final
@dataclass(frozen=True, slots=True)
class RunStatistics(Mapping[str, NodeStatistics]):
    """A snapshot of a whole run: a mapping from node name to :class:`NodeStatistics`.

    Attributes:
        graph: the graph's name.
        elapsed: seconds since the run started (until it finished, once it has).
        nodes: per-node snapshots, in declaration order.
    """

    graph: str
    elapsed: float
    nodes: Mapping[str, NodeStatistics]

    def __getitem__(self, name: str) -> NodeStatistics:
        return self.nodes[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    @property
    def throughput(self) -> float:
        """Items consumed by the sinks per second since the run started."""
        done = sum(n.items_in for n in self.nodes.values() if n.kind == "sink")
        return done / self.elapsed if self.elapsed > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """Return the snapshot as plain dicts, ready for JSON."""
        return {
            "throughput": self.throughput,
            "graph": self.graph,
            "elapsed": self.elapsed,
            "nodes": {name: stats.as_dict() for name, stats in self.nodes.items()},
        }


def elapsed_between(started_at: float | None, finished_at: float | None) -> float:
    if started_at is None:
        return 0.0
    end = finished_at if finished_at is not None else anyio.current_time()
    return max(0.0, end - started_at)
