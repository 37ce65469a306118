"""What a FakeAPI or a FlakyTransport saw: one record per request, and a log to assert on."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, final
from urllib.parse import unquote, urlsplit

import httpx

from ._match import ANY, Match, PathPattern

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ._faults import FaultKind

_SHOWN = 20  # requests listed in a failed assertion's message


@final
@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request a :class:`FlakyTransport` or :class:`FakeAPI` handled, and what it got.

    The request itself (headers, body) is in :attr:`request`; it takes no part
    in comparisons, so a test can compare records with ``==``.
    """

    index: int  # arrival order on this transport or API, from 0
    method: str
    url: str
    attempt: int  # count of requests with this method and URL so far, from 1
    fault: FaultKind | None  # the fault injected, or None (always None on a FakeAPI)
    status_code: int | None  # the status returned, or None if an exception was raised
    time: float  # when the request arrived: anyio.current_time(), or time.monotonic() if sync
    request: httpx.Request | None = field(default=None, compare=False, repr=False)

    @property
    def path(self) -> str:
        """The URL path, percent-decoded."""
        return unquote(urlsplit(self.url).path) or "/"

    def json(self) -> Any:
        """The request body parsed as JSON.

        Raises:
            ValueError: if the request had no body or the body is not JSON.
        """
        if self.request is None or not self.request.content:
            raise ValueError(f"{self.method} {self.url} was sent without a body")
        return json.loads(self.request.content)

    def _as_request(self) -> httpx.Request:
        return self.request if self.request is not None else httpx.Request(self.method, self.url)

    def describe(self) -> str:
        """One line: ``#3 POST http://api.test/orders -> 503 (server_error)``."""
        status = "no response" if self.status_code is None else str(self.status_code)
        fault = "" if self.fault is None else f" ({self.fault.value})"
        return f"#{self.index} {self.method} {self.url} -> {status}{fault}"


@final
class RequestLog(tuple[RequestRecord, ...]):
    """Recorded requests in arrival order: a tuple, with ways to pick and assert on them.

    ``filter`` and ``assert_called`` take the conditions of a route: method,
    path pattern (``"/users/{id}"``, a glob or a regex), query, headers and body.
    """

    __slots__ = ()

    def filter(
        self,
        method: str | None = None,
        path: PathPattern = "*",
        *,
        query: Mapping[str, object] | None = None,
        headers: Mapping[str, object] | None = None,
        json: Any = ANY,
        content: bytes | str | None = None,
    ) -> RequestLog:
        """The records whose request meets every condition given, in arrival order.

        Raises:
            ValueError, TypeError: on an invalid condition, as for a route.
        """
        return self._matching(
            Match(method, path, query=query, headers=headers, json=json, content=content)
        )

    @property
    def last(self) -> RequestRecord:
        """The latest request.

        Raises:
            IndexError: if no request was recorded.
        """
        if not self:
            raise IndexError("no request was recorded")
        return self[-1]

    def assert_called(
        self,
        method: str | None = None,
        path: PathPattern = "*",
        *,
        times: int | None = None,
        query: Mapping[str, object] | None = None,
        headers: Mapping[str, object] | None = None,
        json: Any = ANY,
        content: bytes | str | None = None,
    ) -> RequestLog:
        """Assert that requests meeting the conditions were made, *times* of them if given.

        Returns:
            The matching records, for further assertions.

        Raises:
            AssertionError: naming the conditions, the count, and the requests seen.
        """
        match = Match(method, path, query=query, headers=headers, json=json, content=content)
        found = self._matching(match)
        if (times is None and not found) or (times is not None and len(found) != times):
            expected = "at least 1 request" if times is None else f"{times} request"
            expected += "s" * (times not in (None, 1))
            raise AssertionError(
                f"expected {expected} matching {match.describe()}, got {len(found)}"
                f"{self._listing()}"
            )
        return found

    def assert_not_called(
        self,
        method: str | None = None,
        path: PathPattern = "*",
        *,
        query: Mapping[str, object] | None = None,
        headers: Mapping[str, object] | None = None,
        json: Any = ANY,
        content: bytes | str | None = None,
    ) -> None:
        """Assert that no request meets the conditions.

        Raises:
            AssertionError: naming the conditions and the requests seen.
        """
        self.assert_called(
            method, path, times=0, query=query, headers=headers, json=json, content=content
        )

    def _matching(self, match: Match) -> RequestLog:
        return RequestLog(record for record in self if match.matches(record._as_request()))

    def _listing(self) -> str:
        if not self:
            return "; no request was recorded"
        lines = [record.describe() for record in self[-_SHOWN:]]
        more = f" (the last {_SHOWN} of {len(self)})" if len(self) > _SHOWN else ""
        return f"; requests seen{more}:\n  " + "\n  ".join(lines)


class Recorder:
    """Numbers arriving requests and keeps their records; safe to share between threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._attempts: dict[tuple[str, str], int] = {}
        self._records: list[RequestRecord] = []
        self._arrived = 0

    def arrive(self, request: httpx.Request) -> tuple[int, int]:
        """Count *request* in; return its index and its attempt at that method and URL.

        The caller holds :attr:`lock`.
        """
        key = (request.method, str(request.url))
        attempt = self._attempts[key] = self._attempts.get(key, 0) + 1
        index, self._arrived = self._arrived, self._arrived + 1
        return index, attempt

    def add(self, record: RequestRecord) -> None:
        """Keep *record* (requests finish in any order; :meth:`log` sorts them)."""
        with self.lock:
            self._records.append(record)

    def log(self) -> RequestLog:
        """Every finished request so far, in arrival order."""
        with self.lock:
            return RequestLog(sorted(self._records, key=lambda record: record.index))
