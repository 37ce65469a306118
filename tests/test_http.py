"""flowgraph.http: one client per run, paginated sources and fetch transforms against FakeAPI."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import anyio
import httpx
import pytest

import flowgraph as fg
from flowgraph.http import (
    Cursors,
    HTTPClient,
    NextLinks,
    Offsets,
    PageNumbers,
    fetch,
    is_transient,
    paginate,
)
from flowgraph.testing import FakeAPI, FaultKind, FaultPlan, FlakyTransport, ScheduledFault

BASE = "http://api.test"

FAILURES = {
    "connect_error": 0.05,
    "read_timeout": 0.05,
    "server_error": 0.15,
    "rate_limited": 0.05,
    "truncated_body": 0.05,
    "invalid_json": 0.05,
}
"""40% of requests fail, in every way FlakyTransport knows: with a hundred requests or more,
at least 20% fail whatever the seed (the 20% mark is over five standard deviations away)."""


def flaky(api: FakeAPI, seed: int, **options: Any) -> FlakyTransport:
    plan = FaultPlan(seed=seed, probabilities=FAILURES, max_consecutive=3, **options)
    return FlakyTransport(httpx.ASGITransport(app=api), plan)


def failed_requests(transport: FlakyTransport) -> int:
    return sum(1 for r in transport.records if r.fault is not None and r.fault.is_failure)


def assert_heavily_faulted(transport: FlakyTransport) -> None:
    assert failed_requests(transport) >= 0.2 * len(transport.records), transport.describe()


async def collect(iterator: Any) -> list[Any]:
    return [record async for record in iterator]


# -- paginate -------------------------------------------------------------------------------

STYLES = [
    pytest.param("page", "/items", id="page"),
    pytest.param("offset", "/items", id="offset"),
    pytest.param(Cursors(), "/items/cursor", id="cursor"),
    pytest.param("link", "/items/cursor", id="link"),
]


@pytest.mark.parametrize(("style", "url"), STYLES)
@pytest.mark.parametrize("page_size", [7, None])
async def test_paginate_yields_every_record_once(
    style: Any, url: str, page_size: int | None
) -> None:
    """Every style walks FakeAPI to the end, with or without a known page size."""
    api = FakeAPI(records=53, page_size=10)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url=BASE) as client:
        records = await collect(paginate(client, url, style=style, page_size=page_size))
    assert records == api.all_records()


async def test_paginate_pages_yields_lists_and_stops_on_a_short_page() -> None:
    """pages=True yields each page's list; a page shorter than page_size is the last one."""
    api = FakeAPI(records=25)
    transport = FlakyTransport(httpx.ASGITransport(app=api))
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        pages = await collect(paginate(client, "/items", page_size=10, pages=True))
    assert [len(page) for page in pages] == [10, 10, 5]
    assert [r.url for r in transport.records] == [
        f"{BASE}/items?page={n}&page_size=10" for n in (1, 2, 3)
    ]


async def test_paginate_sends_params_with_custom_names() -> None:
    """Pagination objects rename the parameters; params= go with every request."""
    seen: list[httpx.URL] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        start = int(request.url.params["from"])
        rows = list(range(start, min(start + 2, 5)))
        return httpx.Response(200, json={"data": rows})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url=BASE) as client:
        records = await collect(
            paginate(
                client,
                "/rows",
                style=Offsets(param="from", size_param="n"),
                params={"q": "x"},
                page_size=2,
                items="data",
            )
        )
    assert records == [0, 1, 2, 3, 4]
    assert [str(url) for url in seen] == [
        f"{BASE}/rows?q=x&from=0&n=2",
        f"{BASE}/rows?q=x&from=2&n=2",
        f"{BASE}/rows?q=x&from=4&n=2",
    ]


async def test_paginate_reads_a_bare_list_and_a_next_url_in_the_body() -> None:
    """items=None takes the body as the list; NextLinks falls back on the body's key."""
    pages = {
        "/a": {"rows": [1, 2], "more": f"{BASE}/b"},
        "/b": {"rows": [3], "more": None},
    }

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=pages[request.url.path])

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url=BASE) as client:
        linked = await collect(
            paginate(client, "/a", style=NextLinks(key="more"), items=lambda body: body["rows"])
        )
    empty = httpx.MockTransport(lambda request: httpx.Response(200, json=[]))
    async with httpx.AsyncClient(transport=empty) as client:
        bare = await collect(paginate(client, "http://x/", items=None))
    assert linked == [1, 2, 3]
    assert bare == []


