from __future__ import annotations

import contextlib
import json
import random
import re
import subprocess
import sys

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
