"""FakeAPI routes: your API's handlers and answer sequences, matched and recorded."""

from __future__ import annotations

import re
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest

from flowgraph.testing import FakeAPI, FakeAPIStatistics, Route, open_server


@pytest.fixture(params=["transport", "asgi"])
def serve(request: pytest.FixtureRequest) -> Any:
    """How the test's client reaches the API: directly as its transport, or through ASGI."""

    def client(api: FakeAPI) -> httpx.AsyncClient:
        if request.param == "transport":
            return httpx.AsyncClient(transport=api, base_url="http://api.test")
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://api.test")

    return client


async def test_handlers_get_the_request_and_converted_path_parameters(serve: Any) -> None:
    """Sync and async handlers receive the request and {name:int}-converted parameters."""
    api = FakeAPI()

    @api.route("GET", "/users/{user_id:int}")
    def user(request: httpx.Request, user_id: int) -> dict[str, Any]:
        return {"id": user_id, "type": type(user_id).__name__, "q": request.url.params["q"]}

    @api.route("POST", "/users/{user_id}/notes")
    async def note(request: httpx.Request, user_id: str) -> httpx.Response:
        await anyio.lowlevel.checkpoint()
        return httpx.Response(201, json={"user": user_id, "note": request.read().decode()})

    async with serve(api) as client:
        assert (await client.get("/users/42", params={"q": "x"})).json() == {
            "id": 42,
            "type": "int",
            "q": "x",
        }
        created = await client.post("/users/ab/notes", content=b"hello")
    assert (created.status_code, created.json()) == (201, {"user": "ab", "note": "hello"})
    assert isinstance(user, Route)
    assert [r.status_code for r in user.requests] == [200]
    assert note.requests.last.request is not None
    assert note.requests.last.request.content == b"hello"


async def test_answers_are_served_in_turn_and_the_last_one_repeats(serve: Any) -> None:
    """Fail twice, then succeed for good; respond() again starts a new sequence."""
    api = FakeAPI()
    route = api.route("PUT", "/jobs/1").respond(
        httpx.Response(503), httpx.Response(503, headers={"retry-after": "2"}), {"state": "done"}
    )
    async with serve(api) as client:
        answers = [await client.put("/jobs/1") for _ in range(4)]
        assert [a.status_code for a in answers] == [503, 503, 200, 200]
        assert answers[1].headers["retry-after"] == "2"
        assert answers[3].json() == {"state": "done"}
        route.respond(httpx.Response(410))
        assert (await client.put("/jobs/1")).status_code == 410
    assert [r.status_code for r in route.requests] == [503, 503, 200, 200, 410]
    assert [r.attempt for r in route.requests] == [1, 2, 3, 4, 5]


async def test_routes_match_on_query_headers_and_body(serve: Any) -> None:
    """Routes on one path are told apart by query, headers and JSON body; the first match wins."""
    api = FakeAPI()
    api.route("POST", "/orders", json={"sku": "a"}).respond({"order": "a"})
    api.route("POST", "/orders", headers={"Idempotency-Key": "k1"}).respond({"order": "replayed"})
    api.route("GET", "/orders", query={"status": "open"}).respond(["open"])
    api.route("GET", "/orders", query={"status": None}).respond(["all"])
    async with serve(api) as client:
        assert (await client.post("/orders", json={"sku": "a"})).json() == {"order": "a"}
        keyed = await client.post("/orders", json={"sku": "b"}, headers={"idempotency-key": "k1"})
        assert keyed.json() == {"order": "replayed"}
        assert (await client.get("/orders", params={"status": "open"})).json() == ["open"]
        assert (await client.get("/orders")).json() == ["all"]
        missed = await client.post("/orders", json={"sku": "b"})
        closed = await client.get("/orders", params={"status": "closed"})
    assert (missed.status_code, missed.json()) == (404, {"error": "no route matches POST /orders"})
    assert closed.status_code == 404


async def test_other_methods_get_405_naming_the_allowed_ones(serve: Any) -> None:
    """A path declared for some methods answers others 405 with an Allow header."""
    api = FakeAPI()
    api.route("GET", "/things/{id}").respond({})
    api.route("PUT", "/things/{id}").respond({})
    async with serve(api) as client:
        refused = await client.delete("/things/3")
        builtin = await client.post("/items")
    assert (refused.status_code, refused.headers["allow"]) == (405, "GET, PUT")
    assert refused.json() == {"error": "method DELETE not allowed"}
    assert (builtin.status_code, builtin.headers["allow"]) == (405, "GET")


async def test_your_routes_come_before_the_generated_items(serve: Any) -> None:
    """A route on /items replaces the generated one; the others stay."""
    api = FakeAPI(records=3)
    api.route("GET", "/items").respond({"mine": True})
    async with serve(api) as client:
        assert (await client.get("/items")).json() == {"mine": True}
        assert (await client.get("/items/2")).json() == FakeAPI.record(2)


