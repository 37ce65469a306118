"""Per-node counters bumped in the engine's hot loop, and the frozen snapshots handed out."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any, final

import anyio


class Counters:
    """Mutable counters of one node during one run; plain attributes, so bumping costs nothing."""

    __slots__ = (
        "dead_lettered",
        "errors",
        "finished_at",
        "in_flight",
        "items_in",
        "items_out",
        "retries",
        "skipped",
        "started_at",
    )

    def __init__(self) -> None:
        self.items_in = 0
        self.items_out = 0
        self.errors = 0
        self.retries = 0
        self.skipped = 0
        self.dead_lettered = 0
        self.in_flight = 0
        self.started_at: float | None = None
        self.finished_at: float | None = None


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
        in_flight: items taken but not yet finished.
        queue_depth: items waiting in the input stream.
        queue_capacity: size of the input stream's buffer.
        workers: how many workers the node runs.
        elapsed: seconds since the node started (until it finished, once it has).
        finished: whether every worker of the node has exited.
    """

    name: str
    kind: str
    items_in: int
    items_out: int
    errors: int
    retries: int
    skipped: int
    dead_lettered: int
    in_flight: int
    queue_depth: int
    queue_capacity: int
    workers: int
    elapsed: float
    finished: bool

    def as_dict(self) -> dict[str, Any]:
        """Return the snapshot as a plain dict, ready for JSON."""
        return asdict(self)


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

    def as_dict(self) -> dict[str, Any]:
        """Return the snapshot as plain dicts, ready for JSON."""
        return {
            "graph": self.graph,
            "elapsed": self.elapsed,
            "nodes": {name: stats.as_dict() for name, stats in self.nodes.items()},
        }


def elapsed_between(started_at: float | None, finished_at: float | None) -> float:
    if started_at is None:
        return 0.0
    end = finished_at if finished_at is not None else anyio.current_time()
    return max(0.0, end - started_at)
