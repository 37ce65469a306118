from __future__ import annotations

import contextlib
import json
import random
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest
import trio.testing

from flowgraph.testing import (
    FakeAPI,
    FaultKind,
    FaultPlan,
    FlakyTransport,
    Latency,
    RequestRecord,
    ScheduledFault,
)

BODY = {"items": list(range(40)), "next": None}


class CountingHandler:
    """A handler that answers BODY and counts the requests that reached it."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        return httpx.Response(200, json=BODY)


def client_for(transport: FlakyTransport) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=transport, base_url="http://api.test")


def always(kind: str, **options: object) -> FaultPlan:
    return FaultPlan(probabilities={kind: 1.0}, **options)  # type: ignore[arg-type]


def virtual_time_on_trio() -> pytest.MarkDecorator:
    """Run on asyncio (real time) and on trio with a virtual clock that jumps ahead."""
    return pytest.mark.parametrize(
        "anyio_backend",
        [
            pytest.param(("asyncio", {}), id="asyncio"),
            pytest.param(
                ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)}),
                id="trio-virtual",
            ),
        ],
    )


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("connect_error", httpx.ConnectError),
        ("connect_timeout", httpx.ConnectTimeout),
        ("read_timeout", httpx.ReadTimeout),
    ],
)
async def test_error_faults_raise_like_a_real_transport_without_calling_it(
    kind: str, error: type[httpx.TransportError]
) -> None:
    """Connection errors and timeouts raise the httpx exception with the request attached."""
    handler = CountingHandler()
    async with client_for(FlakyTransport(handler, always(kind))) as client:
        with pytest.raises(error) as caught:
            await client.get("/items")
    assert caught.value.request.url == "http://api.test/items"
    assert handler.calls == 0


async def test_server_errors_are_5xx_responses_that_skip_the_server() -> None:
    """A server_error answers one of the plan's 5xx statuses and never reaches the handler."""
    handler = CountingHandler()
    transport = FlakyTransport(handler, always("server_error"))
    async with client_for(transport) as client:
        statuses = {(await client.get(f"/items/{n}")).status_code for n in range(40)}
    assert statuses == {500, 502, 503, 504}
    assert handler.calls == 0


async def test_rate_limited_answers_429_with_retry_after() -> None:
    """A rate_limited fault is a 429 whose Retry-After is the plan's, in seconds."""
    async with client_for(
        FlakyTransport(CountingHandler(), always("rate_limited", retry_after=7))
    ) as c:
        response = await c.get("/items")
    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"


async def test_invalid_json_is_a_200_whose_body_does_not_parse() -> None:
    """An invalid_json fault claims JSON, sends HTML, and skips the server."""
    handler = CountingHandler()
    async with client_for(FlakyTransport(handler, always("invalid_json"))) as client:
        response = await client.get("/items")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    with pytest.raises(json.JSONDecodeError):
        response.json()
    assert handler.calls == 0


async def read_until_broken(
    client: httpx.AsyncClient, url: str, error: type[httpx.TransportError]
) -> tuple[httpx.Response, bytes, httpx.TransportError]:
    """Stream *url*, collecting the body until the expected error breaks it."""
    chunks: list[bytes] = []

    async def read(response: httpx.Response) -> None:
        async for chunk in response.aiter_raw():
            chunks.append(chunk)  # noqa: PERF401 - a comprehension would lose them on error

    async with client.stream("GET", url) as response:
        with pytest.raises(error) as caught:
            await read(response)
    return response, b"".join(chunks), caught.value


@pytest.mark.parametrize(
    ("kind", "error", "message"),
    [
        (
            "truncated_body",
            httpx.RemoteProtocolError,
            r"^peer closed connection without sending complete message body: "
            r"received (\d+) bytes, expected (\d+)$",
        ),
        ("connection_reset", httpx.ReadError, r"^\[Errno 104\] Connection reset by peer$"),
    ],
)
async def test_broken_bodies_end_early_with_the_network_error(
    kind: str, error: type[httpx.TransportError], message: str
) -> None:
    """Truncated and reset bodies keep status and Content-Length, send a prefix, then fail."""
    handler = CountingHandler()
    full = httpx.Response(200, json=BODY).content
    async with client_for(FlakyTransport(handler, always(kind))) as client:
        for n in range(20):
            response, received, caught = await read_until_broken(client, f"/items/{n}", error)
            assert response.status_code == 200
            assert response.headers["content-length"] == str(len(full))
            assert len(received) < len(full)
            assert full.startswith(received)
            assert caught.request.url.path == f"/items/{n}"
            found = re.fullmatch(message, str(caught))
            assert found is not None
            if found.groups():
                assert found.groups() == (str(len(received)), str(len(full)))
            with pytest.raises(error):
                await client.get(f"/items/{n}")  # a plain get raises the same error
    assert handler.calls == 40


