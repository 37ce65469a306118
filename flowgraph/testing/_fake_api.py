"""FakeAPI: a deterministic paginated HTTP API as a plain ASGI 3 app, and a loopback server for it.

Run it in-process with ``httpx.ASGITransport(app=api)`` (wrap that in a
:class:`~flowgraph.testing.FlakyTransport` to add faults), or on a real
127.0.0.1 port with :func:`open_server`, which serves it with hypercorn on
whichever of asyncio or trio is running.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import socket
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, cast, final
from urllib.parse import parse_qs, urlencode

import anyio

Scope = Mapping[str, Any]
Receive = Callable[[], Awaitable[Mapping[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
"""An ASGI 3 application."""

Record = dict[str, Any]

_logger = logging.getLogger("flowgraph.testing.server")
_GRACE = 1.0  # seconds open connections get to finish when a served app stops
_SHUTDOWN_LIMIT = _GRACE + 4.0  # seconds after which a server that has not stopped is cancelled


class _BadRequest(Exception):
    """A query parameter the API rejects; the message goes to the client as a 400."""


@final
@dataclass(frozen=True, slots=True)
class FakeAPIStatistics:
    """Counts of the HTTP requests a :class:`FakeAPI` has seen."""

    received: int  # every HTTP request
    served: int  # answered 200
    rate_limited: int  # answered 429 by the server-side rate limit


@final
class FakeAPI:
    """A paginated JSON API over deterministic records, written directly against ASGI 3.

    Record *i* (``1 <= i <= records``) is always :meth:`record` ``(i)``, so a test
    can check that every record arrived exactly once. Routes (``GET`` only):

    - ``/items?page=N&page_size=M``: page-number style, pages from 1; the body has
      ``items``, ``page``, ``page_size``, ``total``, ``total_pages`` and
      ``next_page`` (``null`` on the last page).
    - ``/items?offset=N&limit=M``: offset style; ``items``, ``offset``, ``limit``,
      ``total`` and ``next_offset`` (``null`` at the end).
    - ``/items/cursor?cursor=C&limit=M``: cursor style, starting without a cursor;
      ``items``, ``next_cursor`` and ``next`` (an absolute URL, also sent as a
      ``Link: <...>; rel="next"`` header when *link_header* is true), both ``null``
      at the end.
    - ``/items/{id}``: one record, or 404.

    Bad parameters get a 400 with ``{"error": ...}``, unknown paths a 404, other
    methods a 405. With *rate_limit* ``(n, per)``, a request arriving when ``n``
    requests were already accepted in the last *per* seconds gets a 429 with a
    ``Retry-After`` header (whole seconds until a slot frees, at least 1). Time
    is read with ``anyio.current_time()``, so a virtual clock applies when the
    app runs in-process.

    Args:
        records: how many records exist.
        page_size: the default page size and limit.
        rate_limit: ``(requests, per_seconds)``, or ``None`` for no limit.
        link_header: whether cursor pages carry a ``Link`` header.

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
        self._accepted: deque[float] = deque()
        self._received = 0
        self._served = 0
        self._rate_limited = 0

    def __repr__(self) -> str:
        options = f"records={self.records}, page_size={self.page_size}"
        if self.rate_limit is not None:
            options += f", rate_limit={self.rate_limit!r}"
        if not self.link_header:
            options += ", link_header=False"
        return f"FakeAPI({options})"

    @staticmethod
    def record(record_id: int) -> Record:
        """The record with id *record_id*, the same on every call and in every FakeAPI."""
        return {"id": record_id, "name": f"item-{record_id:05d}", "value": record_id * 7919 % 10007}

    def all_records(self) -> list[Record]:
        """Every record, in id order: what a complete crawl must yield."""
        return [self.record(i) for i in range(1, self.records + 1)]

    def statistics(self) -> FakeAPIStatistics:
        """A snapshot of the request counters."""
        return FakeAPIStatistics(self._received, self._served, self._rate_limited)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection scope (``http`` or ``lifespan``).

        Raises:
            ValueError: for a scope type other than ``http`` or ``lifespan``.
        """
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            raise ValueError(
                f"FakeAPI serves only http and lifespan scopes (got {scope['type']!r})"
            )
        self._received += 1
        status, body, headers = self._respond(scope)
        if status == 200:
            self._served += 1
        elif status == 429:
            self._rate_limited += 1
        content = json.dumps(body).encode()
        headers += [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(content)),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": content})

    def _respond(self, scope: Scope) -> tuple[int, Any, list[tuple[bytes, bytes]]]:
        wait = self._admit()
        if wait is not None:
            retry_after = str(max(1, math.ceil(wait))).encode()
            return 429, {"error": "rate limit exceeded"}, [(b"retry-after", retry_after)]
        if scope["method"] != "GET":
            return 405, {"error": f"method {scope['method']} not allowed"}, [(b"allow", b"GET")]
        path: str = scope["path"]
        query = {k: v[-1] for k, v in parse_qs(scope["query_string"].decode("latin-1")).items()}
        try:
            if path == "/items":
                if "offset" in query or "limit" in query:
                    return 200, self._offset_page(query), []
                return 200, self._numbered_page(query), []
            if path == "/items/cursor":
                return self._cursor_page(scope, query)
            if path.startswith("/items/"):
                record_id = _integer(path.removeprefix("/items/"), "record id", minimum=1)
                if record_id <= self.records:
                    return 200, self.record(record_id), []
        except _BadRequest as exc:
            return 400, {"error": str(exc)}, []
        return 404, {"error": f"no resource at {path}"}, []

    def _admit(self) -> float | None:
        """Count one request against the rate limit; return the wait if it is over."""
        if self.rate_limit is None:
            return None
        limit, per = self.rate_limit
        now = anyio.current_time()
        # Invariant: _accepted holds the arrival times of accepted requests in the last *per* s.
        while self._accepted and self._accepted[0] <= now - per:
            self._accepted.popleft()
        if len(self._accepted) >= limit:
            return self._accepted[0] + per - now
        self._accepted.append(now)
        return None

    def _slice(self, offset: int, limit: int) -> list[Record]:
        return [self.record(i) for i in range(offset + 1, min(offset + limit, self.records) + 1)]

    def _numbered_page(self, query: Mapping[str, str]) -> Any:
        if "page" in query and "offset" in query:
            raise _BadRequest("use either page or offset, not both")
        page = _integer(query.get("page", "1"), "page", minimum=1)
        size = _integer(query.get("page_size", str(self.page_size)), "page_size", minimum=1)
        pages = math.ceil(self.records / size)
        return {
            "items": self._slice((page - 1) * size, size),
            "page": page,
            "page_size": size,
            "total": self.records,
            "total_pages": pages,
            "next_page": page + 1 if page < pages else None,
        }

    def _offset_page(self, query: Mapping[str, str]) -> Any:
        if "page" in query:
            raise _BadRequest("use either page or offset, not both")
        offset = _integer(query.get("offset", "0"), "offset", minimum=0)
        limit = _integer(query.get("limit", str(self.page_size)), "limit", minimum=1)
        end = offset + limit
        return {
            "items": self._slice(offset, limit),
            "offset": offset,
            "limit": limit,
            "total": self.records,
            "next_offset": end if end < self.records else None,
        }

    def _cursor_page(
        self, scope: Scope, query: Mapping[str, str]
    ) -> tuple[int, Any, list[tuple[bytes, bytes]]]:
        offset = _decode_cursor(query["cursor"]) if "cursor" in query else 0
        limit = _integer(query.get("limit", str(self.page_size)), "limit", minimum=1)
        end = offset + limit
        cursor = next_url = None
        headers: list[tuple[bytes, bytes]] = []
        if end < self.records:
            cursor = base64.urlsafe_b64encode(f"offset:{end}".encode()).decode().rstrip("=")
            params = {"cursor": cursor} | ({"limit": query["limit"]} if "limit" in query else {})
            next_url = (
                f"{_origin(scope)}{scope.get('root_path', '')}/items/cursor?{urlencode(params)}"
            )
            if self.link_header:
                headers.append((b"link", f'<{next_url}>; rel="next"'.encode()))
        body = {"items": self._slice(offset, limit), "next_cursor": cursor, "next": next_url}
        return 200, body, headers


def _integer(text: str, name: str, *, minimum: int) -> int:
    message = f"{name} must be an integer >= {minimum} (got {text!r})"
    try:
        value = int(text)
    except ValueError:
        raise _BadRequest(message) from None
    if value < minimum:
        raise _BadRequest(message)
    return value


def _decode_cursor(cursor: str) -> int:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        label, _, offset = base64.urlsafe_b64decode(padded.encode()).decode().partition(":")
        if label == "offset" and offset.isascii() and offset.isdigit():
            return int(offset)
    except (binascii.Error, UnicodeDecodeError):
        pass
    raise _BadRequest(f"invalid cursor {cursor!r}")


def _origin(scope: Scope) -> str:
    headers = dict(scope.get("headers", []))
    host = headers.get(b"host", b"").decode("latin-1")
    if not host and scope.get("server"):
        server_host, port = scope["server"]
        host = f"{server_host}:{port}"
    return f"{scope.get('scheme', 'http')}://{host or 'localhost'}"


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


@asynccontextmanager
async def open_server(app: ASGIApp, *, host: str = "127.0.0.1") -> AsyncIterator[str]:
    """Serve the ASGI *app* with hypercorn on a free port of *host*; yield its base URL.

    The socket is bound and listening before the block starts, so requests made
    at once succeed. Works on asyncio and trio (hypercorn supports both). On
    exit, whether the block ends, raises or is cancelled, the server shuts down
    gracefully, giving open connections up to one second to finish; an exception
    from the block then propagates unchanged, not wrapped in an ExceptionGroup.
    Use real time: over a real socket a virtual clock would fire timeouts early.
    Server-side errors are logged to the ``flowgraph.testing.server`` logger.

    Yields:
        The base URL, e.g. ``"http://127.0.0.1:54321"``.

    Raises:
        OSError: if the address cannot be bound.
    """
    from hypercorn.config import Config

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        sock.listen()
        port = sock.getsockname()[1]
        config = Config()
        # hypercorn adopts the descriptor and closes it at shutdown.
        config.bind = [f"fd://{sock.detach()}"]
    config.accesslog = None
    config.errorlog = _logger
    config.graceful_timeout = _GRACE
    shutdown = anyio.Event()
    # hypercorn's asyncio server breaks if cancelled with connections open, so it runs
    # shielded and always stops through *shutdown*; the deadline only bounds a hang.
    server_scope = anyio.CancelScope(shield=True)
    error: BaseException | None = None
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(_serve, app, config, shutdown, server_scope)
        try:
            yield f"http://{f'[{host}]' if family == socket.AF_INET6 else host}:{port}"
        except BaseException as exc:
            # Re-raised below, outside the task group, so it is not wrapped in an ExceptionGroup.
            error = exc
        finally:
            shutdown.set()
            server_scope.deadline = anyio.current_time() + _SHUTDOWN_LIMIT
    if error is not None:
        raise error


async def _serve(
    app: ASGIApp, config: Any, shutdown: anyio.Event, scope: anyio.CancelScope
) -> None:
    import sniffio

    with scope:
        if sniffio.current_async_library() == "trio":
            from hypercorn.trio import serve as serve_trio

            await serve_trio(cast("Any", app), config, shutdown_trigger=shutdown.wait, mode="asgi")
        else:
            from hypercorn.asyncio import serve as serve_asyncio

            await serve_asyncio(
                cast("Any", app), config, shutdown_trigger=shutdown.wait, mode="asgi"
            )
