"""FlakyTransport: an httpx transport, async and sync, that injects the faults of a FaultPlan."""

from __future__ import annotations

import inspect
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import final

import anyio
import httpx

from ._faults import Fault, FaultKind
from ._plan import FaultPlan
from ._records import Recorder, RequestLog, RequestRecord
from ._streams import cut_short, slowed, wait, wait_sync

Handler = (
    Callable[[httpx.Request], httpx.Response]
    | Callable[[httpx.Request], Coroutine[None, None, httpx.Response]]
)
"""A sync or async function from request to response, as ``httpx.MockTransport`` takes."""

_INVALID_JSON = b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>\n"
_BROKEN_BODIES = (FaultKind.TRUNCATED_BODY, FaultKind.CONNECTION_RESET)


@final
class FlakyTransport(httpx.AsyncBaseTransport, httpx.BaseTransport):
    """Wrap a transport (or a handler, or a FakeAPI) and inject the faults of *plan*.

    Shaped like ``httpx.MockTransport``: pass it to ``httpx.AsyncClient(transport=...)``,
    or to ``httpx.Client(transport=...)`` when what it wraps is synchronous (a
    sync handler, ``httpx.HTTPTransport``, a :class:`FakeAPI` with sync routes).
    Faults that replace the response (connection errors, timeouts, 5xx, 429,
    invalid JSON) never call the wrapped transport, as a server that failed
    never did the work; latency, broken bodies and slow streams wrap a real
    response, so the server did the work. Errors are raised as a real transport
    raises them (``httpx.ConnectError``, ``httpx.ReadTimeout``,
    ``httpx.RemoteProtocolError``, ``httpx.ReadError``), with the request attached.

    Latency or a pause in a slow body longer than the request's read timeout
    raises ``httpx.ReadTimeout`` once that timeout has passed. Async delays use
    ``anyio.sleep``, so they work on asyncio and trio and cost nothing under a
    virtual clock; sync delays use ``time.sleep``. Cancelling a request while it
    is delayed cancels it cleanly; it is still recorded, with no status. Every
    request is recorded in :attr:`records` with the fault injected (or ``None``).

    Args:
        transport: what to wrap: ``httpx.ASGITransport(app)``, a :class:`FakeAPI`,
            any httpx transport, or a handler function as for ``httpx.MockTransport``.
        plan: the faults to inject; the default injects none.
    """

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport | httpx.BaseTransport | Handler,
        plan: FaultPlan | None = None,
    ) -> None:
        self._async_handler = inspect.iscoroutinefunction(transport)
        if not isinstance(transport, httpx.AsyncBaseTransport | httpx.BaseTransport):
            transport = httpx.MockTransport(transport)
        self._inner = transport
        self._plan = FaultPlan() if plan is None else plan
        self._streaks: dict[tuple[str, str], int] = {}
        self._recorder = Recorder()

    @property
    def plan(self) -> FaultPlan:
        """The plan this transport applies."""
        return self._plan

    @property
    def records(self) -> RequestLog:
        """Every finished request so far, in arrival order."""
        return self._recorder.log()

    @property
    def faults_injected(self) -> RequestLog:
        """The records of the requests that got a fault, in arrival order."""
        return RequestLog(record for record in self.records if record.fault is not None)

    @property
    def fault_counts(self) -> Counter[FaultKind]:
        """How many times each fault kind was injected."""
        return Counter(record.fault for record in self.records if record.fault is not None)

    def describe(self) -> str:
        """One line for a failing test: requests, faults by kind, and the plan that replays them."""
        counts = self.fault_counts
        listed = ", ".join(f"{kind.value}={n}" for kind, n in sorted(counts.items()))
        requests, faults = len(self.records), sum(counts.values())
        return (
            f"{requests} request{'s' * (requests != 1)}, {faults} fault{'s' * (faults != 1)}"
            f" injected{f' ({listed})' if listed else ''} by {self._plan!r}"
        )

    def __repr__(self) -> str:
        return f"FlakyTransport({self._inner!r}, {self._plan!r})"

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send *request* through the plan: inject its fault or pass it to the wrapped transport.

        Raises:
            httpx.TransportError: the injected error, or whatever the wrapped transport raises.
            TypeError: if the wrapped transport is synchronous only.
        """
        if not isinstance(self._inner, httpx.AsyncBaseTransport):
            raise TypeError(
                f"FlakyTransport wraps {self._inner!r}, which is sync only: use httpx.Client"
            )
        await request.aread()
        index, attempt, fault = self._arrive(request)
        arrived = anyio.current_time()
        status: int | None = None
        try:
            response = await self._apply(fault, request)
            status = response.status_code
            return response
        finally:
            self._record(request, index, attempt, fault, status, arrived)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """:meth:`handle_async_request` for ``httpx.Client``; delays use ``time.sleep``.

        Raises:
            httpx.TransportError: the injected error, or whatever the wrapped transport raises.
            TypeError: if the wrapped transport or handler is asynchronous only.
        """
        if not isinstance(self._inner, httpx.BaseTransport) or self._async_handler:
            raise TypeError(
                f"FlakyTransport wraps {self._inner!r}, which is async only: use "
                "httpx.AsyncClient, or wrap a sync handler or transport (a FakeAPI serves both)"
            )
        request.read()
        index, attempt, fault = self._arrive(request)
        arrived = time.monotonic()
        status: int | None = None
        try:
            response = self._apply_sync(fault, request)
            status = response.status_code
            return response
        finally:
            self._record(request, index, attempt, fault, status, arrived)

    async def aclose(self) -> None:
        """Close the wrapped transport."""
        if isinstance(self._inner, httpx.AsyncBaseTransport):
            await self._inner.aclose()

    def close(self) -> None:
        """Close the wrapped transport."""
        if isinstance(self._inner, httpx.BaseTransport):
            self._inner.close()

    def _arrive(self, request: httpx.Request) -> tuple[int, int, Fault | None]:
        key = (request.method, str(request.url))
        with self._recorder.lock:
            index, attempt = self._recorder.arrive(request)
            # Invariant: _streaks[key] counts the failing faults injected in a row on the
            # latest attempts at key; decided at arrival, so it follows attempt order.
            streak = self._streaks.get(key, 0)
            fault = self._plan.decide_request(request, attempt, streak=streak)
            failing = fault is not None and fault.kind.is_failure
            self._streaks[key] = streak + 1 if failing else 0
        return index, attempt, fault

    def _record(
        self,
        request: httpx.Request,
        index: int,
        attempt: int,
        fault: Fault | None,
        status: int | None,
        arrived: float,
    ) -> None:
        kind = None if fault is None else fault.kind
        self._recorder.add(
            RequestRecord(
                index, request.method, str(request.url), attempt, kind, status, arrived, request
            )
        )

    def _replacement(self, fault: Fault, request: httpx.Request) -> httpx.Response | None:
        """Raise or answer for a fault that never reaches the server; ``None`` for the others."""
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
            reason = httpx.codes.get_reason_phrase(fault.status)
            headers = (
                {"retry-after": self._plan.retry_after_header()} if fault.status == 429 else {}
            )
            return httpx.Response(
                fault.status, headers=headers, json={"error": reason, "injected": True}
            )
        return None

    async def _apply(self, fault: Fault | None, request: httpx.Request) -> httpx.Response:
        if fault is not None and (replaced := self._replacement(fault, request)) is not None:
            return replaced
        assert isinstance(self._inner, httpx.AsyncBaseTransport)
        response = await self._inner.handle_async_request(request)
        if fault is None:
            return response
        try:
            if fault.kind is FaultKind.LATENCY:
                await wait(request, fault.delay, "injected latency")
            elif fault.kind in _BROKEN_BODIES:
                body = await response.aread()
                reset = fault.kind is FaultKind.CONNECTION_RESET
                return cut_short(response, request, body, fault.fraction, reset=reset)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await response.aclose()
            raise
        if fault.kind is FaultKind.SLOW_STREAM:
            plan = self._plan
            return slowed(response, request, plan.stream_chunk_size, plan.stream_delay)
        return response

    def _apply_sync(self, fault: Fault | None, request: httpx.Request) -> httpx.Response:
        if fault is not None and (replaced := self._replacement(fault, request)) is not None:
            return replaced
        assert isinstance(self._inner, httpx.BaseTransport)
        response = self._inner.handle_request(request)
        if fault is None:
            return response
        try:
            if fault.kind is FaultKind.LATENCY:
                wait_sync(request, fault.delay, "injected latency")
            elif fault.kind in _BROKEN_BODIES:
                body = response.read()
                reset = fault.kind is FaultKind.CONNECTION_RESET
                return cut_short(response, request, body, fault.fraction, reset=reset)
        except BaseException:
            response.close()
            raise
        if fault.kind is FaultKind.SLOW_STREAM:
            plan = self._plan
            return slowed(response, request, plan.stream_chunk_size, plan.stream_delay)
        return response