@pytest.mark.flowgraph_virtual_time
@pytest.mark.parametrize(("style", "url"), STYLES)
async def test_paginate_retries_each_page_through_faults(
    style: Any, url: str, fault_seed: int
) -> None:
    """With retry= and rate=, a crawl through 40% faults yields every record exactly once."""
    api = FakeAPI(records=400, page_size=4)
    transport = flaky(api, fault_seed)
    retry = fg.Retry(attempts=4, on=is_transient)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        records = await collect(
            paginate(client, url, style=style, retry=retry, rate=fg.Rate(5, per=1.0))
        )
    assert records == api.all_records(), transport.describe()
    assert_heavily_faulted(transport)


@pytest.mark.flowgraph_virtual_time
async def test_paginate_rate_limit_holds_for_every_attempt(fault_seed: int) -> None:
    """No one-second window holds more requests than the Rate allows, retries included."""
    api = FakeAPI(records=200, page_size=10)
    transport = flaky(api, fault_seed)
    limiter = fg.RateLimiter(fg.Rate(3, per=1.0))
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        await collect(paginate(client, "/items", retry=fg.Retry(attempts=4), rate=limiter))
    times = [r.time for r in transport.records]
    assert all(
        later - earlier >= 1.0 - 1e-9 for earlier, later in zip(times, times[3:], strict=False)
    )


@pytest.mark.flowgraph_virtual_time
async def test_paginate_honours_retry_after() -> None:
    """A 429 with Retry-After: 7 makes the crawl wait 7 seconds before asking again."""
    api = FakeAPI(records=5)
    plan = FaultPlan(
        schedule=[ScheduledFault("rate_limited", attempts=[1], path="/items")], retry_after=7
    )
    transport = FlakyTransport(httpx.ASGITransport(app=api), plan)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        records = await collect(paginate(client, "/items", page_size=5, retry=fg.Retry()))
    assert records == api.all_records()
    first, second = transport.records[:2]
    assert first.status_code == 429
    assert second.time - first.time == pytest.approx(7)


async def test_paginate_without_retry_raises_the_first_error() -> None:
    """Without retry=, a failed page raises httpx.HTTPStatusError at once."""
    plan = FaultPlan(schedule=[ScheduledFault("server_error", attempts=[1], status=503)])
    transport = FlakyTransport(httpx.ASGITransport(app=FakeAPI()), plan)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        with pytest.raises(httpx.HTTPStatusError, match=r"^Server error '503 Service Unavailable'"):
            await collect(paginate(client, "/items"))


async def test_paginate_rejects_a_body_without_records() -> None:
    """A body with no list where items= points is an error naming the URL."""
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json={"rows": []}))
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        with pytest.raises(
            ValueError,
            match=r"^response of http://api.test/x\?page=1 has no list of records at items='items'$",
        ):
            await collect(paginate(client, "/x"))


async def test_paginate_checks_its_arguments() -> None:
    """An unknown style, a bad page size or a client of the wrong type fail at once."""
    async with httpx.AsyncClient(base_url=BASE) as client:
        with pytest.raises(ValueError, match=r"^style must be 'page', 'offset', 'cursor', 'link'"):
            await collect(paginate(client, "/x", style="pages"))  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"^page_size must be >= 1 or None \(got 0\)$"):
            await collect(paginate(client, "/x", page_size=0))
    with pytest.raises(TypeError, match=r"^expected an HTTPClient or an httpx.AsyncClient"):
        await collect(paginate("http://x", "/x"))  # type: ignore[arg-type]


# -- fetch ------------------------------------------------------------------------------------


