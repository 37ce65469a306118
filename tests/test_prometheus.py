"""Prometheus export: counters, gauges and latency histograms scraped over real HTTP."""

from __future__ import annotations

import importlib
import logging
import re
import sys
import threading

import anyio
import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import DuplicateTimeseries

import flowgraph as fg
from flowgraph.prometheus import (
    LATENCY_BOUNDS,
    PrometheusExporter,
    _histogram,
    open_metrics_server,
    serve_metrics,
)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _samples(text: str) -> Samples:
    """Every sample of an exposition, keyed by sample name and label set."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples[name, frozenset(labels.items())]


async def _scrape(address: tuple[str, int]) -> str:
    host, port = address
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://{host}:{port}/metrics")
    response.raise_for_status()
    return response.text


def _pipeline(name: str = "numbers", count: int = 40) -> fg.Graph:
    """40 items; multiples of 10 fail once and are retried, multiples of 7 are skipped."""
    seen: set[int] = set()
    graph = fg.Graph(name)

    @graph.transform(workers=2, retry=fg.Retry(attempts=2, initial=0.001), on_error="skip")
    async def check(n: int) -> int:
        if n % 7 == 0:
            raise ValueError(n)
        if n % 10 == 0 and n not in seen:
            seen.add(n)
            raise ValueError(n)
        return n

    @graph.sink
    async def store(n: int) -> None:
        pass

    graph.chain(graph.source(range(1, count + 1), name="numbers"), check, store)
    return graph


async def test_scraped_counters_match_the_run() -> None:
    """After the run drains, a scrape reports exact counts for every node, labelled."""
    registry = CollectorRegistry()
    async with fg.open_run(_pipeline()) as run, open_metrics_server(run, registry=registry) as at:
        await run.wait_finished()
        samples = _samples(await _scrape(at))
    check = {"graph": "numbers", "node": "check", "kind": "transform"}
    assert _value(samples, "flowgraph_items_in_total", **check) == 40
    assert _value(samples, "flowgraph_items_out_total", **check) == 35  # 7 14 21 28 35 skipped
    assert _value(samples, "flowgraph_errors_total", **check) == 5
    assert _value(samples, "flowgraph_skipped_total", **check) == 5
    assert _value(samples, "flowgraph_retries_total", **check) == 4 + 5  # 10 20 30 40, and 7s
    assert _value(samples, "flowgraph_dead_lettered_total", **check) == 0
    assert _value(samples, "flowgraph_workers", **check) == 2
    assert _value(samples, "flowgraph_busy", **check) == 0
    assert _value(samples, "flowgraph_queue_capacity", **check) == 16
    assert _value(samples, "flowgraph_queue_depth", **check) == 0
    source = {"graph": "numbers", "node": "numbers", "kind": "source"}
    assert _value(samples, "flowgraph_items_out_total", **source) == 40
    assert ("flowgraph_queue_depth", frozenset(source.items())) not in samples
    store = {"graph": "numbers", "node": "store", "kind": "sink"}
    assert _value(samples, "flowgraph_items_in_total", **store) == 35
    assert _value(samples, "flowgraph_run_elapsed_seconds", graph="numbers") > 0


async def test_latency_histogram_is_cumulative_and_matches_the_samples() -> None:
    """Buckets never decrease, +Inf equals _count, and _count is the run's sample count."""
    graph = _pipeline(count=400)
    registry = CollectorRegistry()
    async with fg.open_run(graph) as run, open_metrics_server(run, registry=registry) as at:
        await run.wait_finished()
        text = await _scrape(at)
        stats = run.statistics()
    [family] = [f for f in text_string_to_metric_families(text) if f.type == "histogram"]
    assert family.name == "flowgraph_node_latency_seconds"
    for node in ("check", "store"):
        samples = [s for s in family.samples if s.labels.get("node") == node]
        buckets = [s for s in samples if s.name.endswith("_bucket")]
        assert [s.labels["le"] for s in buckets] == [*map(repr, LATENCY_BOUNDS), "+Inf"]
        values = [s.value for s in buckets]
        assert values == sorted(values)
        [count] = [s.value for s in samples if s.name.endswith("_count")]
        assert count == values[-1] == sum(c for _, c in stats[node].latency_buckets) > 0
        [total] = [s.value for s in samples if s.name.endswith("_sum")]
        assert total > 0
    assert not any(s.labels.get("node") == "numbers" for s in family.samples)