async def test_every_request_is_recorded_for_assertions(serve: Any) -> None:
    """api.requests holds every request, with its body, status and attempt, in order."""
    api = FakeAPI(records=5)
    api.route("POST", "/orders").respond(httpx.Response(201, json={"id": 1}))
    async with serve(api) as client:
        await client.post("/orders", json={"sku": "a", "n": 2})
        await client.get("/items/1")
        await client.get("/items/1")
        await client.get("/nowhere")
    log = api.requests
    assert [(r.index, r.method, r.path, r.status_code) for r in log] == [
        (0, "POST", "/orders", 201),
        (1, "GET", "/items/1", 200),
        (2, "GET", "/items/1", 200),
        (3, "GET", "/nowhere", 404),
    ]
    assert log.last.path == "/nowhere"
    assert log.filter("GET", "/items/{id:int}").last.attempt == 2
    log.assert_called("POST", "/orders", json={"sku": "a", "n": 2}, times=1)
    assert log.assert_called("GET", "/items/*")[0].json is not None
    assert log[0].json() == {"sku": "a", "n": 2}
    log.assert_not_called("DELETE")


def test_a_sync_client_uses_the_api_as_its_transport() -> None:
    """httpx.Client(transport=api) reaches sync routes; an async handler is refused clearly."""
    api = FakeAPI(records=2)
    api.route("GET", "/hello/{name}").respond(lambda request, name: {"hello": name})

    @api.route("GET", "/async")
    async def slow(request: httpx.Request) -> dict[str, Any]:
        return {}  # pragma: no cover - a sync client cannot call it

    with httpx.Client(transport=api, base_url="http://api.test") as client:
        assert client.get("/hello/ann").json() == {"hello": "ann"}
        assert client.get("/items", params={"page_size": 1}).json()["next_page"] == 2
        with pytest.raises(
            TypeError,
            match=r"^Route\('GET', '/async'\) has an async handler, which httpx.Client cannot "
            r"await: use httpx.AsyncClient, or a sync handler$",
        ):
            client.get("/async")
    assert [r.status_code for r in api.requests] == [200, 200, None]


async def test_handler_mistakes_raise_naming_the_route(serve: Any) -> None:
    """A handler returning None or non-JSON, or a route with no answer, raises at the client."""
    api = FakeAPI()
    api.route("GET", "/none").respond(lambda request: None)
    api.route("GET", "/set").respond(lambda request: {1, 2})
    api.route("GET", "/empty")
    async with serve(api) as client:
        with pytest.raises(
            TypeError,
            match=r"^the handler of Route\('GET', '/none'\) returned None; return an "
            r"httpx.Response or a JSON value$",
        ):
            await client.get("/none")
        with pytest.raises(TypeError, match=r"^the handler of Route\('GET', '/set'\) returned"):
            await client.get("/set")
        with pytest.raises(
            RuntimeError,
            match=r"^Route\('GET', '/empty'\) has no answer: call .respond\(...\) or decorate a "
            r"handler with it$",
        ):
            await client.get("/empty")


@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        (lambda r: r.respond(), ValueError, "respond() needs at least one answer"),
        (
            lambda r: r.respond(None),
            TypeError,
            "an answer cannot be None; use httpx.Response(204) for no content",
        ),
        (
            lambda r: r.respond({1: {2}}),
            TypeError,
            "an answer must be an httpx.Response, a handler or a JSON value (got {1: {2}})",
        ),
        (lambda r: r(42), TypeError, "a route handler must be callable (got 42)"),
    ],
    ids=["nothing", "none", "not-json", "decorate"],
)
def test_invalid_answers_are_refused_when_declared(
    build: Any, error: type[Exception], message: str
) -> None:
    """respond() and the decorator check their answers at once."""
    route = FakeAPI().route("GET", "/x")
    with pytest.raises(error, match=rf"^{re.escape(message)}$"):
        build(route)


async def test_rate_limit_and_statistics_cover_your_routes(serve: Any) -> None:
    """The server-side rate limit counts every route; 2xx answers count as served."""
    api = FakeAPI(rate_limit=(2, 60.0))
    api.route("POST", "/a").respond(httpx.Response(201))
    async with serve(api) as client:
        statuses = [(await client.post("/a")).status_code for _ in range(3)]
    assert statuses == [201, 201, 429]
    assert api.statistics() == FakeAPIStatistics(received=3, served=2, rate_limited=1)


async def test_handler_errors_reach_the_client_unchanged(serve: Any) -> None:
    """An exception in a handler propagates to the code under test, and is recorded."""
    api = FakeAPI()

    @api.route("GET", "/boom")
    def boom(request: httpx.Request) -> Any:
        raise LookupError("no such thing")

    async with serve(api) as client:
        with pytest.raises(LookupError, match=r"^no such thing$"):
            await client.get("/boom")
    assert [r.status_code for r in boom.requests] == [None]


async def test_routes_are_served_over_a_real_socket() -> None:
    """open_server serves declared routes, bodies and headers to a real client."""
    api = FakeAPI()
    api.route("POST", "/echo/{word}").respond(
        lambda request, word: httpx.Response(
            202, headers={"x-word": word}, json={"got": request.read().decode(), "word": word}
        )
    )
    async with open_server(api) as base_url, httpx.AsyncClient(base_url=base_url) as client:
        response = await client.post("/echo/hi%20there", content=b"body")
    assert (response.status_code, response.headers["x-word"]) == (202, "hi there")
    assert response.json() == {"got": "body", "word": "hi there"}
    assert api.requests.last.url.startswith(f"{base_url}/echo/hi%20there")
