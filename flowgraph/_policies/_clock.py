"""Time for policies and sources: which clock is running, and wall time that follows it.

Everything reads time through anyio, so virtual clocks drive it. Two questions
need more than ``anyio.current_time()``:

- *Is this the clock that ran before?* A limiter used by successive runs keeps
  its history in the clock it was recorded in when that clock continues (the
  same virtual clock, or asyncio's standard loops, which all read
  ``time.monotonic()``), and bridges by real time only when it cannot (trio's
  real clock gets a new random origin every run).
- *What time is it on the wall?* Calendar windows, quotas shared through a
  store and time-window sources need epoch seconds. Under a real clock that is
  ``time.time()``; under any other clock it is the wall time when that clock
  was first seen, advanced by the clock, so virtual time moves it.

The duration constants read well in declarations: ``fg.Rate(10, per=fg.DAY)``.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Final

import anyio

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "DAY",
    "HOUR",
    "MINUTE",
    "SECOND",
    "WEEK",
    "clock_key",
    "is_real_clock",
    "wall_reader",
    "wall_time",
]

SECOND: Final = 1.0
"""One second, in seconds. Added in 0.2."""
MINUTE: Final = 60.0
"""One minute, in seconds. Added in 0.2."""
HOUR: Final = 3600.0
"""One hour, in seconds. Added in 0.2."""
DAY: Final = 86400.0
"""One day, in seconds. Added in 0.2."""
WEEK: Final = 604800.0
"""One week, in seconds. Added in 0.2."""

_MONOTONIC: Final = object()
"""The key of asyncio's standard loops: every one reads the process's ``time.monotonic()``."""


def clock_key() -> object:
    """An object that is the same for as long as the running loop's clock continues.

    trio: the loop's clock object (a ``MockClock`` reused across runs is one
    clock; each run's real clock is another). asyncio: one key for every
    standard loop, since they all read ``time.monotonic()``; flowgraph.testing's
    virtual loops are keyed by their ``VirtualClock``; any other loop by itself.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        import trio

        return trio.lowlevel.current_clock()
    if getattr(type(loop), "time", None) is asyncio.BaseEventLoop.time:
        return _MONOTONIC
    return getattr(loop, "_virtual_clock", loop)


def is_real_clock(key: object) -> bool:
    """Whether the clock *key* names reads real time, so the wall clock may be read directly."""
    if key is _MONOTONIC:
        return True
    kind = type(key)
    return kind.__name__ == "SystemClock" and kind.__module__.startswith("trio")


_ORIGINS_KEPT: Final = 8
# Invariant: _origins maps id(key) to (key, wall time, anyio time) when that clock was first
# seen, for the last few non-real clocks; holding the key keeps its id from being reused.
_origins: dict[int, tuple[object, float, float]] = {}
_last_real = 0.0


def wall_time() -> float:
    """Seconds since the epoch, read through anyio's clock.

    Under a real clock, ``time.time()`` (held still if the system clock steps
    back). Under any other clock, the wall time when that clock was first seen,
    advanced by it: a virtual day passes in a virtual day, whatever real time
    does meanwhile, and carries on across runs that reuse the clock.
    """
    global _last_real
    key = clock_key()
    if is_real_clock(key):
        _last_real = max(_last_real, time.time())
        return _last_real
    now = anyio.current_time()
    origin = _origins.get(id(key))
    if origin is None or origin[0] is not key:
        if len(_origins) >= _ORIGINS_KEPT:
            del _origins[next(iter(_origins))]
        origin = _origins[id(key)] = (key, time.time(), now)
    return origin[1] + (now - origin[2])


def wall_reader() -> Callable[[], float]:
    """A function that reads :func:`wall_time` from any thread, later.

    Under a real clock, ``time.time``. Under a clock with a ``current_time()``
    method (trio's ``MockClock``, flowgraph.testing's ``VirtualClock``), that
    clock read through the same origin as :func:`wall_time`. Under any other
    clock, the wall time now, since its loop cannot be read from a thread.
    """
    key = clock_key()
    if is_real_clock(key):
        return time.time
    now = wall_time()
    current = getattr(key, "current_time", None)
    if not callable(current):
        return lambda: now
    _, wall, at = _origins[id(key)]
    return lambda: wall + (float(current()) - at)
