"""Crawl a paginated REST API into SQLite: pages in parallel, retries, a rate limit, upserts.

The cookbook's first recipe (docs/cookbook/crawl-to-sqlite.md). It copies every
brewery of an Open Brewery DB-style API (``GET /v1/breweries?page=N&per_page=M``,
each page a bare JSON list) into a SQLite table, one row per brewery id:

    python examples/crawl_to_sqlite.py                      # offline: a flaky stand-in
    python examples/crawl_to_sqlite.py --breweries 100000 --rate 400 --concurrency 32
    python examples/crawl_to_sqlite.py --url https://api.openbrewerydb.org

Offline (the default), the API is flowgraph.testing's FakeAPI, served in-process
behind a FlakyTransport that makes about a quarter of the requests fail
(connection errors, timeouts, 5xx, 429 with Retry-After, bodies cut short); it
also answers 429 itself to more than 10 requests a second. With ``--url`` the
same graph crawls the real service. Run it twice: the second run rewrites the
same rows, and the table still holds one row per brewery.
"""

from __future__ import annotations

import argparse
import contextlib
import sqlite3
import uuid
from typing import TYPE_CHECKING, Any

import flowgraph as fg
from flowgraph.http import HTTPClient, PageNumbers, is_transient, paginate
from flowgraph.testing import FakeAPI, FaultPlan, FlakyTransport

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import httpx

PATH = "/v1/breweries"
COLUMNS = {
    "id": "TEXT",
    "name": "TEXT",
    "brewery_type": "TEXT",
    "city": "TEXT",
    "state_province": "TEXT",
    "country": "TEXT",
    "phone": "TEXT",
    "website_url": "TEXT",
    "longitude": "REAL",
    "latitude": "REAL",
}


