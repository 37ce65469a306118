"""FakeAPI: your API's routes and records, or a ready-made paginated one, to test clients against.

One object serves three ways: as an ASGI 3 app (``httpx.ASGITransport(app=api)``,
or a real loopback port with :func:`open_server`), and directly as an httpx
transport, async and sync (``httpx.AsyncClient(transport=api)``,
``httpx.Client(transport=api)``). Wrap it in a
:class:`~flowgraph.testing.FlakyTransport` to add faults.
"""

from __future__ import annotations

import inspect
import math
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, final

import anyio
import httpx

from ._match import ANY, Match, PathPattern
from ._records import Recorder, RequestLog, RequestRecord
from ._routes import (
    Answer,
    Collection,
    Route,
    raw_body,
    raw_body_sync,
    to_response,
    validated_records,
)
from ._server import Receive, Scope, Send, lifespan, read_request
from ._tables import Generated, Pages, Pagination, items_cursor, items_one, items_page

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

Record = dict[str, Any]


@final
@dataclass(frozen=True, slots=True)
class FakeAPIStatistics:
    """Counts of the HTTP requests a :class:`FakeAPI` has seen."""

    received: int  # every HTTP request
    served: int  # answered with a 2xx status
    rate_limited: int  # answered 429 by the server-side rate limit


@dataclass(slots=True)
class _Call:
    """One request on its way through the API."""

    request: httpx.Request
    index: int
    attempt: int
    time: float
    route: Route | None  # None when the API itself answered (429, 404, 405)
    answer: Answer
    params: dict[str, Any]

    def result(self) -> Any:
        if callable(self.answer) and not isinstance(self.answer, httpx.Response):
            return self.answer(self.request, **self.params)
        return self.answer


