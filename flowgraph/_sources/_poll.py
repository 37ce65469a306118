"""Polling sources: fetch what is new since the last position, then wait for the next wake.

A daemon's source is rarely a finite list: it asks an API or a table for what
changed since it last looked, emits that, and sleeps. :func:`poll` turns one
``fetch(position)`` call into such a source for ``graph.source(...,
checkpoint=True)``, so the position it resumes from survives restarts.

Time is read through anyio only (``anyio.current_time``, ``anyio.sleep_until``),
so virtual clocks run days of polling in milliseconds on asyncio and trio.
"""

from __future__ import annotations

import inspect
import reprlib
from collections.abc import AsyncIterable, Iterable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, final

import anyio
import anyio.lowlevel

from .._core._exceptions import GraphError
from .._core._nodes import Positioned
from .._core._validate import to_seconds

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    Fetch = Callable[[Any], Awaitable[Iterable[Positioned]] | AsyncIterable[Positioned]]
    Schedule = Callable[[datetime], datetime]

__all__ = ["poll"]


def poll(
    fetch: Fetch,
    *,
    every: float | timedelta | None = None,
    schedule: Schedule | str | None = None,
    until_empty: bool = False,
) -> Callable[[Any], AsyncIterator[Positioned]]:
    """Build a checkpointed source that calls *fetch* again and again, waiting in between.

    Use it as ``graph.source(fg.poll(fetch, every=60), checkpoint=True)``. The
    source is called with the last committed position (``None`` the first
    time); it then loops:

    1. ``await fetch(position)``, which returns the ``fg.Positioned`` items
       newer than *position* (an iterable, or *fetch* is an async generator
       function);
    2. emits them in order; *position* becomes that of the last item emitted,
       so the next fetch asks for what comes after it, whatever has been
       committed meanwhile (an empty fetch leaves it unchanged);
    3. waits for the next wake: *every* seconds after the fetch started, or
       the wall-clock time ``schedule(now)`` returns; with ``until_empty=True``
       it fetches again at once while fetches return items, and waits only
       after one comes back empty (draining a backlog page after page).

    The first fetch happens as soon as the run starts. Fetches never overlap,
    and a fetch that takes longer than *every* is followed at once by the next.

    *schedule* is a cron expression (``"*/5 * * * *"``: every five minutes, in
    UTC; needs the ``cron`` extra, croniter), or a function that receives
    ``now`` as a timezone-aware UTC datetime and returns the next wake time,
    which must be aware and later than ``now``.
    ``now`` is the wall clock read when the source starts, advanced by anyio's
    clock (so virtual time moves it too), and moved forward to the wall clock
    whenever that is ahead (a suspended machine, an NTP step); it never goes back.

    Cancellation: ``run.stop()`` cancels the source wherever it is (in *fetch*,
    in a wait, or waiting for room downstream) and it ends cleanly; the items
    already emitted drain and are committed as usual. Errors: an exception from
    *fetch* or *schedule* fails the source like any source error; wrap the
    network call in ``fg.Retry(...).call`` to retry it. Backpressure: emitting
    waits while the graph is full or ``max_in_flight`` items are unacknowledged,
    which delays the next fetch.

    Args:
        fetch: ``async (position) -> Iterable[fg.Positioned]``, or an async
            generator function of the position yielding ``fg.Positioned``.
        every: seconds (or a timedelta) between the starts of two fetches.
        schedule: a cron expression, or ``(now) -> next wake`` in wall-clock
            time, instead of *every*.
        until_empty: fetch again at once after a fetch that returned items.

    Returns:
        A source function of one argument, the position to resume after, named
        after *fetch*.

    Raises:
        GraphError: unless exactly one of *every* and *schedule* is given, or if
            *every* is not > 0, *fetch* is not callable, or *schedule* is neither
            callable nor a valid cron expression.
        ImportError: for a cron expression without croniter installed.

    Added in 0.1.
    """
    if (every is None) == (schedule is None):
        raise GraphError(
            "poll() needs exactly one of every= (seconds) or schedule= (a cron expression "
            "or a callable)"
        )
    if not callable(fetch):
        raise GraphError(f"poll() needs an async fetch(position) function (got {fetch!r})")
    if isinstance(schedule, str):
        schedule = _cron(schedule)
    elif schedule is not None and not callable(schedule):
        raise GraphError(
            "schedule= must be a cron expression or a callable (now: datetime) -> datetime "
            f"(got {schedule!r})"
        )
    seconds = None if every is None else to_seconds("every", every)
    return _Poll(fetch, seconds, schedule, bool(until_empty))


