"""The cookbook's "Scheduled jobs" recipe: side pipelines, a loop under a daily quota, a chord (#17).

examples/scheduled_jobs.py runs one flow per scheduled run. Each part's output
is checked in full: the rows of the main pipeline and of both side pipelines,
a side pipeline that breaks without breaking the main one, the loop's pages
and requests against its quota over several runs and days (a restart keeps
the budget), and the merge of the three counts. The runs go through a
stand-in API with injected faults, under a virtual clock on asyncio and trio;
the script itself runs twice against one state file.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from test_cookbook import example, script

import flowgraph as fg
from flowgraph.testing import FaultPlan, FlakyTransport, ScheduledFault, VirtualClock

jobs = example("scheduled_jobs")
BREWERIES = jobs.fake_breweries(1234)
REQUESTS, ROWS, PER_PAGE = 10, 400, 50  # the script's default quota and page size


def table(db: Path, query: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as connection:
        return list(connection.execute(query).fetchall())


class Schedule:
    """The recipe run as a scheduler runs it: one process after another, the same files.

    Every run builds its flow and its quota anew, as a new process would; the
    stand-in API (and its record of requests) and the virtual clock carry on.
    """

    def __init__(
        self, tmp_path: Path, backend: str, transport: FlakyTransport | None = None
    ) -> None:
        self.db = tmp_path / "breweries.db"
        self.state = f"sqlite:///{tmp_path / 'state.db'}"
        self.clock = VirtualClock(backend)
        self.api, flaky = jobs.stand_in(len(BREWERIES))
        self.transport = transport or flaky

    def run(self) -> tuple[Any, fg.FlowResult]:
        quota = jobs.daily_quota(self.state, requests=REQUESTS, rows=ROWS)
        scheduled = jobs.build_jobs(
            str(self.db),
            base_url="https://breweries.test",
            quota=quota,
            terms=jobs.TERMS,
            per_page=PER_PAGE,
            transport=self.transport,
        )
        backend, options = self.clock.anyio_backend
        result = fg.run(scheduled.flow, state=self.state, backend=backend, backend_options=options)
        return scheduled, result

    def page_attempts(self) -> list[int]:
        """The page of every request for the directory so far, one per attempt."""
        return [
            int(httpx.URL(r.url).params["page"])
            for r in self.transport.records.filter(path=jobs.LIST)
        ]

    def breweries(self) -> list[tuple[Any, ...]]:
        columns = ", ".join(jobs.COLUMNS)
        return table(self.db, f"SELECT {columns} FROM breweries ORDER BY name")


def first(count: int) -> list[tuple[Any, ...]]:
    """The first *count* breweries of the directory, as rows of the breweries table."""
    return [tuple(jobs.to_row(b).values()) for b in BREWERIES[:count]]


def found(term: str) -> list[dict[str, Any]]:
    """What the stand-in's search answers for *term*: the first page of matches."""
    matches = [b for b in BREWERIES if term in f"{b['name']} {b['city']}".lower()]
    return matches[:PER_PAGE]


# -- the main pipeline and its side pipelines -------------------------------------------------


def test_searches_store_their_rows_results_and_failed_requests(
    backend: str, tmp_path: Path
) -> None:
    """One row per term searched, every brewery found beside it, the failed search on its own."""
    schedule = Schedule(tmp_path, backend)
    scheduled, result = schedule.run()
    searched = [term for term in jobs.TERMS if term != "brew"]
    assert table(schedule.db, "SELECT term, matches FROM searches ORDER BY term") == sorted(
        (term, len(found(term))) for term in searched
    )
    assert len(found("atlantis")) == 0 < len(found("brewery 00042")) < len(found("dublin")) == 50
    results = table(schedule.db, "SELECT term, id, name, city FROM search_results")
    assert sorted(results) == sorted(
        (term, b["id"], b["name"], b["city"]) for term in searched for b in found(term)
    )
    assert table(schedule.db, "SELECT * FROM failed_requests") == [
        (
            "GET /v1/breweries/search?query=brew",
            "brew",
            "HTTPStatusError: Server error '504 Gateway Timeout' for url "
            "'https://breweries.test/v1/breweries/search?query=brew&per_page=50'",
            4,
        )
    ]
    assert len(schedule.transport.records.filter(path=jobs.SEARCH, query={"query": "brew"})) == 4
    assert (scheduled.found.delivered, scheduled.found.dropped) == (len(results), 0)
    assert (scheduled.failed.delivered, scheduled.failed.dropped) == (1, 0)
    assert result["searches"].statistics["search"].retries > 3  # faults beyond the 504s


