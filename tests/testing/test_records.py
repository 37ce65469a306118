"""RequestLog and RequestRecord: what a test asserts on after the code under test ran."""

from __future__ import annotations

import re

import httpx
import pytest

from flowgraph.testing import FakeAPI, FaultKind, RequestLog, RequestRecord


def record(
    index: int, method: str, url: str, status: int | None, **options: object
) -> RequestRecord:
    request = httpx.Request(method, url, **options)  # type: ignore[arg-type]
    return RequestRecord(index, method, url, 1, None, status, float(index), request)


LOG = RequestLog(
    [
        record(0, "POST", "http://api.test/orders", 201, json={"sku": "a"}),
        record(1, "GET", "http://api.test/orders/1?expand=lines", 200, headers={"X-Key": "k"}),
        record(2, "GET", "http://api.test/orders/2", 404),
    ]
)


def test_filter_picks_by_method_path_query_headers_and_body() -> None:
    """filter() keeps the records whose request meets every condition, as a RequestLog."""
    assert [r.index for r in LOG.filter("GET")] == [1, 2]
    assert [r.index for r in LOG.filter(path="/orders/{id:int}")] == [1, 2]
    assert [r.index for r in LOG.filter(query={"expand": "lines"})] == [1]
    assert [r.index for r in LOG.filter(headers={"x-key": "k"})] == [1]
    assert [r.index for r in LOG.filter(json={"sku": "a"})] == [0]
    assert isinstance(LOG.filter("GET"), RequestLog)
    assert LOG.filter("DELETE") == ()


def test_last_and_assert_called_return_what_matched() -> None:
    """last is the latest record; assert_called returns the matches for more assertions."""
    assert LOG.last.index == 2
    assert LOG.assert_called("GET", "/orders/*", times=2).last.status_code == 404
    assert LOG.assert_called(json={"sku": "a"})[0].json() == {"sku": "a"}
    LOG.assert_not_called("PUT")
    with pytest.raises(IndexError, match=r"^no request was recorded$"):
        _ = RequestLog().last


def test_failed_assertions_say_what_was_expected_and_what_was_seen() -> None:
    """The message names the conditions, the count found, and lists the requests seen."""
    expected = (
        "expected 3 requests matching GET /orders/* query={'expand': 'lines'}, got 1; "
        "requests seen:\n"
        "  #0 POST http://api.test/orders -> 201\n"
        "  #1 GET http://api.test/orders/1?expand=lines -> 200\n"
        "  #2 GET http://api.test/orders/2 -> 404"
    )
    with pytest.raises(AssertionError, match=rf"^{re.escape(expected)}$"):
        LOG.assert_called("GET", "/orders/*", query={"expand": "lines"}, times=3)
    with pytest.raises(
        AssertionError,
        match=r"^expected at least 1 request matching any method \* json=\{'sku': 'b'\}, got 0;",
    ):
        LOG.assert_called(json={"sku": "b"})
    with pytest.raises(AssertionError, match=r"^expected 0 requests matching POST \*, got 1;"):
        LOG.assert_not_called("POST")
    with pytest.raises(
        AssertionError,
        match=r"^expected 1 request matching GET /x, got 0; no request was recorded$",
    ):
        RequestLog().assert_called("GET", "/x", times=1)


def test_long_logs_list_only_the_latest_requests() -> None:
    """A failure message lists the last 20 requests, saying how many there were."""
    log = RequestLog(record(n, "GET", f"http://t/{n}", 200) for n in range(25))
    with pytest.raises(AssertionError) as caught:
        log.assert_called("POST")
    lines = str(caught.value).splitlines()
    assert lines[0].endswith("requests seen (the last 20 of 25):")
    assert lines[1].strip() == "#5 GET http://t/5 -> 200"
    assert len(lines) == 21


def test_records_compare_without_their_request_and_read_their_body() -> None:
    """Two records of equal fields are equal whatever their request; json() parses the body."""
    first = record(0, "POST", "http://t/a%20b", 201, json={"a": 1})
    same = RequestRecord(0, "POST", "http://t/a%20b", 1, None, 201, 0.0)
    assert first == same
    assert first.path == "/a b"
    assert first.json() == {"a": 1}
    assert "request" not in repr(first)
    with pytest.raises(ValueError, match=r"^GET http://t/ was sent without a body$"):
        record(1, "GET", "http://t/", 200).json()
    faulted = RequestRecord(3, "GET", "http://t/", 2, FaultKind.READ_TIMEOUT, None, 0.0)
    assert faulted.describe() == "#3 GET http://t/ -> no response (read_timeout)"


async def test_logs_are_the_same_on_an_api_and_a_transport() -> None:
    """FakeAPI.requests and FlakyTransport.records are RequestLogs of the same requests."""
    from flowgraph.testing import FlakyTransport

    api = FakeAPI(records=3)
    transport = FlakyTransport(api)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:
        await client.get("/items/1")
        await client.get("/items/9")
    assert isinstance(transport.records, RequestLog)
    seen = [(r.index, r.method, r.url, r.attempt, r.status_code) for r in api.requests]
    assert seen == [(r.index, r.method, r.url, r.attempt, r.status_code) for r in transport.records]
    assert [r.status_code for r in api.requests] == [200, 404]