def test_histogram_maps_each_log_bucket_to_the_first_bound_above_it() -> None:
    """A log bucket counts under the first ``le`` at or above its upper bound."""
    buckets, total = _histogram([(2**-10, 3), (1.0, 2), (1.1, 1), (100.0, 4)])
    counts = dict(buckets)
    assert counts["0.0005"] == 0
    assert counts["0.001"] == 3  # 2**-10 s = 0.98 ms
    assert counts["0.5"] == 3
    assert counts["1.0"] == 5  # exactly on a bound
    assert counts["2.5"] == 6
    assert counts["60.0"] == 6
    assert counts["+Inf"] == 10  # beyond the last bound
    assert 0 < total < 3 * 2**-10 + 2 + 1.1 + 400


async def test_scrape_during_a_run_reads_live_numbers() -> None:
    """A scrape from the server's thread sees items held in flight and queued."""
    release = anyio.Event()
    graph = fg.Graph("held")

    @graph.sink(buffer=4)
    async def store(n: int) -> None:
        await release.wait()

    graph.connect(graph.source(range(10), name="numbers"), store)
    registry = CollectorRegistry()
    async with fg.open_run(graph) as run, open_metrics_server(run, registry=registry) as at:
        await anyio.wait_all_tasks_blocked()
        samples = _samples(await _scrape(at))
        release.set()
        await run.wait_finished()
    labels = {"graph": "held", "node": "store", "kind": "sink"}
    assert _value(samples, "flowgraph_busy", **labels) == 1
    assert _value(samples, "flowgraph_queue_depth", **labels) == 4
    assert _value(samples, "flowgraph_queue_capacity", **labels) == 4
    assert _value(samples, "flowgraph_items_out_total", **labels) == 0


async def test_two_runs_share_one_registry() -> None:
    """Runs of two graphs are exported side by side, each family once, told apart by graph."""
    registry = CollectorRegistry()
    async with (
        fg.open_run(_pipeline("first", count=10)) as first,
        fg.open_run(_pipeline("second", count=20)) as second,
        open_metrics_server(first, registry=registry) as at,
        open_metrics_server(second, registry=registry) as other,
    ):
        await first.wait_finished()
        await second.wait_finished()
        text = await _scrape(at)
        assert _samples(await _scrape(other)).keys() == _samples(text).keys()
    names = [family.name for family in text_string_to_metric_families(text)]
    assert len(names) == len(set(names))
    samples = _samples(text)
    for graph, count in (("first", 10), ("second", 20)):
        labels = {"graph": graph, "node": "numbers", "kind": "source"}
        assert _value(samples, "flowgraph_items_out_total", **labels) == count


async def test_server_stops_when_the_block_exits() -> None:
    """Leaving the block closes the port and unregisters the run."""
    registry = CollectorRegistry()
    async with fg.open_run(_pipeline()) as run:
        async with open_metrics_server(run, registry=registry) as at:
            assert "flowgraph_items_in_total" in await _scrape(at)
        with pytest.raises(httpx.ConnectError):
            await _scrape(at)
    assert generate_latest(registry) == b""


async def test_finished_run_keeps_its_final_numbers_until_unregistered() -> None:
    """An exporter of a finished run still reports it; unregistering removes it."""
    registry = CollectorRegistry()
    async with fg.open_run(_pipeline()) as run:
        exporter = PrometheusExporter(run, registry=registry)
        exporter.register()
    samples = _samples(generate_latest(registry).decode())
    labels = {"graph": "numbers", "node": "store", "kind": "sink"}
    assert _value(samples, "flowgraph_items_in_total", **labels) == 35
    exporter.unregister()
    assert generate_latest(registry) == b""