def crawl_graph(
    transport: httpx.AsyncBaseTransport, ids: range, **options: Any
) -> tuple[fg.Graph, HTTPClient, list[Any]]:
    graph = fg.Graph("crawl")
    api = HTTPClient(graph, transport=transport, base_url=BASE)
    got: list[Any] = []

    @graph.source
    async def record_ids() -> Any:
        for record_id in ids:
            yield record_id

    item = graph.transform(fetch(api, "/items/{}"), name="item", **options)

    @graph.sink
    async def store(record: Any) -> None:
        got.append(record)

    graph.chain(record_ids, item, store)
    return graph, api, got


@pytest.mark.flowgraph_virtual_time
async def test_fetch_node_gets_every_record_once_through_faults(fault_seed: int) -> None:
    """Through 40% faults, a fetch node with Retry and Rate delivers each record exactly once."""
    api = FakeAPI(records=300)
    transport = flaky(api, fault_seed)
    graph, _, got = crawl_graph(
        transport,
        range(1, 301),
        workers=8,
        retry=fg.Retry(attempts=4, on=is_transient),
        rate=fg.Rate(20, per=1.0),
    )
    result = await graph.run()
    assert sorted(got, key=lambda record: record["id"]) == api.all_records()
    assert_heavily_faulted(transport)
    # Every failed request was retried once, and nothing else was.
    assert result.statistics["item"].retries == failed_requests(transport)
    assert anyio.current_time() >= 300 / 20 - 1


@pytest.mark.flowgraph_virtual_time
async def test_fetch_node_honours_retry_after() -> None:
    """The node's Retry waits what the 429's Retry-After header asks."""
    plan = FaultPlan(
        schedule=[ScheduledFault("rate_limited", attempts=[1], path="/items/2")], retry_after=30
    )
    transport = FlakyTransport(httpx.ASGITransport(app=FakeAPI(records=3)), plan)
    graph, _, got = crawl_graph(transport, range(1, 4), retry=fg.Retry(attempts=2))
    result = await graph.run()
    assert len(got) == 3
    assert result.statistics["item"].retries == 1
    assert anyio.current_time() == pytest.approx(30)


async def test_fetch_raises_for_status_so_the_node_reports_it() -> None:
    """A 404 is not transient: with on=is_transient the node fails at once, naming the item."""
    transport = httpx.ASGITransport(app=FakeAPI(records=2))
    graph, _, _ = crawl_graph(transport, range(1, 4), retry=fg.Retry(on=is_transient))
    with pytest.raises(fg.NodeError, match=r"^node 'item' failed on item 3") as caught:
        await graph.run()
    assert isinstance(caught.value.__cause__, httpx.HTTPStatusError)
    assert caught.value.__cause__.response.status_code == 404


async def test_fetch_builds_requests_from_the_item() -> None:
    """url templates, url functions, params, a JSON body and the three decodings."""
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(200, json={"ok": True})

    item = {"id": 7, "name": "x"}
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url=BASE) as client:
        assert await fetch(client, "/users/{item[id]}")(item) == {"ok": True}
        assert await fetch(client, "/n/{}", decode="text")(5) == '{"ok":true}'
        response = await fetch(
            client,
            lambda it: f"/post/{it['name']}",
            method="POST",
            params=lambda it: {"v": it["id"]},
            body=lambda it: [it["id"]],
            decode="response",
        )(item)
    assert isinstance(response, httpx.Response)
    assert [(r.method, str(r.url)) for r in requests] == [
        ("GET", f"{BASE}/users/7"),
        ("GET", f"{BASE}/n/5"),
        ("POST", f"{BASE}/post/x?v=7"),
    ]
    assert json.loads(requests[2].content) == [7]
    with pytest.raises(ValueError, match=r"^decode must be 'json', 'text' or 'response'"):
        fetch(client, "/x", decode="xml")  # type: ignore[arg-type]


# -- HTTPClient ----------------------------------------------------------------------------


class RecordingTransport(httpx.AsyncBaseTransport):
    """Answers every request; counts how many clients closed it."""

    def __init__(self) -> None:
        self.closed = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=FakeAPI.record(1))

    async def aclose(self) -> None:
        self.closed += 1


