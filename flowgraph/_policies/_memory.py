"""A rate budget in memory: windows in the running loop's clock, exact and lock-free.

Everything runs on the event loop, between two checkpoints, so checking the
windows and spending from them is one atomic step without any lock. History is
kept in the loop's clock (sliding windows) or in wall time (calendar windows).
When the limiter is used from a new event loop, ``_now`` decides how the
history carries over: unchanged while the clock continues (``clock_key``), moved
by the real time elapsed between the two clocks otherwise.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import anyio

from ._clock import clock_key, wall_time
from ._ledger import CalendarWindow, Ledger, window

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._rate import Rate

__all__ = ["MemoryBudget"]


class MemoryBudget:
    """A budget in the running loop's clock, moved by real time when the clock changes."""

    __slots__ = ("_key", "_ledger", "_offset", "_wall")

    def __init__(self, rates: Sequence[Rate]) -> None:
        windows = [window(r.count, r.per, r._zone) for r in rates]
        self._ledger = Ledger([str(n) for n in range(len(rates))], windows)
        self._wall = [isinstance(w, CalendarWindow) for w in windows]
        self._key: object = None
        self._offset = 0.0

    def take_or_wait(self, costs: Sequence[int]) -> float:
        """Spend *costs* and return 0 if every window has room, else the seconds to wait."""
        now = self._now()
        wall = wall_time() if any(self._wall) else now
        delay = 0.0
        windows = self._ledger.windows
        for w, cost, on_wall in zip(windows, costs, self._wall, strict=True):
            delay = max(delay, w.wait(wall if on_wall else now, cost))
        if delay <= 0:
            for w, cost, on_wall in zip(windows, costs, self._wall, strict=True):
                w.take(wall if on_wall else now, cost)
        return delay

    async def spend(self, costs: Sequence[int]) -> float:
        """:meth:`take_or_wait` for the waiting path, which awaits its budget."""
        return self.take_or_wait(costs)

    def _now(self) -> float:
        now = anyio.current_time()
        key = clock_key()
        if key is not self._key:
            if self._key is not None:
                # Another clock: bridge by real time, through each clock's offset from it.
                shift = (now - time.monotonic()) - self._offset
                for w in self._ledger.windows:
                    w.shift(shift)
            self._key = key
        self._offset = now - time.monotonic()
        return now
