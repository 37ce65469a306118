"""The arithmetic of rate budgets: sliding logs and calendar windows, in any clock.

Pure and synchronous, so one implementation serves both limiters: the
in-memory one runs it on the event loop, in loop time; the one kept in a state
store runs it inside a store transaction, in wall time, on the state it read.

Memory is bounded by design. A sliding window of *limit* units over *per*
seconds keeps one entry per call while ``limit <= MAX_ENTRIES`` (costs are ints
>= 1, so at most *limit* entries are ever live) and is exact. Above that, calls
less than ``per / MAX_ENTRIES`` after the first call of the newest entry join
it, stamped with the later time: about ``MAX_ENTRIES`` live entries, and a call
can only be held back (by at most ``per / MAX_ENTRIES``), never let through
early. A calendar window keeps its bounds and what it has used: three numbers.
"""

from __future__ import annotations

import math
from collections import deque
from datetime import date, datetime, time, timedelta, tzinfo
from typing import TYPE_CHECKING, Any, Final

from ._clock import DAY, WEEK

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "MAX_ENTRIES",
    "CalendarWindow",
    "Ledger",
    "SlidingLog",
    "Window",
    "calendar_bounds",
    "fits_calendar",
    "window",
]

MAX_ENTRIES: Final = 1024


class SlidingLog:
    """At most *limit* units in any interval of *per* seconds."""

    __slots__ = ("entries", "limit", "per", "resolution", "used")

    def __init__(self, limit: int, per: float) -> None:
        self.limit = limit
        self.per = per
        self.resolution = 0.0 if limit <= MAX_ENTRIES else per / MAX_ENTRIES
        # Invariant: entries are [first, last, cost], sorted by last; used == sum of costs.
        self.entries: deque[list[float]] = deque()
        self.used = 0

    def _expire(self, now: float) -> None:
        entries, per = self.entries, self.per
        while entries and entries[0][1] + per <= now:
            self.used -= int(entries.popleft()[2])

    def wait(self, now: float, cost: int) -> float:
        """Seconds from *now* until *cost* units fit (0: they fit now). Needs ``cost <= limit``."""
        self._expire(now)
        excess = self.used + cost - self.limit
        if excess <= 0:
            return 0.0
        for _, last, spent in self.entries:
            excess -= int(spent)
            if excess <= 0:
                return last + self.per - now
        raise AssertionError("a cost above the limit reached the ledger")  # pragma: no cover

    def take(self, now: float, cost: int) -> None:
        """Spend *cost* units at *now*; an entry is never stamped before the newest one."""
        if cost <= 0:
            return
        self.used += cost
        entries = self.entries
        if entries:
            newest = entries[-1]
            now = max(now, newest[1])
            if now - newest[0] <= self.resolution:
                newest[1] = now
                newest[2] += cost
                return
        entries.append([now, now, cost])

    def shift(self, delta: float) -> None:
        """Move every entry by *delta* seconds (the history moves to another clock)."""
        for entry in self.entries:
            entry[0] += delta
            entry[1] += delta

    def dump(self) -> list[list[float]]:
        return [list(entry) for entry in self.entries]

    def load(self, data: Any) -> None:
        entries = deque([float(f), float(t), int(c)] for f, t, c in data)
        self.entries = deque(sorted(entries, key=lambda entry: entry[1]))
        self.used = sum(int(entry[2]) for entry in entries)


class CalendarWindow:
    """At most *limit* units per calendar period of *per* seconds in time zone *zone*."""

    __slots__ = ("end", "limit", "per", "start", "used", "zone")

    def __init__(self, limit: int, per: float, zone: tzinfo) -> None:
        self.limit = limit
        self.per = per
        self.zone = zone
        self.start = self.end = -math.inf
        self.used = 0

    def _roll(self, now: float) -> None:
        # A window stamped ahead of *now* (a clock that runs ahead) is kept: conservative.
        if now >= self.end:
            self.start, self.end = calendar_bounds(now, self.per, self.zone)
            self.used = 0

    def wait(self, now: float, cost: int) -> float:
        """Seconds from *now* until *cost* units fit: 0, or until the window resets."""
        self._roll(now)
        return 0.0 if self.used + cost <= self.limit else self.end - now

    def take(self, now: float, cost: int) -> None:
        self._roll(now)
        self.used += cost

    def shift(self, delta: float) -> None:
        """Calendar windows live in wall time, which no clock change moves."""

    def dump(self) -> list[float]:
        return [self.start, self.end, self.used]

    def load(self, data: Any) -> None:
        start, end, used = data
        self.start, self.end, self.used = float(start), float(end), int(used)


def calendar_bounds(at: float, per: float, zone: tzinfo) -> tuple[float, float]:
    """``[start, end)`` in epoch seconds of the calendar window of length *per* holding *at*.

    A week starts on Monday at local midnight; a day is the local day, 23 or 25
    hours long across a daylight-saving change. Shorter periods follow each
    other from local midnight, and the last one ends at the next midnight
    (on a 25-hour day, ``per=12 * HOUR`` gives a third window of one hour).
    """
    day = datetime.fromtimestamp(at, zone).date()
    if per == WEEK:
        monday = day - timedelta(days=day.weekday())
        return _midnight(monday, zone), _midnight(monday + timedelta(days=7), zone)
    day_start = _midnight(day, zone)
    next_day = _midnight(day + timedelta(days=1), zone)
    if per == DAY:
        return day_start, next_day
    start = day_start + math.floor((at - day_start) / per) * per
    return start, min(start + per, next_day)


def _midnight(day: date, zone: tzinfo) -> float:
    # A midnight that does not exist (the clocks skip it) resolves to the first instant after.
    return datetime.combine(day, time(), tzinfo=zone).timestamp()


def fits_calendar(per: float) -> bool:
    """Whether a calendar window can be *per* seconds long: a week, or a divisor of a day."""
    if per == WEEK:
        return True
    parts = DAY / per
    return per <= DAY and math.isclose(parts, round(parts), rel_tol=0, abs_tol=1e-9)


Window = SlidingLog | CalendarWindow


def window(limit: int, per: float, zone: tzinfo | None) -> Window:
    """A sliding window, or a calendar window in *zone*."""
    return SlidingLog(limit, per) if zone is None else CalendarWindow(limit, per, zone)


class Ledger:
    """The windows of one budget, checked and charged together."""

    __slots__ = ("keys", "windows")

    def __init__(self, keys: Sequence[str], windows: Sequence[Window]) -> None:
        self.keys = tuple(keys)
        self.windows = tuple(windows)

    def wait(self, now: float, costs: Sequence[int]) -> float:
        """Seconds until every window has room for its cost (0: now)."""
        return max(w.wait(now, c) for w, c in zip(self.windows, costs, strict=True))

    def take(self, now: float, costs: Sequence[int]) -> None:
        for window, cost in zip(self.windows, costs, strict=True):
            window.take(now, cost)

    def dump(self) -> dict[str, Any]:
        return {key: window.dump() for key, window in zip(self.keys, self.windows, strict=True)}

    def load(self, state: Any) -> None:
        """Read windows back from :meth:`dump`; a window without state starts empty."""
        if not isinstance(state, dict):
            return
        for key, window in zip(self.keys, self.windows, strict=True):
            if key in state:
                window.load(state[key])