@virtual_time_on_trio()
async def test_latency_delays_the_real_response(
    anyio_backend: tuple[str, dict[str, object]],
) -> None:
    """A latency fault sleeps (virtual time on trio) and then returns the server's response."""
    delay = 30.0 if anyio_backend[1] else 0.02
    handler = CountingHandler()
    plan = always("latency", latency=Latency.fixed(delay))
    transport = FlakyTransport(handler, plan)
    async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=60) as client:
        start = anyio.current_time()
        response = await client.get("/items")
        elapsed = anyio.current_time() - start
    assert response.json() == BODY
    assert handler.calls == 1
    assert delay <= elapsed < delay + 1


@virtual_time_on_trio()
async def test_slow_stream_delivers_the_body_in_delayed_chunks(
    anyio_backend: tuple[str, dict[str, object]],
) -> None:
    """A slow_stream sends the real body in chunk_size pieces, delay seconds apart."""
    delay = 5.0 if anyio_backend[1] else 0.002
    plan = always("slow_stream", stream_chunk_size=16, stream_delay=delay)
    full = httpx.Response(200, json=BODY).content
    async with client_for(FlakyTransport(CountingHandler(), plan)) as client:
        start = anyio.current_time()
        async with client.stream("GET", "/items") as response:
            chunks = [chunk async for chunk in response.aiter_raw()]
        elapsed = anyio.current_time() - start
    assert b"".join(chunks) == full
    assert [len(c) for c in chunks[:-1]] == [16] * (len(chunks) - 1)
    assert elapsed >= (len(chunks) - 1) * delay


async def test_cancelled_request_is_recorded_without_status() -> None:
    """Cancelling a request during injected latency cancels cleanly and still records it."""
    transport = FlakyTransport(CountingHandler(), always("latency", latency=Latency.fixed(60)))
    async with client_for(transport) as client:
        with anyio.move_on_after(0.01):
            await client.get("/items")
    [record] = transport.records
    assert (record.fault, record.status_code) == (FaultKind.LATENCY, None)


async def test_records_tell_what_each_request_got() -> None:
    """Each request is recorded with its index, attempt, fault, status and arrival time."""
    plan = FaultPlan(seed=11, schedule=[ScheduledFault("read_timeout", attempts=[2])])
    transport = FlakyTransport(CountingHandler(), plan)
    before = anyio.current_time()
    async with client_for(transport) as client:
        await client.get("/a")
        with pytest.raises(httpx.ReadTimeout):
            await client.get("/a")
        await client.post("/a")
    first, second, third = transport.records
    assert first == RequestRecord(0, "GET", "http://api.test/a", 1, None, 200, first.time)
    assert second == RequestRecord(
        1, "GET", "http://api.test/a", 2, FaultKind.READ_TIMEOUT, None, second.time
    )
    assert third == RequestRecord(2, "POST", "http://api.test/a", 1, None, 200, third.time)
    assert before <= first.time <= second.time <= third.time <= anyio.current_time()
    assert transport.faults_injected == (second,)
    assert transport.fault_counts == {FaultKind.READ_TIMEOUT: 1}
    assert transport.describe() == (
        "3 requests, 1 fault injected (read_timeout=1) by FaultPlan(seed=11, "
        "schedule=[ScheduledFault('read_timeout', attempts=(2,))])"
    )


async def test_max_consecutive_lets_a_request_through_after_k_failures() -> None:
    """With max_consecutive=2 an always-failing plan fails twice, passes once, and so on."""
    transport = FlakyTransport(CountingHandler(), always("server_error", max_consecutive=2))
    async with client_for(transport) as client:
        statuses = [(await client.get("/items")).status_code for _ in range(7)]
    assert [s == 200 for s in statuses] == [False, False, True, False, False, True, False]


