"""FakeAPI collections: your records served by pages, offsets or cursors, each exactly once."""

from __future__ import annotations

import math
import re
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowgraph.http import Cursors, NextLinks, Offsets, PageNumbers, paginate
from flowgraph.testing import Collection, FakeAPI

STYLES = ["page", "offset", "cursor"]


def rows(count: int) -> list[dict[str, Any]]:
    return [{"id": f"r{n}", "n": n} for n in range(count)]


async def follow_links(client: httpx.AsyncClient, url: str, items: str | None) -> list[list[Any]]:
    """Every page, following Link: rel="next" from *url* until a page has none."""
    pages: list[list[Any]] = []
    next_url: str | None = url
    while next_url is not None:
        response = await client.get(next_url)
        response.raise_for_status()
        body = response.json()
        pages.append(body if items is None else body[items])
        next_url = response.links.get("next", {}).get("url")
    return pages


@settings(max_examples=60)
@given(
    count=st.integers(0, 60),
    style=st.sampled_from(STYLES),
    page_size=st.integers(1, 25),
    asked=st.none() | st.integers(1, 25),
    items=st.sampled_from(["items", "data", None]),
)
async def test_following_next_links_serves_every_record_exactly_once(
    count: int, style: str, page_size: int, asked: int | None, items: str | None
) -> None:
    """Whatever the style, default and asked page size, the Link chain yields each record once."""
    api = FakeAPI()
    table = api.collection("/rows", rows(count), pagination=style, page_size=page_size, items=items)  # type: ignore[arg-type]
    size = asked or page_size
    size_name = "page_size" if style == "page" else "limit"
    first = "/rows" if asked is None else f"/rows?{size_name}={asked}"
    async with httpx.AsyncClient(transport=api, base_url="http://api.test") as client:
        pages = await follow_links(client, first, items)
    assert [record for page in pages for record in page] == table.records
    assert len(pages) == max(1, math.ceil(count / size))
    assert all(len(page) == size for page in pages[:-1])
    assert len(table.requests) == len(pages)


PAGINATORS: dict[str, PageNumbers | Offsets | Cursors] = {
    "page": PageNumbers(),
    "offset": Offsets(),
    "cursor": Cursors(),
}


@settings(max_examples=60)
@given(
    count=st.integers(0, 50),
    style=st.sampled_from(STYLES),
    page_size=st.integers(1, 20),
    asked=st.none() | st.integers(1, 20),
    link=st.booleans(),
)
async def test_flowgraph_paginate_walks_every_style_to_the_end(
    count: int, style: str, page_size: int, asked: int | None, link: bool
) -> None:
    """flowgraph.http.paginate, with the style's defaults, gets each record exactly once."""
    api = FakeAPI()
    table = api.collection(
        "/rows",
        rows(count),
        pagination=style,  # type: ignore[arg-type]
        page_size=page_size,
        link_header=link,
    )
    pager: PageNumbers | Offsets | Cursors | NextLinks = (
        NextLinks() if style == "cursor" and link else PAGINATORS[style]
    )
    async with httpx.AsyncClient(transport=api, base_url="http://api.test") as client:
        got = [record async for record in paginate(client, "/rows", style=pager, page_size=asked)]
    assert got == table.records


async def test_renamed_parameters_and_a_bare_list_play_a_real_api() -> None:
    """?page=N&per_page=M returning a bare JSON list, as the Open Brewery DB does."""
    breweries = [{"id": f"b-{n}", "name": f"Brewery {n}"} for n in range(23)]
    api = FakeAPI()
    api.collection("/breweries", breweries, params={"page_size": "per_page"}, items=None)
    async with httpx.AsyncClient(transport=api, base_url="http://api.test") as client:
        pager = PageNumbers(size_param="per_page")
        got = [
            b async for b in paginate(client, "/breweries", style=pager, page_size=5, items=None)
        ]
        first = await client.get("/breweries", params={"per_page": 5})
        one = await client.get("/breweries/b-7")
        missing = await client.get("/breweries/nope")
        bad = await client.get("/breweries", params={"per_page": 0})
    assert got == breweries
    assert first.json() == breweries[:5]
    assert first.links["next"]["url"] == "http://api.test/breweries?per_page=5&page=2"
    assert one.json() == breweries[7]
    assert (missing.status_code, missing.json()) == (404, {"error": "no record with id 'nope'"})
    assert (bad.status_code, bad.json()) == (
        400,
        {"error": "per_page must be an integer >= 1 (got '0')"},
    )


async def test_envelope_fields_describe_the_page() -> None:
    """Page bodies carry the same fields as the generated /items, for each style."""
    api = FakeAPI()
    for style in STYLES:
        api.collection(f"/{style}", rows(7), pagination=style, page_size=3, key=None)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=api, base_url="http://api.test") as client:
        page = (await client.get("/page", params={"page": 3})).json()
        offset = (await client.get("/offset", params={"offset": 3})).json()
        cursor = (await client.get("/cursor")).json()
        item = await client.get("/page/r1")
    assert {k: v for k, v in page.items() if k != "items"} == {
        "page": 3,
        "page_size": 3,
        "total": 7,
        "total_pages": 3,
        "next_page": None,
    }
    assert offset == {"items": rows(7)[3:6], "offset": 3, "limit": 3, "total": 7, "next_offset": 6}
    assert cursor["items"] == rows(7)[:3]
    assert cursor["next"] == f"http://api.test/cursor?cursor={cursor['next_cursor']}"
    assert item.status_code == 404  # key=None: no single records


async def test_records_can_change_between_requests() -> None:
    """Appending to a collection's records plays new data arriving at the API."""
    api = FakeAPI()
    table = api.collection("/events", rows(2), pagination="offset")
    async with httpx.AsyncClient(transport=api, base_url="http://api.test") as client:
        before = (await client.get("/events", params={"offset": 2})).json()["items"]
        table.records.append({"id": "late", "n": 99})
        after = (await client.get("/events", params={"offset": 2})).json()["items"]
    assert (before, after) == ([], [{"id": "late", "n": 99}])
    assert isinstance(table, Collection)
    assert [r.status_code for r in table.requests] == [200, 200]


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        (
            {"pagination": "link"},
            ValueError,
            "pagination must be 'page', 'offset' or 'cursor' (got 'link')",
        ),
        ({"page_size": 0}, ValueError, "page_size must be an integer >= 1 (got 0)"),
        (
            {"pagination": "offset", "params": {"page": "p"}},
            ValueError,
            "params of 'offset' pagination rename 'offset' and 'limit' (got 'page')",
        ),
        (
            {"records": [{"name": "x"}]},
            ValueError,
            "record 0 has no 'id' (pass key=None to serve no single records)",
        ),
        (
            {"records": [{"id": 1}, {"id": "1"}]},
            ValueError,
            "records 'id' must be unique (got '1' twice)",
        ),
        (
            {"records": [{"id": 1, "at": object}]},
            TypeError,
            "record 0 is not JSON: {'id': 1, 'at': <class 'object'>}",
        ),
    ],
    ids=["style", "size", "rename", "no-key", "duplicate", "not-json"],
)
def test_invalid_collections_are_refused_when_declared(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    """collection() checks its options and records at once, saying what is wrong."""
    records = options.pop("records", rows(3))
    with pytest.raises(error, match=rf"^{re.escape(message)}$"):
        FakeAPI().collection("/x", records, **options)
