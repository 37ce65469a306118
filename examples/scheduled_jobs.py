"""Scheduled jobs: side pipelines that never break the main one, a loop under a quota, a chord.

The cookbook's fifth recipe (docs/cookbook/scheduled-jobs.md). One run of the
script (started every hour by cron, say) is one ``fg.Flow`` of five graphs
over an Open Brewery DB-style API, writing to a SQLite file (``--db``):

- ``searches``, the main pipeline: each search term, searched, gives one row
  in ``searches``. Two side pipelines run alongside it, each fed through an
  inlet: ``search-results`` stores every brewery a search found, handed over
  by the search itself, and ``failed-requests`` every search that failed for
  good, handed over by the ``ItemFailed`` hook. Neither can hold up or break
  the searches.
- ``backfill``, a loop that triggers itself: each full page of the directory
  triggers the request for the next, into ``breweries``, under a quota of
  requests and rows a day kept in the state store (``--state``). When the
  day's quota is spent, the run ends; the next run carries on from the last
  page copied, with what is left of the quota.
- ``report``, a chord: once the backfill has finished, three counts over the
  breweries copied so far, then one merge of the three into ``reports``.

    python examples/scheduled_jobs.py                         # offline stand-in
    python examples/scheduled_jobs.py --url https://api.openbrewerydb.org \\
        --requests-a-day 1000 --rows-a-day 50000 --per-page 200

Offline (the default), the API is flowgraph.testing's FakeAPI with
``--breweries`` breweries, behind a FlakyTransport that fails some requests,
and every attempt at the search for "brew" (it matches them all) ends in a
504 from the gateway.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sqlite3
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import anyio

import flowgraph as fg
from flowgraph.http import HTTPClient, is_transient
from flowgraph.testing import FakeAPI, FaultPlan, FlakyTransport, ScheduledFault

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator, Mapping

    import httpx

LIST, SEARCH = "/v1/breweries", "/v1/breweries/search"
COLUMNS = ["id", "name", "brewery_type", "city", "country", "latitude", "longitude"]
TERMS = ["portland", "denver", "dublin", "munich", "brewery 00042", "brew", "atlantis"]


@dataclass
class Jobs:
    """The flow, and what the backfill's loop did in its last run."""

    flow: fg.Flow
    found: fg.Inlet
    failed: fg.Inlet
    pages: list[int] = field(default_factory=list)  # the pages copied
    requests: int = 0  # the loop's requests, retries included: what its quota counted
    quota_spent: bool = False  # whether the loop stopped for the quota, not at the end