async def test_schedule_fails_exactly_the_scheduled_requests_end_to_end() -> None:
    """Requests 3 to 5 to /items get 503; every other request reaches the API."""
    plan = FaultPlan(
        schedule=[ScheduledFault("server_error", attempts=range(3, 6), path="/items", status=503)]
    )
    handler = CountingHandler()
    async with client_for(FlakyTransport(handler, plan)) as client:
        statuses = [(await client.get("/items")).status_code for _ in range(7)]
        other = (await client.get("/other")).status_code
    assert statuses == [200, 200, 503, 503, 503, 200, 200]
    assert other == 200
    assert handler.calls == 5


async def test_wraps_async_handlers_and_asgi_apps() -> None:
    """An async handler and httpx.ASGITransport work as the wrapped transport."""

    async def handler(request: httpx.Request) -> httpx.Response:
        await anyio.lowlevel.checkpoint()
        return httpx.Response(200, text=request.url.path)

    async with client_for(FlakyTransport(handler)) as client:
        assert (await client.get("/hello")).text == "/hello"
    asgi = FlakyTransport(httpx.ASGITransport(app=FakeAPI(records=3)))
    async with client_for(asgi) as client:
        assert (await client.get("/items/2")).json() == FakeAPI.record(2)


async def test_closing_the_transport_closes_the_wrapped_one() -> None:
    """aclose() reaches the inner transport."""
    closed: list[bool] = []

    class Inner(httpx.AsyncBaseTransport):
        async def aclose(self) -> None:
            closed.append(True)

    async with FlakyTransport(Inner()):
        pass
    assert closed == [True]


PLAN = FaultPlan(
    seed=2024,
    probabilities={"server_error": 0.2, "read_timeout": 0.1, "latency": 0.2, "truncated_body": 0.1},
    latency=Latency.uniform(0, 0.002),
    max_consecutive=3,
)


async def crawl_concurrently(shuffle_seed: int) -> set[tuple[str, str, int, FaultKind | None]]:
    """Request 8 URLs 4 times each from 32 tasks, with the handler finishing in a shuffled order."""
    jitter = random.Random(shuffle_seed)

    async def handler(request: httpx.Request) -> httpx.Response:
        await anyio.sleep(jitter.random() / 1000)
        return httpx.Response(200, json=BODY)

    transport = FlakyTransport(handler, PLAN)

    async def fetch(path: str) -> None:
        await anyio.sleep(jitter.random() / 1000)
        with contextlib.suppress(httpx.TransportError):
            await client.get(path)

    async with client_for(transport) as client, anyio.create_task_group() as tasks:
        for n in jitter.sample(range(32), 32):
            tasks.start_soon(fetch, f"/items?page={n % 8}")
    return {(r.method, r.url, r.attempt, r.fault) for r in transport.records}


async def test_same_seed_gives_same_faults_however_requests_interleave() -> None:
    """Concurrent runs in different arrival orders inject the same fault on each URL attempt."""
    first = await crawl_concurrently(shuffle_seed=1)
    assert first == await crawl_concurrently(shuffle_seed=2)
    assert len(first) == 32
    assert {fault for *_, fault in first} > {None}


def test_same_seed_gives_same_faults_on_asyncio_and_trio() -> None:
    """The recorded fault sequence is identical on both backends."""
    runs = [
        anyio.run(crawl_concurrently, 3, backend="asyncio"),
        anyio.run(crawl_concurrently, 4, backend="trio"),
    ]
    assert runs[0] == runs[1]


def test_importing_without_httpx_says_how_to_install_it() -> None:
    """flowgraph.testing names the extra to install when httpx is missing."""
    code = "import sys; sys.modules['httpx'] = None; from flowgraph.testing import FlakyTransport"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert (
        "ImportError: flowgraph.testing needs httpx: pip install 'flowgraph[testing]'"
        in result.stderr
    )