def test_a_broken_side_pipeline_never_breaks_the_searches(backend: str, tmp_path: Path) -> None:
    """The results' table cannot take them: that pipeline fails, and is reported; the rest ran."""
    schedule = Schedule(tmp_path, backend)
    with sqlite3.connect(schedule.db) as connection:  # a table without the (term, id) key
        connection.execute("CREATE TABLE search_results (term TEXT, id TEXT)")
    with pytest.raises(fg.FlowgraphError) as caught:
        schedule.run()
    assert caught.value.__notes__ == [
        "flowgraph: graph 'search-results' of flow 'brewery-jobs' failed"
    ]
    searched = sorted(term for term in jobs.TERMS if term != "brew")
    assert table(schedule.db, "SELECT term FROM searches ORDER BY term") == [(t,) for t in searched]
    assert table(schedule.db, "SELECT count(*) FROM search_results") == [(0,)]
    assert table(schedule.db, "SELECT term FROM failed_requests") == [("brew",)]
    assert table(schedule.db, "SELECT count(*) FROM reports") == [(1,)]  # the chord ran too


# -- the loop under a daily quota --------------------------------------------------------------


def check_run(attempts: list[int], scheduled: Any, *, after: int) -> None:
    """The requests of one run: within the day's quota, spent up to it if the quota stopped
    the loop, and the pages copied one after the other from the one after *after*."""
    assert len(attempts) == scheduled.requests <= REQUESTS
    assert len(attempts) * PER_PAGE <= ROWS  # rows asked: per_page a request, retries too
    if scheduled.quota_spent:  # the day's next request fits in neither window
        assert len(attempts) == REQUESTS or (len(attempts) + 1) * PER_PAGE > ROWS
    pages = scheduled.pages
    assert pages == list(range(after + 1, after + 1 + len(pages)))
    assert attempts == sorted(attempts)  # a page is retried before the next one is asked
    # Every page asked is copied, but the last one if the quota ran out in its retries.
    assert set(attempts) - set(pages) <= {max(attempts)}


def test_the_loop_keeps_to_its_daily_quota_across_restarts_and_days(
    backend: str, tmp_path: Path
) -> None:
    """Each day copies what the quota allows, a restart the same day copies nothing more, and
    day after day the loop goes on from the last page copied until the directory is complete."""
    schedule = Schedule(tmp_path, backend)
    scheduled, _ = schedule.run()
    check_run(schedule.page_attempts(), scheduled, after=0)
    assert scheduled.quota_spent
    copied = scheduled.pages[-1]
    assert schedule.breweries() == first(copied * PER_PAGE)

    spent = len(schedule.page_attempts())
    scheduled, _ = schedule.run()  # restarted the same day: the stored quota has no room
    assert (scheduled.pages, scheduled.requests, scheduled.quota_spent) == ([], 0, True)
    assert len(schedule.page_attempts()) == spent

    days = 1
    while scheduled.quota_spent:
        schedule.clock.run(anyio.sleep, fg.DAY)
        days += 1
        before = len(schedule.page_attempts())
        scheduled, _ = schedule.run()
        check_run(schedule.page_attempts()[before:], scheduled, after=copied)
        copied = scheduled.pages[-1]
        assert schedule.breweries() == first(min(copied * PER_PAGE, len(BREWERIES)))
    assert copied == 25  # 1,234 breweries, 50 a page: it stopped at the short last page
    assert days >= 3
    assert schedule.breweries() == first(len(BREWERIES))

    before = len(schedule.page_attempts())
    schedule.clock.run(anyio.sleep, fg.DAY)
    scheduled, _ = schedule.run()  # the next day: the short last page again, for new ones
    assert set(schedule.page_attempts()[before:]) == {25}
    assert (scheduled.pages, scheduled.quota_spent) == ([25], False)
    assert schedule.breweries() == first(len(BREWERIES))


