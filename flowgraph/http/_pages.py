"""How an endpoint pages: the pagination styles, and one page as received.

Each style computes the request after a page (``_next``); page numbers and
offsets can also compute the *n*-th request after the first (``_nth``) and,
when the body says how many there are, how many pages to fetch (``_pages``),
which is what lets ``paginate`` fetch several pages at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, final

if TYPE_CHECKING:
    from collections.abc import Sequence

    import httpx

__all__ = [
    "STYLES",
    "Cursors",
    "NextLinks",
    "Offsets",
    "Page",
    "PageNumbers",
    "Pagination",
    "Request",
    "Style",
]


@dataclass(frozen=True, slots=True)
class Request:
    url: str | httpx.URL
    params: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Page:
    request: Request
    response: httpx.Response
    body: Any
    records: Sequence[Any]
    size: int | None  # the page size asked for

    @property
    def last(self) -> bool:
        """Whether a numbered or offset page is the last: empty, or shorter than asked."""
        return not self.records or (self.size is not None and len(self.records) < self.size)

    def with_param(self, name: str, value: Any) -> Request:
        return Request(self.request.url, {**self.request.params, name: value})

    def count(self, key: str | None) -> int | None:
        """The int at ``body[key]``, if there is one."""
        value = self.body.get(key) if key is not None and isinstance(self.body, dict) else None
        return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


@final
@dataclass(frozen=True, slots=True)
class PageNumbers:
    """Pages numbered from *start*: ``?page=1&page_size=N``, ``?page=2...``.

    Stops after a page with no records, or with fewer than the page size asked
    for, or after ``body[total]`` pages when *total* names the body's page count
    (``"total_pages"``), which lets ``concurrency`` fetch exactly the pages there are.
    """

    param: str = "page"
    size_param: str = "page_size"
    start: int = 1
    total: str | None = None

    def _initial(self) -> dict[str, Any]:
        return {self.param: self.start}

    def _next(self, page: Page) -> Request | None:
        return None if page.last else self._nth(page, 1)

    def _nth(self, first: Page, n: int) -> Request:
        return first.with_param(self.param, first.request.params[self.param] + n)

    def _pages(self, first: Page) -> int | None:
        return first.count(self.total)


@final
@dataclass(frozen=True, slots=True)
class Offsets:
    """Records by offset: ``?offset=0&limit=N``, then ``offset`` plus the records received.

    Stops after a page with no records, or with fewer than the limit asked for,
    or at ``body[total]`` records when *total* names the body's record count
    (``"total"``).
    """

    param: str = "offset"
    size_param: str = "limit"
    start: int = 0
    total: str | None = None

    def _initial(self) -> dict[str, Any]:
        return {self.param: self.start}

    def _next(self, page: Page) -> Request | None:
        offset = page.request.params[self.param] + len(page.records)
        return None if page.last else page.with_param(self.param, offset)

    def _nth(self, first: Page, n: int) -> Request:
        assert first.size is not None
        return first.with_param(self.param, first.request.params[self.param] + n * first.size)

    def _pages(self, first: Page) -> int | None:
        records = first.count(self.total)
        if records is None or first.size is None:
            return None
        remaining = records - int(first.request.params[self.param])
        return max(1, -(-remaining // first.size))


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

    def _next(self, page: Page) -> Request | None:
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

    def _next(self, page: Page) -> Request | None:
        link = page.response.links.get("next", {}).get("url")
        if not link and isinstance(page.body, dict):
            link = page.body.get(self.key)
        return Request(link, {}) if link else None


Pagination: TypeAlias = PageNumbers | Offsets | Cursors | NextLinks
"""How an endpoint pages, with the names of its parameters."""

Style = Literal["page", "offset", "cursor", "link"]

STYLES: dict[str, Pagination] = {
    "page": PageNumbers(),
    "offset": Offsets(),
    "cursor": Cursors(),
    "link": NextLinks(),
}
