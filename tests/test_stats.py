"""Statistics: latency percentiles, snapshots as data, log lines, periodic logging."""

from __future__ import annotations

import json
import logging

import anyio
import pytest

import flowgraph as fg
from flowgraph._core._stats import LatencyHistogram as Latency


def test_latency_percentiles_are_within_a_bucket() -> None:
    """Percentiles read from the histogram are within 10% of the true value."""
    latency = Latency()
    values = [i / 1000 for i in range(1, 1001)]  # 1 ms .. 1 s
    for v in values:
        latency.record(v)
    for q, true in ((0.5, 0.5), (0.9, 0.9), (0.99, 0.99)):
        p = latency.percentile(q)
        assert p is not None
        assert abs(p - true) / true < 0.1
    assert sum(count for _, count in latency.buckets()) == 1000


def test_empty_latency_has_no_percentiles() -> None:
    """No samples, no percentile, rather than a made-up zero."""
    assert Latency().percentile(0.5) is None


def test_latency_of_zero_and_huge_durations_is_clamped() -> None:
    """Durations outside the histogram's range land in its end buckets."""
    latency = Latency()
    latency.record(0.0)
    latency.record(1e9)
    assert latency.samples == 2
    assert len(latency.buckets()) == 2


async def test_node_latency_is_measured() -> None:
    """A node that sleeps 10 ms reports a p50 near 10 ms."""

    async def slow(x: int) -> int:
        await anyio.sleep(0.01)
        return x

    async def sink(x: int) -> None:
        pass

    g = fg.Graph("g")
    g.chain(g.source(range(16), name="src"), g.transform(slow, workers=16), g.sink(sink))
    stats = (await g.run()).statistics["slow"]
    assert stats.latency_p50 is not None
    assert 0.008 < stats.latency_p50 < 0.05
    assert stats.latency_p99 is not None
    assert stats.latency_p99 >= stats.latency_p50


async def test_statistics_export_as_json() -> None:
    """Snapshots turn into plain JSON."""

    async def sink(x: int) -> None:
        pass

    g = fg.Graph("g")
    g.chain(g.source(range(10), name="src"), g.sink(sink))
    result = await g.run()
    data = json.loads(json.dumps(result.statistics.as_dict()))
    assert data["graph"] == "g"
    assert data["nodes"]["sink"]["items_in"] == 10
    assert data["nodes"]["sink"]["finished"] is True
    assert result.statistics.throughput > 0


def test_describe_is_one_concise_line() -> None:
    """A node's log line shows counts, queue fill, busy workers and latency."""
    stats = fg.NodeStatistics(
        name="fetch", kind="transform", items_in=10, items_out=9, errors=1, retries=3,
        skipped=1, dead_lettered=0, busy=2, queue_depth=4, queue_capacity=16, workers=8,
        elapsed=2.0, finished=False, latency_p50=0.012, latency_p90=0.02, latency_p99=0.05,
    )  # fmt: skip
    assert stats.describe() == (
        "fetch: in=10 out=9 errors=1 retries=3 skipped=1 dead=0 queue=4/16 busy=2/8"
        " rate=4.5/s p50=12ms p99=50ms"
    )


async def test_periodic_logging_writes_a_line_per_node(caplog: pytest.LogCaptureFixture) -> None:
    """log_interval logs every node while running, and a summary at the end."""

    async def slow_source():  # type: ignore[no-untyped-def]
        for i in range(6):
            await anyio.sleep(0.01)
            yield i

    async def sink(x: int) -> None:
        pass

    g = fg.Graph("g")
    g.chain(g.source(slow_source, name="src"), g.sink(sink))
    with caplog.at_level(logging.INFO, logger="flowgraph"):
        await g.run(log_interval=0.02)
    lines = [r.getMessage() for r in caplog.records if r.name == "flowgraph"]
    assert sum(line.startswith("g: sink: in=") for line in lines) >= 2
    assert lines[-2:] == [
        line for line in lines[-2:] if line.startswith(("g: src:", "g: sink:")) and "done" in line
    ]


async def test_log_interval_must_be_positive() -> None:
    """log_interval=0 is refused before the run starts."""

    async def sink(x: int) -> None:
        pass

    g = fg.Graph("g")
    g.chain(g.source([1], name="src"), g.sink(sink))
    with pytest.raises(fg.GraphError, match=r"^log_interval must be > 0 \(got 0\)$"):
        await g.run(log_interval=0)