def test_a_restart_gets_only_what_is_left_of_the_days_quota(tmp_path: Path) -> None:
    """The script, three times on one state file: a short directory first, then a longer one;
    the second run spends only what the first left of the day's quota, the third nothing."""
    backfill = re.compile(r"backfill: pages (\d+)-(\d+) copied \((\d+) requests\), (.*); ")
    one = backfill.search(script("scheduled_jobs", "--breweries", "120", cwd=tmp_path))
    assert one is not None
    assert one.groups()[:2] + one.groups()[3:] == ("1", "3", "the last page is copied")
    two = backfill.search(script("scheduled_jobs", cwd=tmp_path))
    assert two is not None
    assert (two[1], two[4]) == ("3", "the day's quota is spent")  # the short page 3 again
    spent = int(one[3]) + int(two[3])  # requests, retries included; rows asked: 50 each
    assert spent == REQUESTS or (spent <= REQUESTS and (spent + 1) * PER_PAGE > ROWS)
    last = int(two[2])
    three = script("scheduled_jobs", cwd=tmp_path)
    assert "backfill: no page copied (0 requests), the day's quota is spent; " in three
    assert f"breweries copied: {last * PER_PAGE}\n" in three
    columns = ", ".join(jobs.COLUMNS)
    rows = table(tmp_path / "brewery-jobs.db", f"SELECT {columns} FROM breweries ORDER BY name")
    assert rows == first(last * PER_PAGE)
    assert table(tmp_path / "state.db", "SELECT name FROM flowgraph_quotas") == [
        ("breweries-backfill",)
    ]


# -- the chord -----------------------------------------------------------------------------


def test_the_merge_sees_the_three_counts_of_what_the_loop_copied(
    backend: str, tmp_path: Path
) -> None:
    """After the backfill, three counts over its table, merged into one report row."""
    schedule = Schedule(tmp_path, backend)
    _, result = schedule.run()
    copied = [jobs.to_row(b) for b in BREWERIES[: len(schedule.breweries())]]
    assert copied
    ((day, breweries, by_type, countries, located),) = table(schedule.db, "SELECT * FROM reports")
    assert (breweries, countries, located) == (
        len(copied),
        len({b["country"] for b in copied}),
        sum(b["latitude"] is not None for b in copied),
    )
    assert json.loads(by_type) == Counter(b["brewery_type"] for b in copied)
    report = result["report"].statistics
    assert [
        report[name].items_in for name in ("count_types", "count_countries", "count_located")
    ] == [len(copied)] * 3
    assert re.fullmatch(r"\d{4}-\d\d-\d\d", day)


def test_no_report_when_the_backfill_fails_and_the_error_reaches_the_caller(
    backend: str, tmp_path: Path
) -> None:
    """The directory is down: the backfill fails, the chord after it never runs, and the run
    raises the backfill's error, once the searches and their side pipelines are done."""
    api, _ = jobs.stand_in(len(BREWERIES))
    down = ScheduledFault("server_error", attempts=range(1, 1_000), path=jobs.LIST)
    brew = ScheduledFault("server_error", attempts=range(1, 1_000), query={"query": "brew"})
    flaky = FlakyTransport(api, FaultPlan(schedule=[down, brew]))
    schedule = Schedule(tmp_path, backend, flaky)
    first_line = (
        "source 'pages' failed after producing 0 items; last error: HTTPStatusError: Server "
        "error '500 Internal Server Error' for url 'https://breweries.test/v1/breweries?page=1&per_page=50'"
    )
    with pytest.raises(fg.NodeError, match=f"^{re.escape(first_line)}\n") as caught:
        schedule.run()
    assert caught.value.__notes__ == [
        "flowgraph: graph 'backfill' of flow 'brewery-jobs' failed",
        "flowgraph: so 'report' did not run (flow 'brewery-jobs')",
    ]
    assert len(table(schedule.db, "SELECT * FROM searches")) == 6
    assert table(schedule.db, "SELECT term FROM failed_requests") == [("brew",)]
    assert "reports" not in {
        name for (name,) in table(schedule.db, "SELECT name FROM sqlite_master")
    }
