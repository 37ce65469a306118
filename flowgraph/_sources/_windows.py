"""Time-window sources: ``[start, end)`` windows from a watermark, resumed after a restart.

A scheduled pull ("every week, fetch last week's orders") is a walk over time
windows: :func:`windows` yields them in order as ``fg.Positioned`` items for a
``checkpoint=True`` source, so a restart resumes after the last window every
sink has finished, and the window still open (its end is in the future) is
yielded now and again on the next run, when more of it has happened.

Wall time is read through anyio's clock (``_policies._clock.wall_time``), so
virtual time moves it and weeks of windows run in milliseconds in tests.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple, final

from .._core._exceptions import GraphError
from .._core._nodes import Positioned
from .._core._validate import to_seconds
from .._policies._clock import wall_time

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = ["Window", "windows"]

_DAY = timedelta(days=1)


class Window(NamedTuple):
    """A time window ``[start, end)`` that :func:`windows` yields; unpacks as ``start, end``.

    Added in 0.2.
    """

    start: datetime
    end: datetime


def windows(
    *,
    start: datetime,
    every: float | timedelta,
    until: datetime | None = None,
    partial: bool = True,
) -> _Windows:
    """Build a checkpointed source of consecutive time windows ``[start, end)``.

    Use it as ``graph.source(fg.windows(start=..., every=timedelta(days=7)),
    name="weeks", checkpoint=True)``: the source yields :class:`Window` items
    from *start* (or from where the last run's checkpoint left off) up to now,
    each ``fg.Positioned`` so the checkpoint advances over finished windows:

    - a window whose end has passed is complete; its position is its end, so
      once every sink has finished it, no later run yields it again;
    - the window holding *now* is incomplete: with *partial* (the default) it
      is yielded with its end in the future, positioned at its start, so the
      next run yields it again (re-pulling what arrived since); without
      *partial* it waits until it is complete;
    - windows that have not started are left for a later run.

    With *until*, the last window ends there (clipped), and the source yields
    nothing beyond it. Without it, the source follows the wall clock: wrap it
    in ``fg.poll(fg.windows(...), every=fg.HOUR)`` for a daemon that pulls
    what is new every hour; each poll resumes from the last position emitted.

    A window is *every* long. When *every* is a whole number of days, windows
    step in *start*'s local calendar, so daily windows from a local midnight
    stay on local midnights (23 or 25 hours long across daylight-saving
    changes); shorter steps are exact durations.

    Cancellation stops the source between windows; the checkpoint covers only
    windows every sink has finished, so nothing is skipped.

    Args:
        start: the start of the first window; timezone-aware.
        every: each window's length, seconds or a timedelta (``fg.DAY``, ``fg.WEEK``).
        until: where the last window ends; timezone-aware; ``None``: follow now.
        partial: yield the window that has not ended yet.

    Returns:
        A source function of the resume position (an ISO 8601 string, or ``None``).

    Raises:
        GraphError: if *start* or *until* is not a timezone-aware datetime, *until*
            is not after *start*, or *every* is not a duration > 0.

    Added in 0.2.
    """
    if not isinstance(start, datetime) or start.tzinfo is None:
        raise GraphError(f"start must be a timezone-aware datetime (got {start!r})")
    if until is not None:
        if not isinstance(until, datetime) or until.tzinfo is None:
            raise GraphError(f"until must be a timezone-aware datetime or None (got {until!r})")
        if until <= start:
            raise GraphError(
                f"until must be after start (got start={start.isoformat()}, "
                f"until={until.isoformat()})"
            )
    step = timedelta(seconds=to_seconds("every", every))
    return _Windows(start, step, until, bool(partial))


@final
class _Windows:
    """The source :func:`windows` returns: an async generator function of the resume position."""

    __name__ = "windows"

    def __init__(
        self, start: datetime, every: timedelta, until: datetime | None, partial: bool
    ) -> None:
        self._start = start
        self._every = every
        self._until = until
        self._partial = partial
        self._local = every % _DAY == timedelta(0)

    def __repr__(self) -> str:
        until = "" if self._until is None else f", until={self._until.isoformat()!r}"
        partial = "" if self._partial else ", partial=False"
        return (
            f"windows(start={self._start.isoformat()!r}, "
            f"every={self._every.total_seconds()!r}{until}{partial})"
        )

    async def __call__(self, position: Any = None) -> AsyncIterator[Positioned]:
        begin = self._resume(position)
        until = self._until
        while until is None or begin < until:
            now = datetime.fromtimestamp(wall_time(), UTC)
            if begin >= now:
                return
            end = self._after(begin)
            if until is not None and end > until:
                end = until
            complete = end <= now
            if not complete and not self._partial:
                return
            yield Positioned(Window(begin, end), (end if complete else begin).isoformat())
            if not complete:
                return
            begin = end

    def _after(self, begin: datetime) -> datetime:
        """The end of the window starting at *begin*."""
        if self._local:
            # Aware arithmetic in the start's zone keeps wall time: midnight + 1 day = midnight.
            return begin + self._every
        return (begin.astimezone(UTC) + self._every).astimezone(self._start.tzinfo)

    def _resume(self, position: Any) -> datetime:
        """Where to start: the checkpointed position, or *start* the first time."""
        if position is None:
            return self._start
        if not isinstance(position, str):
            raise TypeError(
                f"windows() resumes from an ISO 8601 position string (got {position!r}); "
                "was this checkpoint written by another source?"
            )
        resumed = datetime.fromisoformat(position)
        if resumed.tzinfo is None:
            raise ValueError(f"windows() cannot resume from {position!r}: it has no time zone")
        return max(resumed.astimezone(self._start.tzinfo), self._start)
