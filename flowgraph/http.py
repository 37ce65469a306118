"""HTTP helpers for pipelines on httpx: one client per run, a paginated source, a fetch transform.

:class:`HTTPClient` opens one ``httpx.AsyncClient`` per run and closes it when
the run ends; :func:`paginate` walks a paginated endpoint in a source, retrying
each page itself (a source that raises fails the run); :func:`fetch` builds a
transform whose errors (``raise_for_status``) the node's ``Retry`` sees, with
their ``Retry-After``; :func:`is_transient` says which errors to retry.

Requires httpx: ``pip install 'flowgraph[http]'``. Added in 0.1.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, final

try:
    import httpx
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    raise ImportError("flowgraph.http needs httpx: pip install 'flowgraph[http]'") from exc

from ._core import Graph, RunFinished, RunStarted
from ._policies import Rate, RateLimiter

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
    from types import TracebackType

    from ._policies import Retry

__all__ = [
    "Cursors",
    "HTTPClient",
    "NextLinks",
    "Offsets",
    "PageNumbers",
    "fetch",
    "is_transient",
    "paginate",
]

_TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


@final
class HTTPClient:
    """Options for an ``httpx.AsyncClient``, opened once per run and closed when it ends.

    Attached to a graph (``HTTPClient(graph, base_url=...)`` or :meth:`attach`),
    it opens the client lazily in each run, on first use, and closes it after
    the run, in a ``RunFinished`` hook that runs even when the run failed or was
    cancelled. Outside a run, ``async with http_client as client:`` opens it for
    the block. Runs and blocks that overlap share one client, closed when the
    last one ends. Use it from one event loop at a time.

    Args:
        graphs: graphs whose runs open and close the client.
        options: keyword arguments of ``httpx.AsyncClient`` (``base_url``,
            ``timeout``, ``headers``, ``transport``...). A ``transport`` given
            here is shared by the successive clients, and each one closes it
            when it closes: that suits mock, ASGI and fault-injecting transports;
            for the network leave it out and let each client make its own.

    Added in 0.1.
    """

    __slots__ = ("_client", "_options", "_users")

    def __init__(self, *graphs: Graph, **options: Any) -> None:
        self._options = options
        self._client: httpx.AsyncClient | None = None
        self._users = 0
        for graph in graphs:
            self.attach(graph)

    def __repr__(self) -> str:
        options = ", ".join(f"{name}={value!r}" for name, value in self._options.items())
        return f"HTTPClient({options})"

    def attach(self, graph: Graph) -> None:
        """Open the client in every run of *graph*, and close it when the run ends.

        Raises:
            TypeError: if *graph* is not a :class:`flowgraph.Graph`.
        """
        if not isinstance(graph, Graph):
            raise TypeError(f"HTTPClient attaches to a flowgraph.Graph (got {graph!r})")
        graph.on(RunStarted)(self._run_started)
        graph.on(RunFinished)(self._run_finished)

    @property
    def client(self) -> httpx.AsyncClient:
        """The ``httpx.AsyncClient`` of the current run or ``async with`` block.

        Raises:
            RuntimeError: outside a run of an attached graph and outside ``async with``.
        """
        if self._users == 0:
            raise RuntimeError(
                "HTTPClient is not open: use it in a run of a graph it is attached to "
                "(HTTPClient(graph, ...)), or inside `async with http_client:`"
            )
        if self._client is None:
            self._client = httpx.AsyncClient(**self._options)
        return self._client

    async def __aenter__(self) -> httpx.AsyncClient:
        self._users += 1
        return self.client

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._release()

    def _run_started(self, event: RunStarted) -> None:
        self._users += 1

    async def _run_finished(self, event: RunFinished) -> None:
        await self._release()

    async def _release(self) -> None:
        self._users -= 1
        if self._users == 0 and self._client is not None:
            client, self._client = self._client, None
            await client.aclose()


ClientLike: TypeAlias = "HTTPClient | httpx.AsyncClient"
"""An :class:`HTTPClient`, or an ``httpx.AsyncClient`` that the caller opens and closes."""


def _resolver(client: ClientLike) -> Callable[[], httpx.AsyncClient]:
    if isinstance(client, HTTPClient):
        return lambda: client.client
    if isinstance(client, httpx.AsyncClient):
        return lambda: client
    raise TypeError(f"expected an HTTPClient or an httpx.AsyncClient (got {client!r})")


def is_transient(error: BaseException) -> bool:
    """Whether *error* is worth retrying: the next attempt may well succeed.

    True for timeouts, network and remote protocol errors, responses 408, 425,
    429, 500, 502, 503 and 504 (``httpx.HTTPStatusError``), and bodies that do
    not decode (cut short or replaced by a proxy's error page). False for other
    4xx responses and for errors in the caller's own code.
    """
    if isinstance(error, httpx.HTTPStatusError):
        return error.response.status_code in _TRANSIENT_STATUSES
    return isinstance(
        error,
        httpx.TimeoutException
        | httpx.NetworkError
        | httpx.RemoteProtocolError
        | httpx.DecodingError
        | json.JSONDecodeError
        | TimeoutError,
    )


Decode = Literal["json", "text", "response"]


def fetch(
    client: ClientLike,
    url: str | Callable[[Any], str],
    *,
    method: str = "GET",
    params: Callable[[Any], Mapping[str, Any]] | None = None,
    body: Callable[[Any], Any] | None = None,
    decode: Decode = "json",
) -> Callable[[Any], Awaitable[Any]]:
    """Build a transform that makes one request per item and returns the response.

    Declare it with the node's policies: ``graph.transform(fetch(api,
    "/items/{}"), name="item", workers=8, retry=fg.Retry(on=is_transient),
    rate=fg.Rate(10, per=1))``. A 4xx or 5xx response raises
    ``httpx.HTTPStatusError`` (``raise_for_status``), whose
    ``response.headers["Retry-After"]`` the node's ``Retry`` honours; a body that
    is not JSON raises ``json.JSONDecodeError``. Cancelling the node cancels the
    request in flight.

    Args:
        client: an :class:`HTTPClient` attached to the graph, or an open ``httpx.AsyncClient``.
        url: a template formatted with ``url.format(item, item=item)`` (so
            ``"/items/{}"`` or ``"/users/{item[id]}"``), or a function of the item.
        method: the HTTP method.
        params: a function of the item giving the query parameters.
        body: a function of the item giving the JSON body to send.
        decode: return the body parsed as ``"json"``, as ``"text"``, or the whole
            ``httpx.Response`` (``"response"``, body already read).

    Raises:
        ValueError: if *decode* is not one of the three.
    """
    if decode not in ("json", "text", "response"):
        raise ValueError(f"decode must be 'json', 'text' or 'response' (got {decode!r})")
    get_client = _resolver(client)
    url_of = _template(url) if isinstance(url, str) else url

    async def fetch(item: Any) -> Any:
        response = await get_client().request(
            method,
            url_of(item),
            params=None if params is None else params(item),
            json=None if body is None else body(item),
        )
        response.raise_for_status()
        if decode == "json":
            return response.json()
        if decode == "text":
            return response.text
        return response

    return fetch


def _template(url: str) -> Callable[[Any], str]:
    def url_of(item: Any) -> str:
        return url.format(item, item=item)

    return url_of


# -- pagination ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Request:
    url: str | httpx.URL
    params: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Page:
    request: _Request
    response: httpx.Response
    body: Any
    records: Sequence[Any]
    size: int | None  # the page size asked for

    @property
    def last(self) -> bool:
        """Whether a numbered or offset page is the last: empty, or shorter than asked."""
        return not self.records or (self.size is not None and len(self.records) < self.size)

    def with_param(self, name: str, value: Any) -> _Request:
        return _Request(self.request.url, {**self.request.params, name: value})


@final
@dataclass(frozen=True, slots=True)
class PageNumbers:
    """Pages numbered from *start*: ``?page=1&page_size=N``, ``?page=2...``.

    Stops after a page with no records, or with fewer than the page size asked for.
    """

    param: str = "page"
    size_param: str = "page_size"
    start: int = 1

    def _initial(self) -> dict[str, Any]:
        return {self.param: self.start}

    def _next(self, page: _Page) -> _Request | None:
        return (
            None if page.last else page.with_param(self.param, page.request.params[self.param] + 1)
        )


@final
@dataclass(frozen=True, slots=True)
class Offsets:
    """Records by offset: ``?offset=0&limit=N``, then ``offset`` plus the records received.

    Stops after a page with no records, or with fewer than the limit asked for.
    """

    param: str = "offset"
    size_param: str = "limit"
    start: int = 0

    def _initial(self) -> dict[str, Any]:
        return {self.param: self.start}

    def _next(self, page: _Page) -> _Request | None:
        offset = page.request.params[self.param] + len(page.records)
        return None if page.last else page.with_param(self.param, offset)


@final
@dataclass(frozen=True, slots=True)
class Cursors:
    """Opaque cursors: the first request has none, the next sends ``?cursor=<body[key]>``.

    Stops when the body's *key* is missing, null or empty.
    """

    param: str = "cursor"
    key: str = "next_cursor"
    size_param: str = "limit"

    def _initial(self) -> dict[str, Any]:
        return {}

    def _next(self, page: _Page) -> _Request | None:
        cursor = page.body.get(self.key) if isinstance(page.body, dict) else None
        return page.with_param(self.param, cursor) if cursor else None


@final
@dataclass(frozen=True, slots=True)
class NextLinks:
    """Follow the ``Link: <url>; rel="next"`` header, else the URL in the body's *key*.

    The next URL carries its own query, so parameters are sent with the first
    request only. Stops when there is no next link.
    """

    key: str = "next"
    size_param: str = "limit"

    def _initial(self) -> dict[str, Any]:
        return {}

    def _next(self, page: _Page) -> _Request | None:
        link = page.response.links.get("next", {}).get("url")
        if not link and isinstance(page.body, dict):
            link = page.body.get(self.key)
        return _Request(link, {}) if link else None


Pagination: TypeAlias = PageNumbers | Offsets | Cursors | NextLinks
"""How an endpoint pages, with the names of its parameters."""

Style = Literal["page", "offset", "cursor", "link"]

_STYLES: dict[str, Pagination] = {
    "page": PageNumbers(),
    "offset": Offsets(),
    "cursor": Cursors(),
    "link": NextLinks(),
}


async def paginate(
    client: ClientLike,
    url: str,
    *,
    style: Style | Pagination = "page",
    params: Mapping[str, Any] | None = None,
    page_size: int | None = None,
    items: str | Callable[[Any], Sequence[Any]] | None = "items",
    pages: bool = False,
    retry: Retry | None = None,
    rate: Rate | RateLimiter | None = None,
) -> AsyncIterator[Any]:
    """Fetch every page of *url* in turn and yield its records (or whole pages).

    Each page is one GET; a 4xx or 5xx response raises ``httpx.HTTPStatusError``
    and a body that is not JSON raises ``json.JSONDecodeError``. With *retry*,
    each page is retried under that policy (honouring ``Retry-After``) before
    the error propagates; with *rate*, every attempt first takes budget from it.
    Used in a source, an error that escapes fails the run, which is why the
    retries happen here rather than on the node. Pages are fetched one at a
    time, only when the consumer wants more: a full output buffer pauses the
    crawl. Cancellation stops it at once, between or during requests.

    Use it in a source::

        @graph.source
        async def records():
            async for record in paginate(api, "/items", page_size=100, retry=fg.Retry()):
                yield record

    Args:
        client: an :class:`HTTPClient` attached to the graph, or an open ``httpx.AsyncClient``.
        url: the endpoint, relative to the client's ``base_url`` or absolute.
        style: ``"page"``, ``"offset"``, ``"cursor"`` or ``"link"``, or a
            :class:`PageNumbers`, :class:`Offsets`, :class:`Cursors` or
            :class:`NextLinks` naming the API's parameters.
        params: query parameters sent with every request (the first only, for links).
        page_size: records per page to ask for; a shorter page is then known to
            be the last. ``None`` sends no size and stops at an empty page.
        items: the key of the records in the JSON body, a function of the body
            returning them, or ``None`` when the body is the list itself.
        pages: yield each page's list of records instead of the records one by one.
        retry: the retry policy of each page request.
        rate: a rate limit each attempt waits for; a :class:`RateLimiter` may be
            shared with the nodes calling the same API.

    Raises:
        ValueError: for an unknown *style* or a *page_size* below 1, or when a
            body has no records where *items* says.
        httpx.HTTPError, json.JSONDecodeError: when a page fails for good.
    """
    pager = _STYLES.get(style) if isinstance(style, str) else style
    if not isinstance(pager, PageNumbers | Offsets | Cursors | NextLinks):
        raise ValueError(
            f"style must be 'page', 'offset', 'cursor', 'link' or a pagination object "
            f"(got {style!r})"
        )
    if page_size is not None and (isinstance(page_size, bool) or page_size < 1):
        raise ValueError(f"page_size must be >= 1 or None (got {page_size!r})")
    get_client = _resolver(client)
    limiter = RateLimiter(rate) if isinstance(rate, Rate) else rate

    async def get(request: _Request) -> _Page:
        if limiter is not None:
            await limiter.acquire()
        # httpx replaces the URL's own query with params=, even an empty one.
        response = await get_client().get(request.url, params=request.params or None)
        response.raise_for_status()
        body = response.json()
        return _Page(request, response, body, _records(body, items, response.url), page_size)

    size = {} if page_size is None else {pager.size_param: page_size}
    request: _Request | None = _Request(url, {**(params or {}), **pager._initial(), **size})
    while request is not None:
        page = await get(request) if retry is None else await retry.call(get, request)
        if pages:
            if page.records:
                yield list(page.records)
        else:
            for record in page.records:
                yield record
        request = pager._next(page)


def _records(
    body: Any, items: str | Callable[[Any], Sequence[Any]] | None, url: httpx.URL
) -> Sequence[Any]:
    if items is None:
        found = body
    elif isinstance(items, str):
        found = body.get(items) if isinstance(body, dict) else None
    else:
        found = items(body)
    if not isinstance(found, list | tuple):
        where = "the body" if items is None else f"items={items!r}"
        raise ValueError(f"response of {url} has no list of records at {where}")
    return found
