from __future__ import annotations

import re
from typing import Any

import anyio
import httpx
import pytest

from flowgraph.testing import FakeAPI, FakeAPIStatistics, FaultPlan, FlakyTransport, open_server


def in_process(api: FakeAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://api.test")


async def crawl_pages(client: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    page: int | None = 1
    while page is not None:
        response = await client.get("/items", params={**params, "page": page})
        response.raise_for_status()
        body = response.json()
        records += body["items"]
        page = body["next_page"]
    return records


async def crawl_offsets(client: httpx.AsyncClient, limit: int) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    offset: int | None = 0
    while offset is not None:
        body = (await client.get("/items", params={"offset": offset, "limit": limit})).json()
        records += body["items"]
        offset = body["next_offset"]
    return records


async def crawl_cursor(
    client: httpx.AsyncClient, *, follow_link_header: bool
) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    url: str | None = "/items/cursor?limit=7"
    while url is not None:
        response = await client.get(url)
        response.raise_for_status()
        records += response.json()["items"]
        link = response.links.get("next", {}).get("url")
        assert link == response.json()["next"]
        url = link if follow_link_header else response.json()["next"]
    return records


def test_records_are_deterministic() -> None:
    """Record i is the same dict every time, and all_records lists ids 1 to N."""
    assert FakeAPI.record(3) == {"id": 3, "name": "item-00003", "value": 3 * 7919 % 10007}
    assert [r["id"] for r in FakeAPI(records=4).all_records()] == [1, 2, 3, 4]


async def test_page_numbers_return_every_record_exactly_once() -> None:
    """Following next_page from page 1 yields every record once, in order."""
    api = FakeAPI(records=103, page_size=10)
    async with in_process(api) as client:
        assert await crawl_pages(client) == api.all_records()
        assert await crawl_pages(client, page_size=50) == api.all_records()
        last = (await client.get("/items", params={"page": 11})).json()
    assert {k: v for k, v in last.items() if k != "items"} == {
        "page": 11,
        "page_size": 10,
        "total": 103,
        "total_pages": 11,
        "next_page": None,
    }
    assert [r["id"] for r in last["items"]] == [101, 102, 103]


async def test_offsets_return_every_record_exactly_once() -> None:
    """Following next_offset from 0 yields every record once, for any limit."""
    api = FakeAPI(records=50)
    async with in_process(api) as client:
        for limit in (1, 7, 50, 80):
            assert await crawl_offsets(client, limit) == api.all_records()


@pytest.mark.parametrize("follow_link_header", [True, False])
async def test_cursors_return_every_record_exactly_once(follow_link_header: bool) -> None:
    """Following the next link (body or Link header) yields every record once."""
    api = FakeAPI(records=40)
    async with in_process(api) as client:
        records = await crawl_cursor(client, follow_link_header=follow_link_header)
    assert records == api.all_records()


async def test_link_header_can_be_turned_off() -> None:
    """With link_header=False the next link is only in the body."""
    async with in_process(FakeAPI(records=10, page_size=3, link_header=False)) as client:
        response = await client.get("/items/cursor")
    assert "link" not in response.headers
    assert response.json()["next"].startswith("http://api.test/items/cursor?cursor=")


async def test_empty_api_has_one_empty_page() -> None:
    """With no records the first page is empty and has no next page."""
    async with in_process(FakeAPI(records=0)) as client:
        body = (await client.get("/items")).json()
        cursor = (await client.get("/items/cursor")).json()
    assert (body["items"], body["next_page"]) == ([], None)
    assert cursor == {"items": [], "next_cursor": None, "next": None}


async def test_single_records_and_unknown_paths() -> None:
    """/items/{id} returns the record; a missing id or unknown path is a 404."""
    async with in_process(FakeAPI(records=5)) as client:
        assert (await client.get("/items/5")).json() == FakeAPI.record(5)
        assert (await client.get("/items/6")).status_code == 404
        assert (await client.get("/nothing")).status_code == 404


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("/items?page=0", "page must be an integer >= 1 (got '0')"),
        ("/items?page=two", "page must be an integer >= 1 (got 'two')"),
        ("/items?page=1&offset=3", "use either page or offset, not both"),
        ("/items?limit=0", "limit must be an integer >= 1 (got '0')"),
        ("/items/cursor?cursor=bogus", "invalid cursor 'bogus'"),
        ("/items/x", "record id must be an integer >= 1 (got 'x')"),
    ],
)
async def test_bad_parameters_get_a_400_saying_why(url: str, error: str) -> None:
    """Invalid query parameters are answered 400 with an explanation."""
    async with in_process(FakeAPI()) as client:
        response = await client.get(url)
    assert (response.status_code, response.json()) == (400, {"error": error})