def _cron(expression: str) -> Schedule:
    """The schedule of a cron expression, read in UTC."""
    try:
        from croniter import croniter
    except ImportError as exc:
        raise ImportError(
            f"schedule={expression!r} needs croniter: pip install 'flowgraph[cron]'"
        ) from exc
    if not croniter.is_valid(expression):
        raise GraphError(f"schedule={expression!r} is not a valid cron expression")
    return _Cron(expression, croniter)


@final
class _Cron:
    """``schedule(now)`` for a cron expression; reprs as the expression."""

    def __init__(self, expression: str, croniter: Any) -> None:
        self._expression = expression
        self._croniter = croniter

    def __call__(self, now: datetime) -> datetime:
        wake: datetime = self._croniter(self._expression, now).get_next(datetime)
        return wake

    def __repr__(self) -> str:
        return repr(self._expression)


@final
class _Poll:
    """The source :func:`poll` returns: an async generator function of the resume position."""

    def __init__(
        self, fetch: Fetch, every: float | None, schedule: Schedule | None, until_empty: bool
    ) -> None:
        self._fetch = fetch
        self._every = every
        self._schedule = schedule
        self._until_empty = until_empty
        name = getattr(fetch, "__name__", None)
        self.__name__ = name if isinstance(name, str) and name.isidentifier() else "poll"

    def __repr__(self) -> str:
        wake = (
            f"every={self._every!r}" if self._schedule is None else f"schedule={self._schedule!r}"
        )
        until_empty = ", until_empty=True" if self._until_empty else ""
        return f"poll({self.__name__}, {wake}{until_empty})"

    async def __call__(self, position: Any) -> AsyncIterator[Positioned]:
        clock = _WallClock() if self._schedule is not None else None
        while True:
            started = anyio.current_time()
            emitted = False
            for value in await self._fetch_once(position):
                yield value
                position = value.position
                emitted = True
            if emitted and self._until_empty:
                await anyio.lowlevel.checkpoint()
            elif clock is None:
                assert self._every is not None
                await anyio.sleep_until(started + self._every)
            else:
                await anyio.sleep(self._until_next(clock))

    async def _fetch_once(self, position: Any) -> list[Positioned]:
        """Call *fetch* once and check what it gave, before anything is emitted."""
        result: Any = self._fetch(position)
        if inspect.isawaitable(result):
            result = await result
        if isinstance(result, AsyncIterable):
            values = [value async for value in result]
        elif isinstance(result, Iterable) and not isinstance(result, str | bytes | dict):
            values = list(result)
        else:
            raise TypeError(
                f"fetch {self.__name__!r} must return an iterable of fg.Positioned items "
                f"(got {reprlib.repr(result)})"
            )
        for value in values:
            if not isinstance(value, Positioned):
                raise TypeError(
                    f"fetch {self.__name__!r} returned {reprlib.repr(value)}; "
                    "it must return fg.Positioned(item, position) items"
                )
        return values

    def _until_next(self, clock: _WallClock) -> float:
        """Seconds until the wake time ``schedule(now)`` returns."""
        assert self._schedule is not None
        now = clock.now()
        wake = self._schedule(now)
        if not isinstance(wake, datetime) or wake.tzinfo is None:
            raise TypeError(
                f"schedule must return a timezone-aware datetime (got {reprlib.repr(wake)} "
                f"for now={now.isoformat()})"
            )
        if wake <= now:
            raise ValueError(
                f"schedule returned {wake.isoformat()}, which is not after "
                f"now={now.isoformat()}; it must return the next wake time"
            )
        return (wake - now).total_seconds()


class _WallClock:
    """Wall-clock time that follows anyio's clock and never goes back.

    Reading ``datetime.now()`` alone would freeze time under a virtual clock;
    following anyio's clock alone would miss the wall clock jumping ahead.
    """

    def __init__(self) -> None:
        self._wall = datetime.now(UTC)
        self._at = anyio.current_time()

    def now(self) -> datetime:
        at = anyio.current_time()
        # Invariant: the result is >= every earlier result.
        self._wall = max(self._wall + timedelta(seconds=at - self._at), datetime.now(UTC))
        self._at = at
        return self._wall
