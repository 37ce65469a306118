"""The testing pages' set-up, pasted into a fresh project, runs their pytest examples as pytest does.

The docs' own run executes every block of docs/testing-*.md; this module checks what
that run cannot: the documented pyproject setting and conftest.py, with the plugin,
collecting and running the pages' tests on both backends (regression test for #14.1).
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

DOCS = Path(__file__).resolve().parents[2] / "docs"

PYPROJECT_LINE = (
    'anyio_mode = "auto"  # run every async test with anyio (or mark each: @pytest.mark.anyio)'
)

CONFTEST = """# conftest.py
import pytest


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request):
    return request.param
"""

CRAWLER = """
import httpx
import flowgraph as fg
from flowgraph.http import HTTPClient, fetch, is_transient


def build_graph(
    transport: httpx.AsyncBaseTransport | None = None, *, ids=range(1, 301), on_error="raise"
):
    graph = fg.Graph("crawler")
    api = HTTPClient(graph, base_url="https://api.example.com", transport=transport)
    stored: dict[int, dict] = {}

    @graph.source
    async def record_ids():
        for record_id in ids:
            yield record_id

    detail = graph.transform(
        fetch(api, "/items/{}"),
        name="detail",
        workers=8,
        retry=fg.Retry(attempts=5, on=is_transient),
        rate=fg.Rate(20, per=1.0),
        on_error=on_error,
    )

    @graph.sink
    async def store(record: dict) -> None:
        assert record["id"] not in stored, f"record {record['id']} stored twice"
        stored[record["id"]] = record

    graph.chain(record_ids, detail, store)
    return graph, stored
"""

TESTS = """
import anyio
import httpx
import pytest
from hypothesis import given, settings

import flowgraph as fg
from crawler import build_graph
from flowgraph.testing import FakeAPI, FaultPlan, FlakyTransport, ScheduledFault, VirtualClock
from flowgraph.testing.strategies import fault_plans


@pytest.mark.flowgraph_virtual_time
async def test_every_record_arrives_exactly_once(flaky_transport, fake_api):
    graph, stored = build_graph(flaky_transport)
    result = await graph.run()
    assert sorted(stored.values(), key=lambda r: r["id"]) == fake_api.all_records()[:300]
    failed = sum(1 for r in flaky_transport.records if r.fault and r.fault.is_failure)
    assert result.statistics["detail"].retries == failed, flaky_transport.describe()


@pytest.mark.flowgraph_virtual_time
async def test_waits_what_the_server_asks(fake_api):
    plan = FaultPlan(
        schedule=[ScheduledFault("rate_limited", attempts=[1], path="/items/2")],
        retry_after=30.5,
    )
    transport = FlakyTransport(fake_api, plan)
    graph, stored = build_graph(transport, ids=[1, 2, 3])
    await graph.run()
    first, retried = transport.records.filter(path="/items/2")
    assert retried.time - first.time == pytest.approx(30.5)


@pytest.mark.flowgraph_virtual_time
async def test_a_dead_record_is_dead_lettered(fake_api, tmp_path):
    plan = FaultPlan(
        schedule=[ScheduledFault("server_error", attempts=range(1, 100), path="/items/7")],
        probabilities={"server_error": 0.2},
        max_consecutive=3,
    )
    transport = FlakyTransport(fake_api, plan)
    graph, stored = build_graph(transport, ids=range(1, 11), on_error="dead_letter")
    dead_letters = fg.DeadLetters(tmp_path / "state.db")
    result = await graph.run(dead_letters=dead_letters)
    assert sorted(stored) == [1, 2, 3, 4, 5, 6, 8, 9, 10]
    assert result.statistics["detail"].dead_lettered == 1
    transport.records.assert_called("GET", "/items/7", times=5)


@pytest.mark.flowgraph_virtual_time
async def test_a_minute_passes_instantly(virtual_clock):
    start = anyio.current_time()
    await anyio.sleep(60)
    assert anyio.current_time() - start == pytest.approx(60)
    assert virtual_clock.current_time() == pytest.approx(anyio.current_time())


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@settings(max_examples=10, deadline=None)
@given(plan=fault_plans(max_consecutive_failures=4))
def test_no_plan_loses_a_record(backend, plan):
    api = FakeAPI(records=100)
    transport = FlakyTransport(api, plan)
    graph, stored = build_graph(transport, ids=range(1, 101))
    VirtualClock(backend).run(graph.run)
    assert sorted(stored.values(), key=lambda r: r["id"]) == api.all_records(), transport.describe()
"""


def test_the_pages_show_this_set_up() -> None:
    """The set-up checked below is, verbatim, the one the client page tells readers to paste."""
    page = (DOCS / "testing-api-clients.md").read_text()
    assert PYPROJECT_LINE in page
    assert f"```python\n{CONFTEST}```" in page
    assert 'anyio_mode = "auto"' in (DOCS / "testing-pipelines.md").read_text()
    assert CRAWLER.strip() in (DOCS / "testing-pipelines.md").read_text()


def test_documented_examples_pass_in_a_fresh_project(pytester: pytest.Pytester) -> None:
    """With the documented pyproject line and conftest.py, every example passes on both backends."""
    pytester.makepyprojecttoml(
        f"""
        [tool.pytest.ini_options]
        {PYPROJECT_LINE}
        addopts = "-p no:asyncio -p no:cacheprovider --strict-markers"
        filterwarnings = ["error"]
        """
    )
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(crawler=CRAWLER, test_crawler=TESTS)
    pytester.syspathinsert()
    result = pytester.runpytest()
    result.assert_outcomes(passed=10)


def test_without_anyio_mode_the_failure_names_the_fix(pytester: pytest.Pytester) -> None:
    """Forgetting anyio_mode fails the virtual-time test at setup with an explanation, not silently."""
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(
        """
        import anyio, pytest

        @pytest.mark.flowgraph_virtual_time
        async def test_sleeps():
            await anyio.sleep(60)
        """
    )
    result = pytester.runpytest("-p", "no:asyncio", "-p", "no:cacheprovider")
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*virtual time needs an async test*"])
