"""Export a run's statistics to Prometheus: ``pip install 'flowgraph[prometheus]'``.

The exporter is a ``prometheus_client`` collector that reads
:meth:`flowgraph.Run.statistics` when Prometheus scrapes, so it adds nothing to
the engine's hot path. Every series carries a ``graph`` label, so runs of
several graphs can share one registry (and one ``/metrics`` endpoint).

Metrics, labelled ``graph``, ``node`` and ``kind`` unless noted:

* counters ``flowgraph_items_in_total``, ``flowgraph_items_out_total``,
  ``flowgraph_errors_total``, ``flowgraph_retries_total``,
  ``flowgraph_skipped_total``, ``flowgraph_dead_lettered_total``;
* gauges ``flowgraph_busy``, ``flowgraph_abandoned`` and ``flowgraph_workers``, and for transforms
  and sinks ``flowgraph_queue_depth`` and ``flowgraph_queue_capacity`` of the
  input stream;
* histogram ``flowgraph_node_latency_seconds`` (transforms and sinks) of the
  node function's duration. The engine times every call of a node's first 256
  items, then about one call in 64, so ``_count`` counts sampled calls, not items;
  quantiles are unaffected. Each sample's bucket is exact to within 19% (the
  engine keeps four log buckets per octave), and ``_sum`` is estimated from
  the bucket midpoints;
* gauge ``flowgraph_run_elapsed_seconds``, labelled ``graph`` only.

Scrapes arrive on the HTTP server's threads: the exporter then reads the
statistics on the run's event loop, waiting for it briefly, since the counters
belong to that loop. Once the run's event loop has closed, the run's final
numbers are served until the exporter is unregistered.
"""

from __future__ import annotations

import bisect
import logging
import threading
import weakref
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, final

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread

try:
    from prometheus_client.core import (
        REGISTRY,
        CollectorRegistry,
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
    from prometheus_client.exposition import start_http_server
except ImportError as exc:  # pragma: no cover - exercised in a test with the import blocked
    raise ImportError(
        "flowgraph.prometheus needs prometheus-client: pip install 'flowgraph[prometheus]'"
    ) from exc

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
    from wsgiref.simple_server import WSGIServer

    from ._core import Run, RunStarted, RunStatistics

__all__ = ["LATENCY_BOUNDS", "PrometheusExporter", "open_metrics_server", "serve_metrics"]

logger = logging.getLogger("flowgraph.prometheus")

LATENCY_BOUNDS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005,
    0.001, 0.0025, 0.005,
    0.01, 0.025, 0.05,
    0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
    10.0, 30.0, 60.0,
)  # fmt: skip
"""Upper bounds (``le``) of the latency histogram's buckets, in seconds; ``+Inf`` follows."""

_LABELS = ("graph", "node", "kind")
_COUNTERS = (
    ("items_in", "Items taken from the node's input stream."),
    ("items_out", "Items emitted downstream (for a sink: items consumed successfully)."),
    ("errors", "Items whose function failed after all attempts."),
    ("retries", "Extra attempts made by the node's retry policy."),
    ("skipped", "Failed items dropped by on_error='skip'."),
    ("dead_lettered", "Failed items sent to the dead-letter store."),
)
_GAUGES = (
    ("busy", "Workers busy with an item."),
    ("abandoned", "Calls given up on (a timeout, a stop) that still run in a thread or process."),
    ("workers", "Workers the node runs."),
    ("queue_depth", "Items waiting for one of the node's workers."),
    ("queue_capacity", "The most items that may wait for the node (its buffer)."),
)
_SOURCE_GAUGES = {"busy", "abandoned", "workers"}
_MIDPOINT = 2 ** (-1 / 8)  # a log bucket [b / 2**(1/4), b) has its geometric middle at b * this