def build_graph(
    db: str,
    *,
    base_url: str,
    transport: httpx.AsyncBaseTransport | None = None,
    per_page: int = 200,
    concurrency: int = 4,
    rate: int = 8,
) -> fg.Graph:
    """The crawl: pages of breweries -> rows -> upsert into ``breweries`` by id."""
    graph = fg.Graph("breweries")
    api = HTTPClient(graph, base_url=base_url, timeout=30, transport=transport)
    polite = fg.RateLimiter(fg.Rate(rate, per=fg.SECOND))  # every attempt spends from it
    retry = fg.Retry(attempts=6, on=is_transient)  # waits what a 429's Retry-After asks

    @graph.source
    async def pages() -> AsyncIterator[list[dict[str, Any]]]:
        async for page in paginate(
            api,
            PATH,
            style=PageNumbers(size_param="per_page"),
            page_size=per_page,
            items=None,  # each page is a bare list
            pages=True,  # one item per page: one transaction per page in the sink
            retry=retry,
            rate=polite,
            concurrency=concurrency,
        ):
            yield page

    @graph.transform(inline=True)  # quick: runs on the event loop
    def rows(page: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [to_row(brewery) for brewery in page]

    upsert = fg.Upsert(f"sqlite:///{db}", "breweries", key="id", columns=COLUMNS)
    graph.chain(pages, rows, graph.sink(upsert, name="store", workers=2))
    return graph


def to_row(brewery: dict[str, Any]) -> dict[str, Any]:
    """One brewery as a row: the columns we keep, coordinates as numbers (the API sends text)."""
    row = {column: brewery.get(column) for column in COLUMNS}
    for column in ("longitude", "latitude"):
        row[column] = None if row[column] in (None, "") else float(row[column])
    return row


# -- the offline stand-in -------------------------------------------------------------------

PLACES = [
    ("Portland", "Oregon", "United States", 45.52, -122.68),
    ("Denver", "Colorado", "United States", 39.74, -104.99),
    ("Asheville", "North Carolina", "United States", 35.60, -82.55),
    ("Dublin", "Leinster", "Ireland", 53.35, -6.26),
    ("Munich", "Bavaria", "Germany", 48.14, 11.58),
]
TYPES = ["micro", "brewpub", "regional", "nano", "large", "planning", "contract", "closed"]


def fake_breweries(count: int) -> list[dict[str, Any]]:
    """*count* breweries shaped like Open Brewery DB's, the same on every call."""
    breweries = []
    for n in range(count):
        city, state, country, latitude, longitude = PLACES[n % len(PLACES)]
        located = n % 10 != 0  # as in the real data, some breweries have no coordinates
        breweries.append(
            {
                "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"brewery/{n}")),
                "name": f"Brewery {n:05d}",
                "brewery_type": TYPES[n % len(TYPES)],
                "address_1": f"{100 + n} Main St",
                "city": city,
                "state_province": state,
                "postal_code": f"{10000 + n % 90000}",
                "country": country,
                "longitude": f"{longitude + n % 97 / 1000:.6f}" if located else None,
                "latitude": f"{latitude + n % 89 / 1000:.6f}" if located else None,
                "phone": f"555{n:07d}" if n % 3 else None,
                "website_url": f"http://brewery-{n}.example" if n % 4 else None,
            }
        )
    return breweries


def stand_in(
    breweries: int, *, limit: int = 10, seed: int = 2024
) -> tuple[FakeAPI, FlakyTransport]:
    """The fake Open Brewery DB, and a transport in front of it that fails like a network."""
    api = FakeAPI(rate_limit=(limit, 1.0))  # the server's own limit: 429 past it, a second
    api.collection(
        PATH, fake_breweries(breweries), params={"page_size": "per_page"}, items=None, key=None
    )
    plan = FaultPlan(
        seed=seed,
        probabilities={
            "connect_error": 0.05,
            "read_timeout": 0.05,
            "server_error": 0.08,
            "rate_limited": 0.05,
            "truncated_body": 0.04,
        },
        max_consecutive=3,  # no page fails more than 3 times in a row: 6 attempts suffice
        retry_after=0.5,
    )
    return api, FlakyTransport(api, plan)


# -- the script -----------------------------------------------------------------------------


def count_rows(db: str) -> int:
    with contextlib.closing(sqlite3.connect(db)) as connection:
        exists = connection.execute(
            "SELECT count(*) FROM sqlite_master WHERE name = 'breweries'"
        ).fetchone()[0]
        return (
            int(connection.execute("SELECT count(*) FROM breweries").fetchone()[0]) if exists else 0
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--url", help="the API's base URL (default: an offline stand-in)")
    parser.add_argument("--db", default="breweries.db", help="the SQLite file (breweries.db)")
    parser.add_argument("--breweries", type=int, default=500, help="offline: how many (500)")
    parser.add_argument("--rate", type=int, default=8, help="requests a second (8)")
    parser.add_argument("--concurrency", type=int, default=4, help="pages at once (4)")
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    args = parser.parse_args(argv)

    transport = None
    if args.url is None:
        api, transport = stand_in(args.breweries, limit=max(10, args.rate * 5 // 4))
    graph = build_graph(
        args.db,
        base_url=args.url or "https://breweries.test",
        transport=transport,
        per_page=200 if args.url else 50,  # the real API serves at most 200 a page
        concurrency=args.concurrency,
        rate=args.rate,
    )
    before = count_rows(args.db)
    result = fg.run(graph, backend=args.backend)
    after = count_rows(args.db)
    pages = result.statistics["pages"]
    print(
        f"{pages.items_out} pages in {result.elapsed:.1f}s, {args.concurrency} at a time, "
        f"at most {args.rate} requests/s; {pages.retries} retries"
    )
    if transport is not None:
        faults = ", ".join(f"{kind} {n}" for kind, n in sorted(transport.fault_counts.items()))
        print(f"{len(transport.records)} requests, faults injected: {faults or 'none'}")
        print(f"the server rate-limited {api.statistics().rate_limited} of them")
    print(f"table breweries in {args.db}: {after} rows ({after - before} new)")


if __name__ == "__main__":
    main()