def build_jobs(
    db: str,
    *,
    base_url: str,
    quota: fg.RateLimiter,
    terms: list[str],
    per_page: int = 50,
    patience: float = 1.0,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Jobs:
    """The five graphs of one scheduled run, in one flow."""
    retry = fg.Retry(attempts=4, on=is_transient)  # waits what a 429's Retry-After asks

    # The side pipelines: a bounded buffer each, never waited for, never raising.
    results = fg.Graph("search-results")
    found = results.inlet("found", buffer=1_000)
    results.connect(found, results.sink(fg.Upsert(db, "search_results", key=["term", "id"])))
    failures = fg.Graph("failed-requests")
    failed = failures.inlet("failed", buffer=1_000)
    failures.connect(failed, failures.sink(fg.Upsert(db, "failed_requests", key="request")))

    searches = fg.Graph("searches")
    backfill = fg.Graph("backfill")
    api = HTTPClient(searches, backfill, base_url=base_url, timeout=30, transport=transport)

    @searches.transform(workers=4, retry=retry, on_error="skip")
    async def search(term: str) -> dict[str, Any]:
        response = await api.client.get(SEARCH, params={"query": term, "per_page": per_page})
        response.raise_for_status()
        breweries = [to_row(brewery) for brewery in response.json()]
        for brewery in breweries:
            found.send_nowait({"term": term, **brewery})  # on the event loop: never waits
        return {"term": term, "matches": len(breweries)}

    @searches.on(fg.ItemFailed)
    def keep_failed_request(event: fg.ItemFailed) -> None:
        term, error = event.failure.item, event.failure.error
        failed.send_nowait(
            {
                "request": f"GET {SEARCH}?query={term}",
                "term": term,
                "error": f"{type(error).__name__}: {str(error).splitlines()[0]}",
                "attempts": event.failure.attempts,
            }
        )

    searches.chain(searches.source(terms, name="terms"), search)
    searches.connect(search, searches.sink(fg.Upsert(db, "searches", key="term"), name="keep"))

    jobs = Jobs(fg.Flow("brewery-jobs"), found, failed)

    async def get_page(page: int) -> list[dict[str, Any]]:
        """One attempt at one page, once the quota has room for it (every attempt spends)."""
        request = {"page": page, "per_page": per_page}
        with anyio.move_on_after(patience) as waiting:
            await quota.acquire(request)
        if waiting.cancelled_caught:
            raise QuotaSpent
        jobs.requests += 1
        response = await api.client.get(LIST, params=request)
        response.raise_for_status()
        return [to_row(brewery) for brewery in response.json()]

    @backfill.source(checkpoint=True)
    async def pages(after: int | None) -> AsyncIterator[fg.Positioned]:
        """The loop: from the page after the last one copied, each full page triggers the next."""
        page = 1 if after is None else after + 1
        while True:
            try:
                breweries = await retry.call(get_page, page)
            except QuotaSpent:
                jobs.quota_spent = True  # the next run carries on from this page
                return
            jobs.pages.append(page)
            full = len(breweries) == per_page
            # A short page is the last: positioned before it, the next run reads it again.
            yield fg.Positioned(breweries, position=page if full else page - 1)
            if not full:
                return
            page += 1

    store = fg.Upsert(db, "breweries", key="id", columns=COLUMNS)
    backfill.connect(pages, backfill.sink(store, name="store"))

    jobs.flow.add(searches)
    jobs.flow.add(results, alongside=searches)
    jobs.flow.add(failures, alongside=searches)
    jobs.flow.add(backfill)
    jobs.flow.add(report_graph(db), after=backfill)
    return jobs


class QuotaSpent(Exception):
    """The quota would hold the next request back for longer than the run's patience."""


def report_graph(db: str) -> fg.Graph:
    """The chord: the breweries copied, counted three ways at once, then one merge."""
    report = fg.Graph("report")
    by_type: Counter[str] = Counter()
    by_country: Counter[str] = Counter()
    located: list[str] = []

    @report.source
    def breweries() -> Iterator[dict[str, Any]]:
        with contextlib.closing(sqlite3.connect(db)) as connection:
            connection.row_factory = sqlite3.Row
            yield from map(dict, connection.execute("SELECT * FROM breweries ORDER BY id"))

    @report.sink(executor="loop")
    def count_types(brewery: dict[str, Any]) -> None:
        by_type[brewery["brewery_type"]] += 1

    @report.sink(executor="loop")
    def count_countries(brewery: dict[str, Any]) -> None:
        by_country[brewery["country"]] += 1

    @report.sink(executor="loop")
    def count_located(brewery: dict[str, Any]) -> None:
        if brewery["latitude"] is not None:
            located.append(brewery["id"])

    report.connect(breweries, count_types, count_countries, count_located)

    @report.after(count_types, count_countries, count_located)
    async def merge(statistics: Mapping[str, fg.NodeStatistics]) -> None:
        row = {
            "day": datetime.now(UTC).date().isoformat(),
            "breweries": statistics["count_types"].items_in,
            "by_type": dict(by_type.most_common()),
            "countries": len(by_country),
            "located": len(located),
        }
        async with fg.Upsert(db, "reports", key="day") as upsert:
            await upsert(row)

    return report


def to_row(brewery: dict[str, Any]) -> dict[str, Any]:
    """The columns we keep; coordinates as numbers (the API sends them as text)."""
    row = {column: brewery.get(column) for column in COLUMNS}
    for column in ("latitude", "longitude"):
        row[column] = None if row[column] in (None, "") else float(row[column])
    return row


def daily_quota(state: str, *, requests: int, rows: int) -> fg.RateLimiter:
    """At most *requests* requests and *rows* rows (as asked: ``per_page``) in any 24 hours."""
    return fg.RateLimiter(
        fg.Rate(requests, per=fg.DAY),
        fg.Rate(rows, per=fg.DAY, cost=rows_asked),
        store=state,
        name="breweries-backfill",
    )


def rows_asked(request: dict[str, int]) -> int:
    return request["per_page"]


# -- the offline stand-in -------------------------------------------------------------------

PLACES = [("Portland", "United States"), ("Denver", "United States"), ("Dublin", "Ireland")]
PLACES += [("Munich", "Germany"), ("Asheville", "United States"), ("Bruges", "Belgium")]
TYPES = ["micro", "brewpub", "regional", "nano", "large", "contract", "closed"]


def fake_breweries(count: int) -> list[dict[str, Any]]:
    """*count* breweries shaped like Open Brewery DB's, the same on every call."""
    return [
        {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"brewery/{n}")),
            "name": f"Brewery {n:05d}",
            "brewery_type": TYPES[n % len(TYPES)],
            "city": PLACES[n % len(PLACES)][0],
            "country": PLACES[n % len(PLACES)][1],
            "latitude": None if n % 10 == 0 else f"{40 + n % 17 / 10:.4f}",
            "longitude": None if n % 10 == 0 else f"{-100 + n % 23 / 10:.4f}",
        }
        for n in range(count)
    ]