@final
class PrometheusExporter:
    """A ``prometheus_client`` collector of one run's statistics.

    Create it in the run's event loop (inside the ``open_run`` block, or in a
    ``RunStarted`` hook), then :meth:`register` it. Collecting costs one
    :meth:`flowgraph.Run.statistics` call per scrape; from another thread (an
    HTTP server's), that call is made on the run's event loop, which must not be
    blocked for the scrape to answer.

    Args:
        run: the run to export.
        registry: where :meth:`register` adds it; default ``prometheus_client.REGISTRY``.

    Added in 0.1.
    """

    def __init__(self, run: Run, *, registry: CollectorRegistry | None = None) -> None:
        self.run = run
        self.registry = REGISTRY if registry is None else registry
        self._last: RunStatistics | None = None
        try:
            self._token: anyio.lowlevel.EventLoopToken | None = anyio.lowlevel.current_token()
        except anyio.NoEventLoopError:
            self._token = None
        self._loop_thread = threading.get_ident()

    def __repr__(self) -> str:
        return f"<PrometheusExporter of graph {self.run.graph.name!r}>"

    def statistics(self) -> RunStatistics | None:
        """A snapshot of the run, or ``None`` if it cannot be read any more.

        Called from a thread other than the run's event loop, it waits for the
        loop to take the snapshot. After the loop has closed, it returns the
        final counters, or failing that the last snapshot it took.
        """
        try:
            if self._token is None or threading.get_ident() == self._loop_thread:
                stats = self.run.statistics()
            else:
                try:
                    stats = anyio.from_thread.run_sync(self.run.statistics, token=self._token)
                except anyio.RunFinishedError:
                    # The loop has closed, so the run is over and its counters are frozen.
                    stats = self.run.statistics()
        except anyio.NoEventLoopError:
            return self._last  # a node that never started has no end time to read
        self._last = stats
        return stats

    def collect(self) -> list[Metric]:
        """Return the run's metric families (the ``Collector`` protocol)."""
        stats = self.statistics()
        return _families([] if stats is None else [stats])

    def describe(self) -> list[Metric]:
        """Return the metric families without samples, so registries know the names."""
        return _families([])

    def register(self) -> None:
        """Add the run to :attr:`registry`; its metrics appear in every later scrape.

        All exporters registered in one registry are collected together, each
        metric family once, with the runs told apart by the ``graph`` label.

        Raises:
            ValueError: if this exporter, or another run of a graph with the same
                name, is already registered there.
        """
        _hub(self.registry).add(self)

    def unregister(self) -> None:
        """Remove the run from :attr:`registry`; its series disappear from later scrapes.

        Raises:
            ValueError: if the exporter is not registered.
        """
        _hub(self.registry).remove(self)


@asynccontextmanager
async def open_metrics_server(
    run: Run,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    registry: CollectorRegistry | None = None,
) -> AsyncIterator[tuple[str, int]]:
    """Serve *run*'s metrics at ``http://host:port/metrics`` for the duration of the block.

    Registers a :class:`PrometheusExporter` for *run* in *registry* (default
    ``prometheus_client.REGISTRY``) and serves that whole registry from a
    ``prometheus_client`` HTTP server in a daemon thread. Yields the bound
    ``(host, port)``; ``port=0`` picks a free port.

    Leaving the block (normally, on error or on cancellation) stops the server,
    waits for scrapes in progress to finish, and unregisters the exporter. To
    serve until the graph has drained, end the block with
    ``await run.wait_finished()``.

    Raises:
        OSError: if the server cannot bind to *host* and *port*.
        ValueError: if another run of the same graph is exported to *registry*.
    """
    exporter = PrometheusExporter(run, registry=registry)
    exporter.register()
    try:
        server, thread = start_http_server(port, addr=host, registry=exporter.registry)
        try:
            bound_host, bound_port = server.server_address[:2]
            yield str(bound_host), int(bound_port)
        finally:
            # Shielded: a cancelled block must still stop the server's threads. Scrapes in
            # progress call back into this event loop, which keeps running while it waits.
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(_stop_server, server, thread)
    finally:
        exporter.unregister()


def serve_metrics(
    *, host: str = "127.0.0.1", port: int = 0, registry: CollectorRegistry | None = None
) -> Callable[[RunStarted], Awaitable[None]]:
    """Return a ``RunStarted`` hook that serves each run's metrics until its nodes finish.

    ``graph.on(fg.RunStarted)(serve_metrics(port=9100))`` serves every run of
    *graph* with :func:`open_metrics_server` and logs the address on the
    ``flowgraph.prometheus`` logger. Like every hook, a failure (a port already
    taken) is logged and does not affect the run.
    """

    async def serve(event: RunStarted) -> None:
        run = event.run
        async with open_metrics_server(run, host=host, port=port, registry=registry) as address:
            logger.info(
                "serving metrics of graph %r at http://%s:%d/metrics", run.graph.name, *address
            )
            await run.wait_finished()

    return serve