def test_collect_from_a_thread_after_the_loop_closed(backend: str) -> None:
    """Once the run's event loop is gone, another thread still collects the final numbers."""

    async def main() -> PrometheusExporter:
        async with fg.open_run(_pipeline()) as run:
            return PrometheusExporter(run, registry=CollectorRegistry())
        raise AssertionError("unreachable")  # pragma: no cover

    exporter = anyio.run(main, backend=backend)
    collected: list[bytes] = []
    thread = threading.Thread(target=lambda: collected.append(generate_latest(exporter)))
    thread.start()
    thread.join()
    samples = _samples(collected[0].decode())
    labels = {"graph": "numbers", "node": "check", "kind": "transform"}
    assert _value(samples, "flowgraph_items_out_total", **labels) == 35


async def test_a_graph_name_is_exported_once_per_registry() -> None:
    """A second run of the same graph, or the same exporter twice, is refused."""
    registry = CollectorRegistry()
    graph = _pipeline()
    async with fg.open_run(graph) as run, fg.open_run(graph) as again:
        exporter = PrometheusExporter(run, registry=registry)
        exporter.register()
        with pytest.raises(
            ValueError, match=r"^<PrometheusExporter of graph 'numbers'> is already registered$"
        ):
            exporter.register()
        with pytest.raises(
            ValueError,
            match=r"^a run of graph 'numbers' is already exported to this registry; "
            r"unregister its exporter first, or give the graphs different names$",
        ):
            PrometheusExporter(again, registry=registry).register()
        with pytest.raises(ValueError, match=r"is not registered$"):
            PrometheusExporter(again, registry=registry).unregister()
        exporter.unregister()
        PrometheusExporter(again, registry=registry).register()


async def test_names_clash_with_other_collectors_of_the_registry() -> None:
    """The exporter declares its names, so a registry refuses another metric of the same name."""

    class Clash:
        def collect(self) -> list[CounterMetricFamily]:
            return [CounterMetricFamily("flowgraph_items_in_total", "clash")]

    registry = CollectorRegistry(auto_describe=True)
    registry.register(Clash())
    async with fg.open_run(_pipeline()) as run:
        with pytest.raises(DuplicateTimeseries):
            PrometheusExporter(run, registry=registry).register()


async def test_serve_metrics_hook_serves_each_run(caplog: pytest.LogCaptureFixture) -> None:
    """A RunStarted hook serves the run's metrics while it runs and logs the address."""
    caplog.set_level(logging.INFO, logger="flowgraph.prometheus")
    release = anyio.Event()
    graph = fg.Graph("hooked")

    @graph.sink
    async def store(n: int) -> None:
        await release.wait()

    graph.connect(graph.source(range(3), name="numbers"), store)
    graph.on(fg.RunStarted)(serve_metrics(registry=CollectorRegistry()))
    async with fg.open_run(graph):
        await anyio.wait_all_tasks_blocked()
        message = caplog.records[0].getMessage()
        match = re.fullmatch(
            r"serving metrics of graph 'hooked' at http://(.+):(\d+)/metrics", message
        )
        assert match is not None, message
        address = (match[1], int(match[2]))
        samples = _samples(await _scrape(address))
        release.set()
    assert _value(samples, "flowgraph_busy", graph="hooked", node="store", kind="sink") == 1
    with pytest.raises(httpx.ConnectError):
        await _scrape(address)


def test_missing_prometheus_client_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without prometheus-client, importing flowgraph.prometheus says what to install."""
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    monkeypatch.delitem(sys.modules, "prometheus_client.core")
    monkeypatch.delitem(sys.modules, "flowgraph.prometheus")
    with pytest.raises(
        ImportError,
        match=r"^flowgraph.prometheus needs prometheus-client: pip install 'flowgraph\[prometheus\]'$",
    ):
        importlib.import_module("flowgraph.prometheus")


async def test_port_in_use_raises_and_leaves_nothing_registered() -> None:
    """A server that cannot bind raises OSError and unregisters the run again."""
    registry = CollectorRegistry()
    async with (
        fg.open_run(_pipeline("first")) as first,
        fg.open_run(_pipeline("second")) as second,
        open_metrics_server(first, registry=registry) as (host, port),
    ):
        with pytest.raises(OSError, match="in use"):
            async with open_metrics_server(second, host=host, port=port, registry=registry):
                pass  # pragma: no cover
        graphs = {
            s.labels["graph"]
            for f in text_string_to_metric_families(generate_latest(registry).decode())
            for s in f.samples
        }
        assert graphs == {"first"}
