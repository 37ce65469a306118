"""Response bodies that misbehave the way a network does, for async and sync clients alike.

A wait longer than the request's own read timeout ends in ``httpx.ReadTimeout``
after that timeout, as a real socket read does. Asynchronous waits use
``anyio.sleep`` (virtual time applies); synchronous ones ``time.sleep``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import anyio
import httpx

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator


def read_timeout(request: httpx.Request) -> float | None:
    """The read timeout the client set on *request*, in seconds, or ``None`` for none."""
    timeout = request.extensions.get("timeout")
    value = timeout.get("read") if isinstance(timeout, dict) else None
    return None if value is None else float(value)


def _timed_out(request: httpx.Request, what: str, delay: float, limit: float) -> httpx.ReadTimeout:
    return httpx.ReadTimeout(
        f"timed out after {limit:g}s waiting for the response: {what} of {delay:g}s "
        "exceeds the read timeout (injected fault)",
        request=request,
    )


async def wait(request: httpx.Request, delay: float, what: str) -> None:
    """Sleep *delay* seconds, or the read timeout and then raise ``httpx.ReadTimeout``."""
    limit = read_timeout(request)
    if limit is not None and delay > limit:
        await anyio.sleep(limit)
        raise _timed_out(request, what, delay, limit)
    await anyio.sleep(delay)


def wait_sync(request: httpx.Request, delay: float, what: str) -> None:
    """:func:`wait` for a synchronous client, with ``time.sleep``."""
    limit = read_timeout(request)
    if limit is not None and delay > limit:
        time.sleep(limit)
        raise _timed_out(request, what, delay, limit)
    time.sleep(delay)


def cut_short(
    response: httpx.Response, request: httpx.Request, body: bytes, fraction: float, *, reset: bool
) -> httpx.Response:
    """The real status and headers of *response*, then part of *body*, then an error.

    The headers are kept as they were, Content-Length included, so the client
    sees the body end early: ``httpx.RemoteProtocolError`` as from a peer that
    closed the connection, or ``httpx.ReadError`` as from one that reset it.
    """
    sent = body[: int(len(body) * fraction)]

    def error() -> httpx.TransportError:
        if reset:
            return httpx.ReadError("[Errno 104] Connection reset by peer", request=request)
        length = response.headers.get("content-length")
        detail = (
            f"received {len(sent)} bytes, expected {length}"
            if length is not None
            else "incomplete chunked read"
        )
        return httpx.RemoteProtocolError(
            f"peer closed connection without sending complete message body: {detail}",
            request=request,
        )

    return httpx.Response(
        response.status_code,
        headers=response.headers,
        stream=_Broken(sent, error),
        extensions=response.extensions,
    )


class _Broken(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A body that yields *sent*, then raises what *error* builds."""

    def __init__(self, sent: bytes, error: Callable[[], httpx.TransportError]) -> None:
        self._sent = sent
        self._error = error

    def __iter__(self) -> Iterator[bytes]:
        if self._sent:
            yield self._sent
        raise self._error()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self._sent:
            yield self._sent
        raise self._error()


def slowed(
    response: httpx.Response, request: httpx.Request, chunk_size: int, delay: float
) -> httpx.Response:
    """*response* with its body re-chunked into *chunk_size* pieces, *delay* seconds apart."""
    return httpx.Response(
        response.status_code,
        headers=response.headers,
        stream=_Slow(response.stream, request, chunk_size, delay),
        extensions=response.extensions,
    )


class _Slow(httpx.SyncByteStream, httpx.AsyncByteStream):
    """Re-chunk a body with a pause before every chunk but the first.

    A pause longer than the read timeout raises ``httpx.ReadTimeout`` mid-body.
    """

    def __init__(
        self,
        inner: httpx.SyncByteStream | httpx.AsyncByteStream,
        request: httpx.Request,
        chunk_size: int,
        delay: float,
    ) -> None:
        self._inner = inner
        self._request = request
        self._chunk_size = chunk_size
        self._delay = delay

    def _pieces(self, chunk: bytes) -> Iterator[bytes]:
        for start in range(0, len(chunk), self._chunk_size):
            yield chunk[start : start + self._chunk_size]

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if not isinstance(self._inner, httpx.AsyncByteStream):
            raise TypeError(f"an async client needs an async response stream (got {self._inner!r})")
        first = True
        chunks = aiter(self._inner)
        try:
            async for chunk in chunks:
                for piece in self._pieces(chunk):
                    if not first:
                        await wait(self._request, self._delay, "a pause in the body")
                    first = False
                    yield piece
        finally:
            # A timeout raised mid-body must not leave the inner generator to the GC.
            close = getattr(chunks, "aclose", None)
            if close is not None:
                await close()

    def __iter__(self) -> Iterator[bytes]:
        if not isinstance(self._inner, httpx.SyncByteStream):
            raise TypeError(f"a sync client needs a sync response stream (got {self._inner!r})")
        first = True
        chunks = iter(self._inner)
        try:
            for chunk in chunks:
                for piece in self._pieces(chunk):
                    if not first:
                        wait_sync(self._request, self._delay, "a pause in the body")
                    first = False
                    yield piece
        finally:
            getattr(chunks, "close", lambda: None)()

    async def aclose(self) -> None:
        if isinstance(self._inner, httpx.AsyncByteStream):
            await self._inner.aclose()

    def close(self) -> None:
        if isinstance(self._inner, httpx.SyncByteStream):
            self._inner.close()
