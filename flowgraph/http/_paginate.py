"""A paginated source: every page of an endpoint, one at a time or several at once.

Pages are requested only as fast as the consumer takes their records, so a full
output buffer pauses the crawl. With ``concurrency > 1`` and pages whose
numbers (or offsets) are known in advance, pages are fetched in batches of that
many, concurrently; records still come out in page order. Retries happen here,
since a source that raises fails the run; run by a node of a graph with an
:class:`HTTPClient`, they are counted on that node.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any, TypeAlias, final

import anyio

from .._core import current_node
from .._core._exceptions import AttemptsExhausted, GraphError
from .._policies import Rate, RateLimiter, budget_of
from ._client import resolver
from ._pages import STYLES, Cursors, NextLinks, Offsets, Page, PageNumbers, Pagination, Request

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence

    import httpx

    from .._policies import Retry
    from ._client import ClientLike
    from ._pages import Style

__all__ = ["paginate"]

Items: TypeAlias = "str | Callable[[Any], Sequence[Any]] | None"


def paginate(
    client: ClientLike,
    url: str,
    *,
    style: Style | Pagination = "page",
    params: Mapping[str, Any] | None = None,
    page_size: int | None = None,
    items: Items = "items",
    pages: bool = False,
    retry: Retry | None = None,
    rate: Rate | RateLimiter | None = None,
    concurrency: int = 1,
) -> AsyncIterator[Any]:
    """Fetch every page of *url* and yield its records (or whole pages), in page order.

    Each page is one GET; a 4xx or 5xx response raises ``httpx.HTTPStatusError``
    and a body that is not JSON raises ``json.JSONDecodeError``. With *retry*,
    each page is retried under that policy (honouring ``Retry-After``) before
    the error propagates; run in a node of a graph that has an
    :class:`HTTPClient`, each retry adds to the node's ``retries`` statistic.
    With *rate*, every attempt first spends from it (a ``Rate`` or
    ``RateLimiter`` is one budget wherever it is given). Used in a source, an
    error that escapes fails the run, which is why the retries happen here.

    Pages are fetched only when the consumer wants more: a full output buffer
    pauses the crawl. With *concurrency* above 1 (page numbers, or offsets with
    a *page_size*), the first page is fetched alone, then the next
    *concurrency* pages at once; a batch's records are yielded, in page order,
    once the whole batch has arrived, so at most *concurrency* pages are held.
    If the pagination object names the body's total, exactly the pages there
    are are fetched; otherwise the crawl stops at the first last page (empty,
    or short), cancelling the requests after it in its batch: up to
    *concurrency* - 1 requests may go past the end. Records of pages before a
    failed one are yielded, then its error is raised. Cancellation stops the
    crawl at once, between or during requests.

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
        rate: a rate limit each attempt waits for; it may be shared with the
            nodes calling the same API.
        concurrency: pages requested at once (``>= 1``).

    Raises:
        GraphError: at once, for an unknown *style*, a *page_size* or
            *concurrency* below 1, *concurrency* with cursors or links (whose
            pages are known one after the other) or with offsets but no
            *page_size*, or a *client* that is not one.
        ValueError: when a body has no records where *items* says.
        httpx.HTTPError, json.JSONDecodeError: when a page fails for good.
    """
    pager = STYLES.get(style) if isinstance(style, str) else style
    if not isinstance(pager, PageNumbers | Offsets | Cursors | NextLinks):
        raise GraphError(
            f"style must be 'page', 'offset', 'cursor', 'link' or a pagination object "
            f"(got {style!r})"
        )
    if page_size is not None and (isinstance(page_size, bool) or page_size < 1):
        raise GraphError(f"page_size must be >= 1 or None (got {page_size!r})")
    _check_concurrency(concurrency, pager, page_size)
    get_client = resolver(client)
    limiter = None if rate is None else budget_of(rate)
    if limiter is not None:
        try:
            limiter.costs()
        except TypeError as exc:
            raise GraphError(
                f"rate= of paginate spends per request, which has no item: {exc}"
            ) from None

    async def get(request: Request) -> Page:
        if limiter is not None:
            await limiter.acquire()
        # httpx replaces the URL's own query with params=, even an empty one.
        response = await get_client().get(request.url, params=request.params or None)
        response.raise_for_status()
        body = response.json()
        return Page(request, response, body, _records(body, items, response.url), page_size)

    size = {} if page_size is None else {pager.size_param: page_size}
    first = Request(url, {**(params or {}), **pager._initial(), **size})
    return _Crawl(pager, first, get, retry, pages, concurrency)


def _check_concurrency(concurrency: int, pager: Pagination, page_size: int | None) -> None:
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise GraphError(f"concurrency must be an int >= 1 (got {concurrency!r})")
    if concurrency == 1:
        return
    if isinstance(pager, Cursors | NextLinks):
        raise GraphError(
            "concurrency > 1 needs pages known in advance (style='page' or 'offset'): "
            "cursor and link pages are only known one after the other"
        )
    if isinstance(pager, Offsets) and page_size is None:
        raise GraphError("concurrency > 1 with offsets needs page_size=, to know the next offsets")


Fetch: TypeAlias = "Callable[[Request], Awaitable[Page]]"


def _retrying(get: Fetch, retry: Retry | None) -> Fetch:
    """*get* under *retry*, counting retries on the node running it, if there is one."""
    if retry is None:
        return get
    node = current_node()
    if node is None:
        return lambda request: retry.call(get, request)
    attempt = retry.wrap(get, node)

    async def retried(request: Request) -> Page:
        try:
            page: Page = await attempt(request)
        except AttemptsExhausted as exhausted:
            error = exhausted.error
            error.add_note(f"flowgraph.Retry gave up after {exhausted.attempts} attempts")
            raise error from None
        return page

    return retried


@final
class _Crawl:
    """The async iterator :func:`paginate` returns: it fetches when its buffer runs dry.

    A plain iterator rather than an async generator: it holds nothing open
    between pages, so a consumer may drop it half-way without closing it.
    """

    def __init__(
        self,
        pager: Pagination,
        first: Request,
        get: Fetch,
        retry: Retry | None,
        pages: bool,
        concurrency: int,
    ) -> None:
        self._pager = pager
        self._request: Request | None = first
        self._get = get
        self._retry = retry
        self._pages = pages
        self._concurrency = concurrency
        self._fetch: Fetch | None = None  # set on first use, in the task of the consumer
        self._first: Page | None = None  # the first page, from which batches are numbered
        self._total: int | None = None  # the pages there are, if the body says
        self._n = 1  # index of the next page of a batch, the first being 0
        self._buffer: deque[Any] = deque()
        self._error: Exception | None = None  # raised once the pages before it are taken

    def __aiter__(self) -> _Crawl:
        return self

    async def __anext__(self) -> Any:
        while not self._buffer:
            if self._error is not None:
                error, self._error = self._error, None
                raise error
            if self._request is None:
                raise StopAsyncIteration
            if self._fetch is None:
                self._fetch = _retrying(self._get, self._retry)
            if self._first is None or self._concurrency == 1:
                await self._one(self._fetch, self._request)
            else:
                await self._batch(self._fetch, self._first)
        return self._buffer.popleft()

    async def _one(self, fetch: Fetch, request: Request) -> None:
        page = await fetch(request)
        self._take(page)
        self._request = self._pager._next(page)
        if self._request is None or self._concurrency == 1:
            return
        if isinstance(self._pager, PageNumbers | Offsets):
            # From here on, batches numbered from this first page.
            self._first = page
            self._total = self._pager._pages(page)
            if self._total is not None and self._total <= 1:
                self._request = None

    async def _batch(self, fetch: Fetch, first: Page) -> None:
        pager = self._pager
        assert isinstance(pager, PageNumbers | Offsets)
        total, n = self._total, self._n
        count = self._concurrency if total is None else min(self._concurrency, total - n)
        self._n += count
        if total is not None and self._n >= total:
            self._request = None
        for page in await _fetch_batch(fetch, [pager._nth(first, n + k) for k in range(count)]):
            if isinstance(page, Exception):
                self._error = page
            elif page is not None:  # None: cancelled, as a page before it was the last
                self._take(page)
                if not page.last:
                    continue
            self._request = None
            return

    def _take(self, page: Page) -> None:
        if self._pages:
            if page.records:
                self._buffer.append(list(page.records))
        else:
            self._buffer.extend(page.records)


async def _fetch_batch(fetch_page: Fetch, requests: list[Request]) -> list[Any]:
    """Fetch *requests* at once; return their pages or errors in order (``None``: cancelled).

    A page that is the last, or fails, cancels the requests after it: they are moot.
    """
    results: list[Any] = [None] * len(requests)
    scopes = [anyio.CancelScope() for _ in requests]

    async def one(n: int) -> None:
        with scopes[n]:
            try:
                page = await fetch_page(requests[n])
            except Exception as exc:
                results[n] = exc
            else:
                results[n] = page
                if not page.last:
                    return
            for scope in scopes[n + 1 :]:
                scope.cancel()

    async with anyio.create_task_group() as tg:
        for n in range(len(requests)):
            tg.start_soon(one, n)
    return results


def _records(body: Any, items: Items, url: httpx.URL) -> Sequence[Any]:
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
