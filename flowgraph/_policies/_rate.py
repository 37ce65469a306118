"""Rate limits: sliding windows, several at once, shareable between nodes and graphs.

Everything here runs on anyio alone: time comes from ``anyio.current_time()``,
waiting from ``anyio.sleep`` and anyio events, so limits hold on asyncio and trio
and are exact under virtual clocks. Limiters may be created outside any event
loop; they create their anyio primitives when first used inside one.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, final

import anyio
from anyio.lowlevel import RunVar, cancel_shielded_checkpoint, checkpoint_if_cancelled

from .._core._exceptions import GraphError
from .._core._validate import positive_int, to_seconds

if TYPE_CHECKING:
    from datetime import timedelta
    from types import TracebackType

    from .._core._policy import Call, NodeContext

__all__ = ["Rate", "RateLimiter"]


@final
@dataclass(frozen=True, init=False, repr=False, slots=True)
class Rate:
    """At most *count* calls in any interval of *per* seconds: one sliding window.

    A ``Rate`` is a value. Given to a node, it becomes a limiter private to that
    node for the run; to share one budget between nodes or graphs, give them the
    same :class:`RateLimiter`.

    Args:
        count: calls allowed per window (``>= 1``).
        per: window length in seconds (``> 0``).

    Raises:
        GraphError: if *count* < 1 or *per* <= 0.

    Added in 0.1.
    """

    slot: ClassVar[str] = "rate"
    count: int
    per: float

    def __init__(self, count: int, *, per: float | timedelta = 1.0) -> None:
        object.__setattr__(self, "count", positive_int("count", count))
        object.__setattr__(self, "per", to_seconds("per", per))

    def __repr__(self) -> str:
        return f"Rate({self.count}, per={self.per!r})"

    def wrap(self, call: Call, node: NodeContext) -> Call:
        """Return *call* limited by a fresh limiter private to *node*."""
        return RateLimiter(self).wrap(call, node)


@final
class RateLimiter:
    """One budget of calls, limited by several sliding windows at once.

    ``RateLimiter(Rate(10, per=1), Rate(1000, per=3600))`` lets a call through
    only when, for every window, fewer than ``count`` calls went through in the
    last ``per`` seconds; so no interval of length ``per`` ever holds more than
    ``count`` calls, and there is no burst at window edges. It remembers the last
    ``count`` call times per window, so memory stays bounded.

    One object is one budget: share it between nodes and graphs to limit them
    together. Use it from one event loop at a time; when a later run uses it from
    a new event loop, its history carries over by the real time elapsed.

    Waiters are served first come, first served: a later caller never overtakes
    an earlier one, even if the budget would fit it. A waiter that is cancelled
    consumes no budget and leaves the queue at once, so it never holds up the
    callers behind it.

    Usable as ``async with limiter:``, ``await limiter.acquire()``, or as a node
    policy (each call of the node acquires once).

    Raises:
        GraphError: if no rate is given. TypeError: if an argument is not a Rate.

    Added in 0.1.
    """

    __slots__ = ("_clock_offset", "_loop_seen", "_rates", "_stamps", "_waiters")
    slot: ClassVar[str] = "rate"

    def __init__(self, *rates: Rate) -> None:
        if not rates:
            raise GraphError(
                "RateLimiter needs at least one Rate, e.g. RateLimiter(Rate(10, per=1))"
            )
        for rate in rates:
            if not isinstance(rate, Rate):
                raise TypeError(f"RateLimiter takes Rate objects (got {rate!r})")
        self._rates = rates
        # Invariant: _stamps[i] holds the last rates[i].count acquisition times, oldest first.
        self._stamps = tuple(deque[float](maxlen=rate.count) for rate in rates)
        # Invariant: _waiters[0] is the only waiter allowed to take budget.
        self._waiters: deque[anyio.Event] = deque()
        self._loop_seen: RunVar[bool] = RunVar("flowgraph.RateLimiter")
        self._clock_offset: float | None = None

    def __repr__(self) -> str:
        return f"RateLimiter({', '.join(map(repr, self._rates))})"

    @property
    def rates(self) -> tuple[Rate, ...]:
        """The windows this limiter enforces."""
        return self._rates

    async def acquire(self) -> None:
        """Wait for a slot in every window, in arrival order, and take it.

        A checkpoint even when a slot is free. If cancelled while waiting, no
        budget is taken and the next waiter moves up.
        """
        await checkpoint_if_cancelled()
        now = self._now()
        if not self._waiters and self._delay(now) <= 0:
            self._record(now)
            await cancel_shielded_checkpoint()
            return
        turn = anyio.Event()
        self._waiters.append(turn)
        try:
            if self._waiters[0] is not turn:
                await turn.wait()
            # A timer may fire a hair early in float time: re-check until the window has room.
            while (delay := self._delay(self._now())) > 0:  # noqa: ASYNC110 - waits on time
                await anyio.sleep(delay)
        except BaseException:
            self._leave(turn)
            raise
        self._record(self._now())
        self._leave(turn)

    def acquire_nowait(self) -> None:
        """Take a slot at once if every window has one and nobody is waiting.

        Raises:
            anyio.WouldBlock: if the call would have to wait.
        """
        now = self._now()
        if self._waiters or self._delay(now) > 0:
            raise anyio.WouldBlock
        self._record(now)

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def wrap(self, call: Call, node: NodeContext) -> Call:
        """Return *call* that acquires from this limiter before every invocation."""

        async def limited(item: Any) -> Any:
            await self.acquire()
            return await call(item)

        return limited

    def _delay(self, now: float) -> float:
        delay = 0.0
        for rate, stamps in zip(self._rates, self._stamps, strict=True):
            if len(stamps) == rate.count:
                delay = max(delay, stamps[0] + rate.per - now)
        return delay

    def _record(self, now: float) -> None:
        for stamps in self._stamps:
            stamps.append(now)

    def _leave(self, turn: anyio.Event) -> None:
        was_first = self._waiters[0] is turn
        self._waiters.remove(turn)
        if was_first and self._waiters:
            self._waiters[0].set()

    def _now(self) -> float:
        now = anyio.current_time()
        try:
            self._loop_seen.get()
        except LookupError:
            self._loop_seen.set(True)
            self._rebase(now)
        # Each loop's clock has its own origin (trio's is random); the real-time
        # offset lets history recorded under one loop carry over to the next.
        self._clock_offset = now - time.monotonic()
        return now

    def _rebase(self, now: float) -> None:
        if self._clock_offset is None:
            return
        shift = (now - time.monotonic()) - self._clock_offset
        for stamps in self._stamps:
            shifted = [stamp + shift for stamp in stamps]
            stamps.clear()
            stamps.extend(shifted)