def stand_in(breweries: int, *, seed: int = 7) -> tuple[FakeAPI, FlakyTransport]:
    """The fake API (the directory, page by page, and its search), behind faults."""
    api = FakeAPI()
    directory = fake_breweries(breweries)
    api.collection(LIST, directory, params={"page_size": "per_page"}, items=None, key=None)

    @api.route("GET", SEARCH)
    def search(request: httpx.Request) -> list[dict[str, Any]]:
        term = request.url.params["query"].lower()
        per_page = int(request.url.params.get("per_page", 50))
        found = [b for b in directory if term in f"{b['name']} {b['city']}".lower()]
        return found[:per_page]

    gateway_timeout = ScheduledFault(
        "server_error", status=504, attempts=range(1, 1_000), path=SEARCH, query={"query": "brew"}
    )
    plan = FaultPlan(
        seed=seed,
        probabilities={"connect_error": 0.1, "server_error": 0.1, "rate_limited": 0.05},
        max_consecutive=2,  # 4 attempts always get through, but for the search for "brew"
        retry_after=0.2,
        schedule=[gateway_timeout],
    )
    return api, FlakyTransport(api, plan)


# -- the script -----------------------------------------------------------------------------


def count(db: str, table: str) -> int:
    with contextlib.closing(sqlite3.connect(db)) as connection:
        return int(connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--url", help="the API's base URL (default: an offline stand-in)")
    parser.add_argument("--db", default="brewery-jobs.db", help="the SQLite file (brewery-jobs.db)")
    parser.add_argument("--state", default="state.db", help="checkpoints, quota (state.db)")
    parser.add_argument("--terms", nargs="+", default=TERMS, help="what to search for")
    parser.add_argument("--requests-a-day", type=int, default=10, help="quota (10)")
    parser.add_argument("--rows-a-day", type=int, default=400, help="quota (400)")
    parser.add_argument("--per-page", type=int, default=50, help="rows a page (50)")
    parser.add_argument("--patience", type=float, default=1.0, help="seconds (1)")
    parser.add_argument("--breweries", type=int, default=1234, help="offline: how many (1234)")
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    args = parser.parse_args(argv)

    state = f"sqlite:///{args.state}"
    quota = daily_quota(state, requests=args.requests_a_day, rows=args.rows_a_day)
    jobs = build_jobs(
        args.db,
        base_url=args.url or "https://breweries.test",
        quota=quota,
        terms=args.terms,
        per_page=args.per_page,
        patience=args.patience,
        transport=None if args.url else stand_in(args.breweries)[1],
    )
    result = fg.run(jobs.flow, backend=args.backend, state=state)
    searched = result["searches"].statistics["search"]
    print(
        f"searches: {searched.items_out} of {searched.items_in} terms searched, "
        f"{searched.skipped} failed; rows in searches: {count(args.db, 'searches')}"
    )
    print(
        f"side pipelines: {jobs.found.delivered} results stored ({jobs.found.dropped} dropped), "
        f"{jobs.failed.delivered} failed requests stored ({jobs.failed.dropped} dropped)"
    )
    pages = f"pages {jobs.pages[0]}-{jobs.pages[-1]}" if jobs.pages else "no page"
    why = "the day's quota is spent" if jobs.quota_spent else "the last page is copied"
    print(
        f"backfill: {pages} copied ({jobs.requests} requests), {why}; "
        f"breweries copied: {count(args.db, 'breweries')}"
    )
    with contextlib.closing(sqlite3.connect(args.db)) as connection:
        day, breweries, by_type, countries, located = connection.execute(
            "SELECT day, breweries, by_type, countries, located FROM reports ORDER BY day DESC"
        ).fetchone()
    micro = json.loads(by_type).get("micro", 0)
    print(
        f"report of {day}: {breweries} breweries ({micro} micro) in {countries} countries, "
        f"{located} with coordinates"
    )


if __name__ == "__main__":
    main()