@final
class FakeAPI(httpx.AsyncBaseTransport, httpx.BaseTransport):
    """A JSON API to test against: your routes and records, and a ready-made paginated one.

    Declare what your API does with :meth:`route` (a handler, or answers served in
    turn: fail twice, then succeed) and :meth:`collection` (a table of records,
    served by pages, offsets or cursors, and one by one). Every request is
    recorded in :attr:`requests` for assertions. Routes are tried in the order
    they were declared; a request no route takes gets a 405 (with ``Allow``) if
    its path exists for other methods, else a 404.

    Without any declaration it serves *records* generated records, record *i*
    (``1 <= i <= records``) always :meth:`record` ``(i)``, so a test can check
    that every record arrived exactly once:

    - ``GET /items?page=N&page_size=M``: page numbers from 1; the body has ``items``,
      ``page``, ``page_size``, ``total``, ``total_pages`` and ``next_page``.
    - ``GET /items?offset=N&limit=M``: offsets; ``items``, ``offset``, ``limit``,
      ``total`` and ``next_offset``.
    - ``GET /items/cursor?cursor=C&limit=M``: cursors; ``items``, ``next_cursor``
      and ``next`` (an absolute URL, also sent as ``Link: <...>; rel="next"``
      when *link_header* is true).
    - ``GET /items/{id}``: one record, or 404.

    Bad parameters get a 400 with ``{"error": ...}``. With *rate_limit* ``(n, per)``,
    a request arriving when ``n`` requests were already accepted in the last *per*
    seconds gets a 429 with a ``Retry-After`` header (whole seconds until a slot
    frees, at least 1). Time is ``anyio.current_time()`` (``time.monotonic()`` for
    a sync client), so a virtual clock applies in-process.

    Args:
        records: how many generated records exist.
        page_size: their default page size and limit.
        rate_limit: ``(requests, per_seconds)`` over every route, or ``None``.
        link_header: whether generated cursor pages carry a ``Link`` header.

    Raises:
        ValueError: if *records* < 0, *page_size* < 1, or *rate_limit* is not a
            positive count over a positive window.
    """

    def __init__(
        self,
        *,
        records: int = 1000,
        page_size: int = 50,
        rate_limit: tuple[int, float] | None = None,
        link_header: bool = True,
    ) -> None:
        if records < 0:
            raise ValueError(f"records must be >= 0 (got {records})")
        if page_size < 1:
            raise ValueError(f"page_size must be >= 1 (got {page_size})")
        if rate_limit is not None:
            limit, per = rate_limit
            if limit < 1 or not 0 < per < math.inf:
                raise ValueError(
                    "rate_limit must be (requests >= 1, per > 0 seconds) "
                    f"(got {tuple(rate_limit)!r})"
                )
        self.records = records
        self.page_size = page_size
        self.rate_limit = rate_limit
        self.link_header = link_header
        self._recorder = Recorder()
        self._lock = self._recorder.lock
        self._routes: list[Route] = []
        self._builtin = [
            Route(Match("GET", "/items"), self._lock).respond(
                lambda request: items_page(request, self._generated(), self.page_size)
            ),
            Route(Match("GET", "/items/cursor"), self._lock).respond(
                lambda request: items_cursor(
                    request, self._generated(), self.page_size, self.link_header
                )
            ),
            Route(Match("GET", "/items/{id}"), self._lock).respond(
                lambda request, id: items_one(self._generated(), id)
            ),
        ]
        self._accepted: deque[float] = deque()
        self._received = self._served = self._rate_limited = 0

    def __repr__(self) -> str:
        options = f"records={self.records}, page_size={self.page_size}"
        if self.rate_limit is not None:
            options += f", rate_limit={self.rate_limit!r}"
        if not self.link_header:
            options += ", link_header=False"
        return f"FakeAPI({options})"

    # -- declaring ------------------------------------------------------------------------

    def route(
        self,
        method: str,
        path: PathPattern,
        *,
        query: Mapping[str, object] | None = None,
        headers: Mapping[str, object] | None = None,
        json: Any = ANY,
        content: bytes | str | None = None,
    ) -> Route:
        """Declare a route for the requests that meet every condition given.

        *path* is a pattern such as ``"/users/{user_id:int}"``; its parameters go
        to the handler as keyword arguments. Give the route its answers with
        :meth:`Route.respond`, or use it as a decorator::

            @api.route("GET", "/users/{user_id:int}")
            def user(request: httpx.Request, user_id: int) -> dict:
                return {"id": user_id}

        Args:
            method: the HTTP method, e.g. ``"POST"``.
            path: the path pattern (see :data:`~flowgraph.testing.PathPattern`).
            query: query parameters the URL must carry (``None`` as a value: absent).
            headers: headers the request must carry (``None`` as a value: absent).
            json: the body, parsed as JSON, must equal this value.
            content: the body must be exactly these bytes.

        Raises:
            ValueError, TypeError: on an invalid method, pattern or condition.
        """
        match = Match(method, path, query=query, headers=headers, json=json, content=content)
        route = Route(match, self._lock)
        self._routes.append(route)
        return route

    def collection(
        self,
        path: str,
        records: Iterable[Any],
        *,
        pagination: Pagination = "page",
        page_size: int = 50,
        params: Mapping[str, str] | None = None,
        items: str | None = "items",
        key: str | None = "id",
        link_header: bool = True,
    ) -> Collection:
        """Serve *records* at *path*, page by page, and one by one at ``path/{key}``.

        Pages: ``"page"`` (``?page=N&page_size=M``, from 1), ``"offset"``
        (``?offset=N&limit=M``, from 0) or ``"cursor"`` (``?cursor=C&limit=M``, the
        first page without a cursor). Every record is served exactly once over the
        pages, in order, whatever the size asked for. The body is ``{items: [...],
        ...}`` with the same fields as the generated ``/items``, or the bare list
        when *items* is ``None``.

        Args:
            path: where the list is served, e.g. ``"/breweries"``.
            records: the JSON records, in the order they are served.
            pagination: ``"page"``, ``"offset"`` or ``"cursor"``.
            page_size: the size of a page when the request names none.
            params: your API's names for the style's parameters, e.g.
                ``{"page_size": "per_page"}``.
            items: the key of the records in the body, or ``None`` for a bare list.
            key: the field that identifies a record at ``path/{key}``, or ``None``.
            link_header: whether a page with a next one carries ``Link: <url>; rel="next"``.

        Returns:
            The :class:`Collection`; its ``records`` list may be changed between requests.

        Raises:
            ValueError, TypeError: on an unknown style, a bad size or rename, a
                record that is not JSON, or records missing or repeating *key*.
        """
        pages = Pages.build(
            pagination, page_size=page_size, params=params, items=items, link_header=link_header
        )
        table = Collection(path, validated_records(records, key), pages, key, self._lock)
        self._routes += table.routes
        return table

    # -- reading --------------------------------------------------------------------------

    @staticmethod
    def record(record_id: int) -> Record:
        """The generated record *record_id*, the same on every call and in every FakeAPI."""
        return {"id": record_id, "name": f"item-{record_id:05d}", "value": record_id * 7919 % 10007}

    def all_records(self) -> list[Record]:
        """Every generated record, in id order: what a complete crawl of ``/items`` must yield."""
        return [self.record(i) for i in range(1, self.records + 1)]

    @property
    def requests(self) -> RequestLog:
        """Every request the API has answered (or failed on), in arrival order."""
        return self._recorder.log()

    def statistics(self) -> FakeAPIStatistics:
        """A snapshot of the request counters."""
        with self._lock:
            return FakeAPIStatistics(self._received, self._served, self._rate_limited)

    # -- serving ----------------------------------------------------------------------------

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Answer *request* in-process, as an async httpx transport."""
        status, headers, content = await self._answer(request)
        return httpx.Response(status, headers=headers, content=content)

    async def _answer(self, request: httpx.Request) -> tuple[int, httpx.Headers, bytes]:
        await request.aread()
        call = self._begin(request, anyio.current_time())
        status: int | None = None
        try:
            result = call.result()
            if inspect.isawaitable(result):
                result = await result
            response = to_response(result, call.route) if call.route else result
            content = await raw_body(response)
            status = response.status_code
            return status, response.headers, content
        finally:
            self._finish(call, status)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Answer *request* in-process, as a sync httpx transport.

        Raises:
            TypeError: if the route's handler is async, which a sync client cannot await.
        """
        request.read()
        call = self._begin(request, time.monotonic())
        status: int | None = None
        try:
            result = call.result()
            if inspect.isawaitable(result):
                getattr(result, "close", lambda: None)()
                raise TypeError(
                    f"{call.route!r} has an async handler, which httpx.Client cannot await: "
                    "use httpx.AsyncClient, or a sync handler"
                )
            response = to_response(result, call.route) if call.route else result
            content = raw_body_sync(response)
            status = response.status_code
            return httpx.Response(status, headers=response.headers, content=content)
        finally:
            self._finish(call, status)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection scope (``http`` or ``lifespan``).

        Raises:
            ValueError: for a scope type other than ``http`` or ``lifespan``.
        """
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["type"] != "http":
            raise ValueError(
                f"FakeAPI serves only http and lifespan scopes (got {scope['type']!r})"
            )
        request = await read_request(scope, receive)
        if request is None:
            return  # the client went away before sending the whole request
        status, headers, content = await self._answer(request)
        await send({"type": "http.response.start", "status": status, "headers": headers.raw})
        await send({"type": "http.response.body", "body": content})

    def _begin(self, request: httpx.Request, now: float) -> _Call:
        with self._lock:
            index, attempt = self._recorder.arrive(request)
            self._received += 1
            wait = self._admit(now)
        if wait is not None:
            with self._lock:
                self._rate_limited += 1
            retry_after = str(max(1, math.ceil(wait)))
            limited = httpx.Response(
                429, headers={"retry-after": retry_after}, json={"error": "rate limit exceeded"}
            )
            return _Call(request, index, attempt, now, None, limited, {})
        route, params, refusal = self._resolve(request)
        answer: Answer = refusal if route is None else route.next_answer()
        return _Call(request, index, attempt, now, route, answer, params)

    def _resolve(
        self, request: httpx.Request
    ) -> tuple[Route | None, dict[str, Any], httpx.Response]:
        routes = [*self._routes, *self._builtin]
        for route in routes:
            params = route.match.params(request)
            if params is not None:
                return route, params, httpx.Response(200)
        method, path = request.method, request.url.path
        there = [r.match.method for r in routes if r.match.path_params(path) is not None]
        if there and method not in there and None not in there:
            allow = ", ".join(sorted({m for m in there if m is not None}))
            error = {"error": f"method {method} not allowed"}
            return None, {}, httpx.Response(405, headers={"allow": allow}, json=error)
        return None, {}, httpx.Response(404, json={"error": f"no route matches {method} {path}"})

    def _finish(self, call: _Call, status: int | None) -> None:
        request = call.request
        record = RequestRecord(
            call.index,
            request.method,
            str(request.url),
            call.attempt,
            None,
            status,
            call.time,
            request,
        )
        self._recorder.add(record)
        if call.route is not None:
            call.route.add(record)
        if status is not None and 200 <= status < 300:
            with self._lock:
                self._served += 1

    def _admit(self, now: float) -> float | None:
        """Count one request against the rate limit; return the wait if it is over."""
        if self.rate_limit is None:
            return None
        limit, per = self.rate_limit
        # Invariant: _accepted holds the arrival times of accepted requests in the last *per* s.
        while self._accepted and self._accepted[0] <= now - per:
            self._accepted.popleft()
        if len(self._accepted) >= limit:
            return self._accepted[0] + per - now
        self._accepted.append(now)
        return None

    def _generated(self) -> Generated:
        return Generated(self.records, self.record)