def test_importing_the_harness_does_not_import_hypothesis_or_hypercorn() -> None:
    """Hypothesis and hypercorn load only when strategies or a served API are used."""
    code = (
        "import sys, flowgraph.testing; "
        "print(sorted({'hypothesis', 'hypercorn'} & {m.split('.')[0] for m in sys.modules}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


virtual_time = pytest.mark.flowgraph_virtual_time


@virtual_time
async def test_latency_past_the_read_timeout_raises_read_timeout_after_it() -> None:
    """A slow server makes the client time out at its own read timeout, having done the work."""
    handler = CountingHandler()
    plan = always("latency", latency=Latency.fixed(30))
    transport = FlakyTransport(handler, plan)
    async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=2.5) as client:
        start = anyio.current_time()
        with pytest.raises(
            httpx.ReadTimeout,
            match=r"^timed out after 2.5s waiting for the response: injected latency of 30s "
            r"exceeds the read timeout \(injected fault\)$",
        ) as caught:
            await client.get("/slow")
        elapsed = anyio.current_time() - start
        quick = await client.get("/fast", timeout=None)
    assert elapsed == pytest.approx(2.5)
    assert caught.value.request.url.path == "/slow"
    assert handler.calls == 2  # the server saw both requests
    assert quick.json() == BODY
    assert [(r.fault, r.status_code) for r in transport.records] == [
        (FaultKind.LATENCY, None),
        (FaultKind.LATENCY, 200),
    ]


@virtual_time
async def test_a_pause_in_a_slow_body_past_the_read_timeout_raises_mid_body() -> None:
    """A slow stream whose pause exceeds the read timeout breaks after the first chunk."""
    plan = always("slow_stream", stream_chunk_size=10, stream_delay=9)
    transport = FlakyTransport(CountingHandler(), plan)
    async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=4) as client:
        start = anyio.current_time()
        response, received, caught = await read_until_broken(client, "/items", httpx.ReadTimeout)
        elapsed = anyio.current_time() - start
    assert response.status_code == 200
    assert received == httpx.Response(200, json=BODY).content[:10]
    assert elapsed == pytest.approx(4)
    assert str(caught).startswith(
        "timed out after 4s waiting for the response: a pause in the body"
    )


@pytest.mark.parametrize(
    ("retry_after", "header"),
    [(30, "30"), (0.25, "0.25"), (timedelta(milliseconds=1500), "1.5"), (0, "0")],
)
async def test_retry_after_in_seconds_keeps_fractions(retry_after: Any, header: str) -> None:
    """Retry-After is the plan's delay in seconds, fractions included, without trailing zeros."""
    plan = always("rate_limited", retry_after=retry_after)
    async with client_for(FlakyTransport(CountingHandler(), plan)) as client:
        response = await client.get("/items")
    assert (response.status_code, response.headers["retry-after"]) == (429, header)


async def test_retry_after_as_an_http_date_is_that_far_ahead() -> None:
    """retry_after_format="date" sends an HTTP date at least retry_after seconds ahead."""
    plan = always("rate_limited", retry_after=90, retry_after_format="date")
    async with client_for(FlakyTransport(CountingHandler(), plan)) as client:
        before = datetime.now(UTC)
        response = await client.get("/items")
        after = datetime.now(UTC)
    header = response.headers["retry-after"]
    assert re.fullmatch(r"\w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} GMT", header)
    when = parsedate_to_datetime(header)
    assert before + timedelta(seconds=90) <= when <= after + timedelta(seconds=91)


@virtual_time
@pytest.mark.parametrize("form", ["seconds", "date"])
async def test_flowgraph_retry_waits_what_either_form_asks(form: str) -> None:
    """fg.Retry honours a fractional Retry-After and an HTTP date from the transport."""
    import flowgraph as fg

    plan = FaultPlan(
        schedule=[ScheduledFault("rate_limited", attempts=[1])],
        retry_after=2.5 if form == "seconds" else 20,
        retry_after_format=form,  # type: ignore[arg-type]
    )
    transport = FlakyTransport(CountingHandler(), plan)
    async with client_for(transport) as client:

        async def get() -> Any:
            return (await client.get("/items")).raise_for_status().json()

        assert await fg.Retry(attempts=2, initial=0.01).call(get) == BODY
    first, second = transport.records
    waited = second.time - first.time
    if form == "seconds":
        assert waited == pytest.approx(2.5)
    else:
        assert 19 <= waited <= 21  # an HTTP date has whole seconds, read on the wall clock


async def test_schedule_wins_over_max_consecutive() -> None:
    """Regression test for #14.8: a 49-attempt schedule fails 49 times despite max_consecutive=3."""
    plan = FaultPlan(
        probabilities={"server_error": 1.0},
        max_consecutive=3,
        schedule=[ScheduledFault("server_error", attempts=range(1, 50), path="/items/7")],
    )
    async with client_for(FlakyTransport(CountingHandler(), plan)) as client:
        dead = [(await client.get("/items/7")).status_code for _ in range(50)]
        drawn = [(await client.get("/items/8")).status_code for _ in range(8)]
    assert [s >= 500 for s in dead] == [True] * 49 + [False]
    assert [s >= 500 for s in drawn] == [True, True, True, False] * 2