async def test_only_get_is_allowed() -> None:
    """Other methods get a 405 with an Allow header."""
    async with in_process(FakeAPI()) as client:
        response = await client.post("/items")
    assert (response.status_code, response.headers["allow"]) == (405, "GET")


async def test_rate_limit_answers_429_with_retry_after_until_the_window_frees() -> None:
    """Past n requests per window the API answers 429 with Retry-After, then recovers."""
    api = FakeAPI(records=10, rate_limit=(3, 0.05))
    async with in_process(api) as client:
        statuses = [(await client.get("/items")).status_code for _ in range(4)]
        limited = await client.get("/items/1")
        await anyio.sleep(0.06)
        recovered = await client.get("/items/1")
    assert statuses == [200, 200, 200, 429]
    assert (limited.status_code, limited.headers["retry-after"]) == (429, "1")
    assert recovered.status_code == 200
    assert api.statistics() == FakeAPIStatistics(received=6, served=4, rate_limited=2)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"records": -1}, "records must be >= 0 (got -1)"),
        ({"page_size": 0}, "page_size must be >= 1 (got 0)"),
        (
            {"rate_limit": (0, 1.0)},
            "rate_limit must be (requests >= 1, per > 0 seconds) (got (0, 1.0))",
        ),
        (
            {"rate_limit": (5, 0)},
            "rate_limit must be (requests >= 1, per > 0 seconds) (got (5, 0))",
        ),
    ],
)
def test_invalid_configuration_is_rejected(options: dict[str, Any], message: str) -> None:
    """Constructor arguments are validated with messages that say what is allowed."""
    with pytest.raises(ValueError, match=rf"^{re.escape(message)}$"):
        FakeAPI(**options)


def test_repr_is_the_constructor_call() -> None:
    """The repr shows how to rebuild the API."""
    api = FakeAPI(records=10, page_size=5, rate_limit=(10, 1.0), link_header=False)
    assert repr(api) == "FakeAPI(records=10, page_size=5, rate_limit=(10, 1.0), link_header=False)"


async def test_served_on_loopback_answers_a_real_client() -> None:
    """open_server serves the API on 127.0.0.1 to a real httpx client, on both backends."""
    api = FakeAPI(records=60, page_size=7)
    async with open_server(api) as base_url:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", base_url)
        async with httpx.AsyncClient(base_url=base_url) as client:
            assert await crawl_pages(client) == api.all_records()
            assert await crawl_cursor(client, follow_link_header=True) == api.all_records()
    assert api.statistics().served == 9 + 9


async def test_served_api_combines_with_fault_injection_over_the_network() -> None:
    """A FlakyTransport around a real network transport injects faults into loopback traffic."""
    api = FakeAPI(records=20, page_size=5)
    plan = FaultPlan(probabilities={"server_error": 1.0}, max_consecutive=1)
    async with open_server(api) as base_url:
        transport = FlakyTransport(httpx.AsyncHTTPTransport(), plan)
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
            statuses = [(await client.get("/items/1")).status_code for _ in range(4)]
    assert [s == 200 for s in statuses] == [False, True, False, True]
    assert api.statistics().served == 2


async def test_server_shuts_down_promptly_with_a_client_still_connected() -> None:
    """Leaving open_server does not hang on an idle keep-alive connection."""
    async with httpx.AsyncClient() as client:
        with anyio.fail_after(5):
            async with open_server(FakeAPI(records=1)) as base_url:
                assert (await client.get(f"{base_url}/items/1")).status_code == 200
            start = anyio.current_time()
        assert anyio.current_time() - start < 1.5


async def test_error_in_the_block_stops_the_server_and_propagates() -> None:
    """An exception inside open_server's block surfaces unchanged after shutdown."""
    with pytest.raises(RuntimeError, match=r"^boom$"):
        async with open_server(FakeAPI()):
            raise RuntimeError("boom")


async def test_cancelling_the_block_stops_the_server_cleanly() -> None:
    """A cancel scope around open_server cancels the block and the server together."""
    with anyio.move_on_after(0.05) as scope:
        async with open_server(FakeAPI()) as base_url, httpx.AsyncClient() as client:
            assert (await client.get(f"{base_url}/items/1")).status_code == 200
            await anyio.sleep(60)
    assert scope.cancelled_caught