async def test_one_client_per_run_closed_when_the_run_ends() -> None:
    """Each run opens its own AsyncClient on first use and closes it at the end."""
    transport = RecordingTransport()
    graph, api, _ = crawl_graph(transport, range(1, 4), workers=3)
    clients: list[httpx.AsyncClient] = []

    @graph.on(fg.NodeFinished)
    def remember(event: fg.NodeFinished) -> None:
        if event.node == "item":
            clients.append(api.client)

    await graph.run()
    await graph.run()
    assert len(clients) == 2
    assert clients[0] is not clients[1]
    assert all(client.is_closed for client in clients)
    assert transport.closed == 2
    with pytest.raises(RuntimeError, match=r"^HTTPClient is not open"):
        api.client  # noqa: B018


async def test_client_is_closed_when_the_run_fails() -> None:
    """A failed run closes its client too."""
    transport = RecordingTransport()
    graph = fg.Graph("broken")
    api = HTTPClient(graph, transport=transport, base_url=BASE)

    @graph.source
    async def ids() -> Any:
        yield 1

    get = graph.transform(fetch(api, "/items/{}"), name="get")

    @graph.sink
    async def explode(record: Any) -> None:
        raise RuntimeError("boom")

    graph.chain(ids, get, explode)
    with pytest.raises(fg.NodeError, match=r"^node 'explode' failed"):
        await graph.run()
    assert transport.closed == 1


def is_closed(client: httpx.AsyncClient) -> bool:
    return client.is_closed


async def test_async_with_opens_the_client_outside_runs() -> None:
    """`async with` opens the client for a block; overlapping users share one client."""
    transport = RecordingTransport()
    graph, api, got = crawl_graph(transport, range(1, 3))
    async with api as client:
        assert client is api.client
        await graph.run()
        assert not is_closed(client)  # the block still holds it
        assert len(got) == 2
        records = await collect(paginate(api, "/items", items=lambda body: [body], page_size=2))
        assert records == [FakeAPI.record(1)]
    assert is_closed(client)
    assert transport.closed == 1
    assert repr(api) == f"HTTPClient(transport={transport!r}, base_url={BASE!r})"


def test_attach_takes_graphs_only() -> None:
    """Attaching to something that is not a Graph is a TypeError."""
    with pytest.raises(TypeError, match=r"^HTTPClient attaches to a flowgraph.Graph \(got 'g'\)$"):
        HTTPClient("g")  # type: ignore[arg-type]


# -- is_transient --------------------------------------------------------------------------


def status_error(status: int) -> httpx.HTTPStatusError:
    request = httpx.Request("GET", BASE)
    response = httpx.Response(status, request=request)
    return httpx.HTTPStatusError("status", request=request, response=response)


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (httpx.ConnectError("refused"), True),
        (httpx.ReadTimeout("slow"), True),
        (httpx.RemoteProtocolError("eof"), True),
        (json.JSONDecodeError("bad", "<html>", 0), True),
        (TimeoutError(), True),
        (status_error(429), True),
        (status_error(503), True),
        (status_error(404), False),
        (status_error(501), False),
        (httpx.UnsupportedProtocol("ftp"), False),
        (KeyError("id"), False),
    ],
    ids=repr,
)
def test_is_transient(error: BaseException, transient: bool) -> None:
    """Timeouts, network errors, 408/425/429/5xx and undecodable bodies are transient."""
    assert is_transient(error) is transient


def test_pagination_objects_have_their_defaults() -> None:
    """The string styles name the default pagination objects."""
    assert PageNumbers() == PageNumbers(param="page", size_param="page_size", start=1)
    assert Offsets().param == "offset"
    assert Cursors().key == "next_cursor"
    assert NextLinks().key == "next"


def test_import_without_httpx_says_how_to_install_it() -> None:
    """Without httpx, importing flowgraph.http names the extra to install."""
    code = "import sys; sys.modules['httpx'] = None; import flowgraph.http"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip().endswith(
        "ImportError: flowgraph.http needs httpx: pip install 'flowgraph[http]'"
    )


def test_fault_kinds_used_here_are_failures() -> None:
    """The plan above only injects faults that make a request fail."""
    assert all(FaultKind(kind).is_failure for kind in FAILURES)