def _stop_server(server: WSGIServer, thread: threading.Thread) -> None:
    server.shutdown()
    server.server_close()  # joins the threads of requests still being answered
    thread.join()


# -- one collector per registry --------------------------------------------------------


class _Hub:
    """Collects every exporter registered in one registry, each metric family once."""

    def __init__(self) -> None:
        self.exporters: dict[str, PrometheusExporter] = {}  # by graph name

    def collect(self) -> list[Metric]:
        with _LOCK:
            exporters = list(self.exporters.values())
        return _families([s for e in exporters if (s := e.statistics()) is not None])

    def describe(self) -> list[Metric]:
        return _families([])

    def add(self, exporter: PrometheusExporter) -> None:
        name = exporter.run.graph.name
        with _LOCK:
            other = self.exporters.get(name)
            if other is exporter:
                raise ValueError(f"{exporter!r} is already registered")
            if other is not None:
                raise ValueError(
                    f"a run of graph {name!r} is already exported to this registry; "
                    "unregister its exporter first, or give the graphs different names"
                )
            if not self.exporters:
                exporter.registry.register(self)
            self.exporters[name] = exporter

    def remove(self, exporter: PrometheusExporter) -> None:
        name = exporter.run.graph.name
        with _LOCK:
            if self.exporters.get(name) is not exporter:
                raise ValueError(f"{exporter!r} is not registered")
            del self.exporters[name]
            if not self.exporters:
                exporter.registry.unregister(self)


_LOCK = threading.Lock()
_HUBS: weakref.WeakKeyDictionary[CollectorRegistry, _Hub] = weakref.WeakKeyDictionary()


def _hub(registry: CollectorRegistry) -> _Hub:
    with _LOCK:
        return _HUBS.setdefault(registry, _Hub())


# -- metric families -------------------------------------------------------------------


def _families(runs: Iterable[RunStatistics]) -> list[Metric]:
    counters = {
        field: CounterMetricFamily(f"flowgraph_{field}_total", doc, labels=_LABELS)
        for field, doc in _COUNTERS
    }
    gauges = {
        field: GaugeMetricFamily(f"flowgraph_{field}", doc, labels=_LABELS)
        for field, doc in _GAUGES
    }
    latency = HistogramMetricFamily(
        "flowgraph_node_latency_seconds",
        "Duration of the node's function: its first 256 calls, then about one in 64.",
        labels=_LABELS,
    )
    elapsed = GaugeMetricFamily(
        "flowgraph_run_elapsed_seconds",
        "Seconds since the run started (until it finished, once it has).",
        labels=("graph",),
    )
    for run in runs:
        elapsed.add_metric([run.graph], run.elapsed)
        for node in run.nodes.values():
            labels = [run.graph, node.name, node.kind]
            for field, counter in counters.items():
                counter.add_metric(labels, getattr(node, field))
            source = node.kind == "source"
            for field, gauge in gauges.items():
                if not source or field in _SOURCE_GAUGES:
                    gauge.add_metric(labels, getattr(node, field))
            if not source:
                buckets, total = _histogram(node.latency_buckets)
                latency.add_metric(labels, buckets, total)
    return [*counters.values(), *gauges.values(), latency, elapsed]


def _histogram(
    log_buckets: Sequence[tuple[float, int]],
) -> tuple[list[tuple[str, float]], float]:
    """Cumulative ``(le, count)`` buckets over :data:`LATENCY_BOUNDS`, and the estimated sum.

    A log bucket holds durations below its upper bound, so all of it counts
    under the first ``le`` at or above that bound.
    """
    counts = [0] * (len(LATENCY_BOUNDS) + 1)
    total = 0.0
    for upper, count in log_buckets:
        counts[bisect.bisect_left(LATENCY_BOUNDS, upper)] += count
        total += count * upper * _MIDPOINT
    buckets: list[tuple[str, float]] = []
    seen = 0
    for le, count in zip((*map(repr, LATENCY_BOUNDS), "+Inf"), counts, strict=True):
        seen += count
        buckets.append((le, seen))
    return buckets, total
