"""The routes a FakeAPI serves: a handler, a sequence of answers, or a table of records."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, final

import httpx

from ._match import Match
from ._records import RequestLog, RequestRecord
from ._tables import Pages, answer_400, lookup

if TYPE_CHECKING:
    import threading

RouteHandler = Callable[..., Any | Awaitable[Any]]
"""``handler(request, **path_params)``, sync or async, returning an answer."""

Answer = httpx.Response | RouteHandler | Any
"""What a route answers with: an ``httpx.Response``, a handler, or a JSON value (a 200)."""


def to_response(result: Any, route: Route) -> httpx.Response:
    """*result* of a handler as a response: itself, or a 200 with it as JSON.

    Raises:
        TypeError: if the handler returned ``None`` or something that is not JSON.
    """
    if isinstance(result, httpx.Response):
        return result
    if result is None:
        raise TypeError(
            f"the handler of {route!r} returned None; return an httpx.Response or a JSON value"
        )
    try:
        return httpx.Response(200, json=result)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"the handler of {route!r} returned {result!r}, which is not JSON") from exc


@final
class Route:
    """One route of a :class:`FakeAPI`: the requests it answers, and what with.

    Made by :meth:`FakeAPI.route`. Give it answers with :meth:`respond` (served in
    order, the last one repeating), or decorate a handler with it. Every request
    it answered is in :attr:`requests`.
    """

    def __init__(self, match: Match, lock: threading.Lock) -> None:
        self._match = match
        self._lock = lock
        self._answers: tuple[Answer, ...] = ()
        self._position = 0
        self._records: list[RequestRecord] = []

    @property
    def match(self) -> Match:
        """The conditions a request must meet to reach this route."""
        return self._match

    @property
    def requests(self) -> RequestLog:
        """The requests this route answered, in arrival order."""
        with self._lock:
            return RequestLog(sorted(self._records, key=lambda record: record.index))

    def respond(self, *answers: Answer) -> Route:
        """Answer the next requests with *answers* in turn; the last one then repeats.

        Each answer is an ``httpx.Response``, a handler ``(request, **path_params)``
        (sync or async) returning a response or a JSON value, or a JSON value
        answered as a 200. ``respond(httpx.Response(503), httpx.Response(503), {"ok": True})``
        fails twice, then succeeds for good. Calling it again starts a new sequence.

        Returns:
            This route, so that ``api.route(...).respond(...)`` reads as one line.

        Raises:
            ValueError: if no answer is given.
            TypeError: if an answer is ``None`` or not JSON.
        """
        if not answers:
            raise ValueError("respond() needs at least one answer")
        for answer in answers:
            if answer is None:
                raise TypeError("an answer cannot be None; use httpx.Response(204) for no content")
            if not isinstance(answer, httpx.Response) and not callable(answer):
                try:
                    json.dumps(answer)
                except (TypeError, ValueError) as exc:
                    raise TypeError(
                        f"an answer must be an httpx.Response, a handler or a JSON value "
                        f"(got {answer!r})"
                    ) from exc
        with self._lock:
            self._answers, self._position = answers, 0
        return self

    def __call__(self, handler: RouteHandler) -> Route:
        """Decorate *handler* to answer every request of this route: ``respond(handler)``.

        Raises:
            TypeError: if *handler* is not callable.
        """
        if not callable(handler):
            raise TypeError(f"a route handler must be callable (got {handler!r})")
        return self.respond(handler)

    def next_answer(self) -> Answer:
        """The answer of the request arriving now.

        Raises:
            RuntimeError: if the route was given no answer.
        """
        with self._lock:
            if not self._answers:
                raise RuntimeError(
                    f"{self!r} has no answer: call .respond(...) or decorate a handler with it"
                )
            answer = self._answers[min(self._position, len(self._answers) - 1)]
            self._position += 1
            return answer

    def add(self, record: RequestRecord) -> None:
        """Keep the record of a request this route answered."""
        with self._lock:
            self._records.append(record)

    def __repr__(self) -> str:
        match = self._match
        parts = [repr(match.method), repr(match.path), *match.options()]
        return f"Route({', '.join(parts)})"


@final
class Collection:
    """A table of records a :class:`FakeAPI` serves by pages; see :meth:`FakeAPI.collection`.

    :attr:`records` is a plain list: append to it, or change it, between requests
    to play new data arriving.
    """

    def __init__(
        self, path: str, records: list[Any], pages: Pages, key: str | None, lock: threading.Lock
    ) -> None:
        self.path = path
        self.records = records
        self.pages = pages
        self.key = key
        self.routes = [Route(Match("GET", path), lock).respond(self._page)]
        if key is not None:
            item = Match("GET", f"{path.rstrip('/')}/{{key}}")
            self.routes.append(Route(item, lock).respond(self._item))

    @property
    def requests(self) -> RequestLog:
        """The requests for pages and single records, in arrival order."""
        found = [record for route in self.routes for record in route.requests]
        return RequestLog(sorted(found, key=lambda record: record.index))

    def _page(self, request: httpx.Request) -> httpx.Response:
        return answer_400(lambda: self.pages.respond(self.records, request))

    def _item(self, request: httpx.Request, key: str) -> httpx.Response:
        assert self.key is not None
        record = lookup(self.records, self.key, key)
        if record is None:
            return httpx.Response(404, json={"error": f"no record with {self.key} {key!r}"})
        return httpx.Response(200, json=record)

    def __repr__(self) -> str:
        return f"<Collection {self.path!r}: {len(self.records)} records, {self.pages!r}>"


def validated_records(records: Iterable[Any], key: str | None) -> list[Any]:
    """*records* as a list, each checked to be JSON and, with *key*, an object holding it.

    Raises:
        TypeError: on a record that is not JSON.
        ValueError: on a record without *key*, or two with the same one.
    """
    listed = list(records)
    seen: set[str] = set()
    for index, record in enumerate(listed):
        try:
            json.dumps(record)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"record {index} is not JSON: {record!r}") from exc
        if key is None:
            continue
        if not isinstance(record, Mapping) or key not in record:
            raise ValueError(
                f"record {index} has no {key!r} (pass key=None to serve no single records)"
            )
        if str(record[key]) in seen:
            raise ValueError(f"records {key!r} must be unique (got {record[key]!r} twice)")
        seen.add(str(record[key]))
    return listed


async def raw_body(response: httpx.Response) -> bytes:
    """The body of *response* as sent, before any content decoding."""
    if isinstance(response.stream, httpx.ByteStream):
        return b"".join(response.stream)
    return b"".join([chunk async for chunk in response.aiter_raw()])


def raw_body_sync(response: httpx.Response) -> bytes:
    """:func:`raw_body` for a sync response."""
    if isinstance(response.stream, httpx.ByteStream):
        return b"".join(response.stream)
    return b"".join(response.iter_raw())