async def test_scheduled_faults_match_on_query_headers_and_body() -> None:
    """A schedule can pick one order, one header or one page out of the traffic."""
    plan = FaultPlan(
        schedule=[
            ScheduledFault("connect_error", attempts=[1], method="POST", json={"sku": "a"}),
            ScheduledFault("read_timeout", attempts=[1, 2], headers={"x-tenant": "acme"}),
            ScheduledFault("server_error", attempts=[1], path="/items", query={"page": "3"}),
        ]
    )
    async with client_for(FlakyTransport(CountingHandler(), plan)) as client:
        with pytest.raises(httpx.ConnectError):
            await client.post("/orders", json={"sku": "a"})
        assert (await client.post("/orders", json={"sku": "b"})).status_code == 200
        for _ in range(2):
            with pytest.raises(httpx.ReadTimeout):
                await client.get("/me", headers={"X-Tenant": "acme"})
        assert (await client.get("/me", headers={"X-Tenant": "acme"})).status_code == 200
        assert (await client.get("/me", headers={"X-Tenant": "other"})).status_code == 200
        pages = [(await client.get("/items", params={"page": n})).status_code for n in (1, 3)]
    assert pages[0] == 200
    assert pages[1] >= 500


def test_a_sync_client_gets_the_same_faults() -> None:
    """httpx.Client through FlakyTransport(FakeAPI) sees every kind of fault, network-like."""
    api = FakeAPI(records=30)
    plan = FaultPlan(
        schedule=[
            ScheduledFault("connect_error", attempts=[1], path="/items/1"),
            ScheduledFault("server_error", attempts=[1], path="/items/2", status=503),
            ScheduledFault("truncated_body", attempts=[1], path="/items/3"),
            ScheduledFault("connection_reset", attempts=[1], path="/items/4"),
            ScheduledFault("latency", attempts=[1], path="/items/5"),
            ScheduledFault("slow_stream", attempts=[1], path="/items/6"),
        ],
        latency=Latency.fixed(0.5),
        stream_chunk_size=8,
        stream_delay=0.001,
    )
    transport = FlakyTransport(api, plan)
    with httpx.Client(transport=transport, base_url="http://api.test", timeout=0.05) as client:
        with pytest.raises(httpx.ConnectError):
            client.get("/items/1")
        assert client.get("/items/2").status_code == 503
        with pytest.raises(httpx.RemoteProtocolError, match=r"^peer closed connection"):
            client.get("/items/3")
        with pytest.raises(httpx.ReadError, match=r"Connection reset by peer"):
            client.get("/items/4")
        with pytest.raises(httpx.ReadTimeout, match=r"^timed out after 0.05s"):
            client.get("/items/5")
        assert client.get("/items/6").json() == FakeAPI.record(6)
        assert [client.get(f"/items/{n}").json()["id"] for n in range(1, 6)] == [1, 2, 3, 4, 5]
    faults = [r.fault.value if r.fault else None for r in transport.records]
    assert faults == [
        "connect_error", "server_error", "truncated_body", "connection_reset", "latency",
        "slow_stream", None, None, None, None, None,
    ]  # fmt: skip
    assert [r.path for r in api.requests] == [f"/items/{n}" for n in (3, 4, 5, 6, 1, 2, 3, 4, 5)]


async def test_transports_refuse_the_wrong_kind_of_client() -> None:
    """A sync-only inner transport needs httpx.Client; an async-only one httpx.AsyncClient."""
    sync_only = FlakyTransport(httpx.HTTPTransport())
    async with client_for(sync_only) as client:
        with pytest.raises(
            TypeError, match=r"^FlakyTransport wraps .*, which is sync only: use httpx.Client$"
        ):
            await client.get("/")

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200)  # pragma: no cover - never awaited by a sync client

    for async_only in (FlakyTransport(handler), FlakyTransport(httpx.ASGITransport(app=FakeAPI()))):
        with (
            httpx.Client(transport=async_only, base_url="http://t") as sync_client,
            pytest.raises(TypeError, match=r"which is async only: use httpx.AsyncClient"),
        ):
            sync_client.get("/")  # noqa: ASYNC212 - refused before any I/O
