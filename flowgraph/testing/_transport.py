"""FlakyTransport: an httpx transport that injects the faults of a FaultPlan."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import final

import anyio
import httpx

from ._faults import Fault, FaultKind, FaultPlan

Handler = (
    Callable[[httpx.Request], httpx.Response]
    | Callable[[httpx.Request], Coroutine[None, None, httpx.Response]]
)
"""A sync or async function from request to response, as ``httpx.MockTransport`` takes."""

_INVALID_JSON = b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>\n"
_BODY_HEADERS = frozenset({"content-length", "content-encoding", "transfer-encoding"})


@final
@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request that went through a :class:`FlakyTransport`, and what it got."""

    index: int  # arrival order on this transport, from 0
    method: str
    url: str
    attempt: int  # count of requests with this method and URL so far, from 1
    fault: FaultKind | None  # the fault injected, or None
    status_code: int | None  # the status returned, or None if an exception was raised
    time: float  # anyio.current_time() when the request arrived


@final
class FlakyTransport(httpx.AsyncBaseTransport):
    """Wrap an async transport (or a handler) and inject the faults of *plan*.

    Shaped like ``httpx.MockTransport``: pass it to
    ``httpx.AsyncClient(transport=...)``. Faults that replace the response
    (connection errors, timeouts, 5xx, 429, invalid JSON) never call the wrapped
    transport, as a server that failed never did the work; latency, truncated
    bodies and slow streams wrap a real response. Errors are raised as a real
    transport raises them (``httpx.ConnectError``, ``httpx.ConnectTimeout``,
    ``httpx.ReadTimeout``), with the request attached.

    Delays use ``anyio.sleep``, so they work on asyncio and trio and cost nothing
    under a virtual clock. Cancelling a request while it is delayed cancels it
    cleanly; it is still recorded, with no status. Every request is recorded in
    :attr:`records`, with the fault injected (or ``None``).

    Args:
        transport: the transport to wrap, e.g. ``httpx.ASGITransport(app)``, or a
            handler function as for ``httpx.MockTransport``.
        plan: the faults to inject; the default injects none.
    """

    def __init__(
        self, transport: httpx.AsyncBaseTransport | Handler, plan: FaultPlan | None = None
    ) -> None:
        if not isinstance(transport, httpx.AsyncBaseTransport):
            transport = httpx.MockTransport(transport)
        self._inner = transport
        self._plan = FaultPlan() if plan is None else plan
        self._attempts: dict[tuple[str, str], int] = {}
        self._streaks: dict[tuple[str, str], int] = {}
        self._records: list[RequestRecord] = []
        self._arrived = 0

    @property
    def plan(self) -> FaultPlan:
        """The plan this transport applies."""
        return self._plan

    @property
    def records(self) -> tuple[RequestRecord, ...]:
        """Every finished request so far, in arrival order."""
        return tuple(sorted(self._records, key=lambda record: record.index))

    @property
    def faults_injected(self) -> tuple[RequestRecord, ...]:
        """The records of the requests that got a fault, in arrival order."""
        return tuple(record for record in self.records if record.fault is not None)

    @property
    def fault_counts(self) -> Counter[FaultKind]:
        """How many times each fault kind was injected."""
        return Counter(record.fault for record in self._records if record.fault is not None)

    def describe(self) -> str:
        """One line for a failing test: requests, faults by kind, and the plan that replays them."""
        counts = ", ".join(f"{kind.value}={n}" for kind, n in sorted(self.fault_counts.items()))
        requests, faults = len(self._records), sum(self.fault_counts.values())
        return (
            f"{requests} request{'s' * (requests != 1)}, {faults} fault{'s' * (faults != 1)}"
            f" injected{f' ({counts})' if counts else ''} by {self._plan!r}"
        )

    def __repr__(self) -> str:
        return f"FlakyTransport({self._inner!r}, {self._plan!r})"

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send *request* through the plan: inject its fault or pass it to the wrapped transport.

        Raises:
            httpx.ConnectError, httpx.ConnectTimeout, httpx.ReadTimeout: when the
                plan injects one, and whatever the wrapped transport raises.
        """
        key = (request.method, str(request.url))
        attempt = self._attempts[key] = self._attempts.get(key, 0) + 1
        index, self._arrived = self._arrived, self._arrived + 1
        arrived = anyio.current_time()
        fault = self._bounded(key, self._plan.decide(*key, attempt))
        status: int | None = None
        try:
            response = await self._apply(fault, request)
            status = response.status_code
            return response
        finally:
            kind = None if fault is None else fault.kind
            self._records.append(
                RequestRecord(index, request.method, key[1], attempt, kind, status, arrived)
            )

    async def aclose(self) -> None:
        """Close the wrapped transport."""
        await self._inner.aclose()

    def _bounded(self, key: tuple[str, str], fault: Fault | None) -> Fault | None:
        # Invariant: self._streaks[key] is the number of failing faults injected in a row
        # on the latest attempts at key; decided at arrival, so it follows attempt order.
        failing = fault is not None and fault.kind.is_failure
        limit = self._plan.max_consecutive
        if failing and limit is not None and self._streaks.get(key, 0) >= limit:
            fault, failing = None, False
        self._streaks[key] = self._streaks.get(key, 0) + 1 if failing else 0
        return fault

    async def _apply(self, fault: Fault | None, request: httpx.Request) -> httpx.Response:
        if fault is None:
            return await self._inner.handle_async_request(request)
        kind = fault.kind
        if kind is FaultKind.CONNECT_ERROR:
            raise httpx.ConnectError("connection refused (injected fault)", request=request)
        if kind is FaultKind.CONNECT_TIMEOUT:
            raise httpx.ConnectTimeout("timed out (injected fault)", request=request)
        if kind is FaultKind.READ_TIMEOUT:
            raise httpx.ReadTimeout("timed out (injected fault)", request=request)
        if kind is FaultKind.INVALID_JSON:
            return httpx.Response(
                200, headers={"content-type": "application/json"}, content=_INVALID_JSON
            )
        if fault.status is not None:
            return _error_response(fault.status, self._plan.retry_after)
        if kind is FaultKind.LATENCY:
            await anyio.sleep(fault.delay)
        response = await self._inner.handle_async_request(request)
        if kind is FaultKind.TRUNCATED_BODY:
            return await _truncated(response, fault.fraction)
        if kind is FaultKind.SLOW_STREAM:
            return _slowed(response, self._plan.stream_chunk_size, self._plan.stream_delay)
        return response


def _error_response(status: int, retry_after: int) -> httpx.Response:
    reason = httpx.codes.get_reason_phrase(status)
    headers = {"retry-after": str(retry_after)} if status == 429 else {}
    return httpx.Response(status, headers=headers, json={"error": reason, "injected": True})


async def _truncated(response: httpx.Response, fraction: float) -> httpx.Response:
    body = await response.aread()
    headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in _BODY_HEADERS]
    return httpx.Response(
        response.status_code,
        headers=headers,
        content=body[: int(len(body) * fraction)],
        extensions=response.extensions,
    )


def _slowed(response: httpx.Response, chunk_size: int, delay: float) -> httpx.Response:
    stream = response.stream
    if not isinstance(stream, httpx.AsyncByteStream):
        raise TypeError(f"FlakyTransport needs an async response stream (got {stream!r})")
    return httpx.Response(
        response.status_code,
        headers=response.headers,
        stream=_SlowStream(stream, chunk_size, delay),
        extensions=response.extensions,
    )


class _SlowStream(httpx.AsyncByteStream):
    """Re-chunk a response body into *chunk_size* pieces with *delay* seconds between them."""

    def __init__(self, inner: httpx.AsyncByteStream, chunk_size: int, delay: float) -> None:
        self._inner = inner
        self._chunk_size = chunk_size
        self._delay = delay

    async def __aiter__(self) -> AsyncIterator[bytes]:
        first = True
        async for chunk in self._inner:
            for start in range(0, len(chunk), self._chunk_size):
                if not first:
                    await anyio.sleep(self._delay)
                first = False
                yield chunk[start : start + self._chunk_size]

    async def aclose(self) -> None:
        await self._inner.aclose()
