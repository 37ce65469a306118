"""The arithmetic of rate budgets: bounded sliding logs and calendar windows across DST."""

from __future__ import annotations

import random
from collections import deque
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowgraph._policies import DAY, HOUR, MINUTE, WEEK
from flowgraph._policies._ledger import (
    MAX_ENTRIES,
    CalendarWindow,
    Ledger,
    SlidingLog,
    Window,
    calendar_bounds,
    fits_calendar,
)

NEW_YORK = ZoneInfo("America/New_York")


def local(day: date, hour: int = 0, zone: ZoneInfo = NEW_YORK) -> float:
    return datetime.combine(day, time(hour), zone).timestamp()


@pytest.mark.parametrize(
    ("day", "hours"),
    [(date(2024, 3, 9), 24), (date(2024, 3, 10), 23), (date(2024, 11, 3), 25)],
    ids=["plain", "spring-forward", "fall-back"],
)
def test_a_calendar_day_is_the_local_day(day: date, hours: int) -> None:
    """A day window runs from local midnight to the next, 23 or 25 hours across DST."""
    for hour in (0, 1, 12, 23):
        start, end = calendar_bounds(local(day, hour), DAY, NEW_YORK)
        assert start == local(day)
        assert end == local(day + timedelta(days=1))
        assert end - start == hours * HOUR


def test_calendar_hours_follow_local_hours_across_spring_forward() -> None:
    """On the 23-hour day, hour windows still start on local whole hours."""
    day = date(2024, 3, 10)
    starts = []
    at = local(day)
    while at < local(day + timedelta(days=1)):
        start, end = calendar_bounds(at, HOUR, NEW_YORK)
        starts.append(datetime.fromtimestamp(start, NEW_YORK).time())
        at = end
    assert len(starts) == 23
    assert all(t.minute == 0 and t.second == 0 for t in starts)
    assert time(2) not in starts  # 02:00 never happened that night


def test_a_calendar_week_starts_on_monday() -> None:
    """A week window runs from Monday local midnight to the next Monday."""
    wednesday = datetime(2024, 11, 6, 15, tzinfo=NEW_YORK).timestamp()
    start, end = calendar_bounds(wednesday, WEEK, NEW_YORK)
    assert datetime.fromtimestamp(start, NEW_YORK) == datetime(2024, 11, 4, tzinfo=NEW_YORK)
    assert datetime.fromtimestamp(end, NEW_YORK) == datetime(2024, 11, 11, tzinfo=NEW_YORK)


def test_a_calendar_window_resets_at_its_end() -> None:
    """Spent units count until the window ends, then the next window starts empty."""
    window = CalendarWindow(3, DAY, UTC)
    noon = datetime(2024, 5, 1, 12, tzinfo=UTC).timestamp()
    window.take(noon, 3)
    assert window.wait(noon + HOUR, 1) == 11 * HOUR
    assert window.wait(noon + 12 * HOUR, 3) == 0
    window.take(noon + 12 * HOUR, 3)
    assert window.wait(noon + 13 * HOUR, 1) == 23 * HOUR


def test_which_periods_fit_a_calendar() -> None:
    """Calendar windows divide a day, or are a week."""
    assert all(fits_calendar(per) for per in (1, MINUTE, 15 * MINUTE, HOUR, 6 * HOUR, DAY, WEEK))
    assert not any(fits_calendar(per) for per in (7, 7 * HOUR, 2 * DAY, 0.7))


def test_a_small_log_keeps_every_call_exactly() -> None:
    """Up to MAX_ENTRIES units per window, each call is an entry: waits are exact."""
    log = SlidingLog(3, 10.0)
    for at in (0.0, 1.0, 2.0):
        assert log.wait(at, 1) == 0
        log.take(at, 1)
    assert log.wait(2.5, 1) == pytest.approx(7.5)
    assert log.wait(2.5, 2) == pytest.approx(8.5)
    assert log.wait(10.0, 1) == 0
    assert len(log.entries) == 2  # the entry of 0.0 expired


@settings(max_examples=20)
@given(seed=st.integers(0, 2**32), heavy=st.integers(1, 50))
def test_a_big_log_stays_bounded_and_never_lets_a_call_through_early(seed: int, heavy: int) -> None:
    """Above MAX_ENTRIES units a window keeps ~MAX_ENTRIES entries, and only ever delays."""
    rng = random.Random(seed)
    log = SlidingLog(5000, 10.0)
    live: deque[tuple[float, int]] = deque()  # the exact log of the last 10 s
    spent = 0  # the units in live
    at = 0.0
    for _ in range(3000):
        at += rng.uniform(0, 0.01)
        cost = rng.choice((1, 1, 2, heavy))
        while (delay := log.wait(at, cost)) > 0:
            at += delay
        while live and live[0][0] + 10.0 <= at:
            spent -= live.popleft()[1]
        assert spent + cost <= 5000, "the log let a call through early"
        log.take(at, cost)
        live.append((at, cost))
        spent += cost
        assert len(log.entries) <= MAX_ENTRIES + 2
        assert log.used >= spent


def test_a_busy_window_holds_about_max_entries() -> None:
    """2,000 live calls (one every 5 ms over 10 s) fit in at most MAX_ENTRIES + 2 entries."""
    log = SlidingLog(5000, 10.0)
    most = 0
    for n in range(4000):
        assert log.wait(n * 0.005, 1) == 0
        log.take(n * 0.005, 1)
        most = max(most, len(log.entries))
    assert log.used == 2000
    assert 500 < most <= MAX_ENTRIES + 2


def test_merged_entries_hold_calls_back_by_at_most_a_slice() -> None:
    """Calls within per / MAX_ENTRIES share an entry, stamped at the later call."""
    log = SlidingLog(10_000, 1024.0)  # one slice is one second
    log.take(0.0, 1)
    log.take(0.5, 1)
    log.take(1.5, 1)
    assert [entry[:2] for entry in log.entries] == [[0.0, 0.5], [1.5, 1.5]]
    log.take(3.0, 9_997)
    # The call of 0.0 expires with its entry at 1024.5, half a second late: under one slice.
    assert log.wait(1024.2, 1) == pytest.approx(0.3)
    assert log.wait(1024.5, 2) == 0


def test_a_ledger_round_trips_through_its_dump() -> None:
    """What a ledger dumps (to a store), a fresh ledger loads back and continues from."""
    windows: list[Window] = [SlidingLog(5, 60.0), CalendarWindow(100, DAY, UTC)]
    ledger = Ledger(["0:60.0", "1:86400.0:UTC"], windows)
    for at in (0.0, 1.0, 2.0):
        ledger.take(at, [1, 20])
    again = Ledger(
        ["0:60.0", "1:86400.0:UTC"], [SlidingLog(5, 60.0), CalendarWindow(100, DAY, UTC)]
    )
    again.load(ledger.dump())
    assert again.dump() == ledger.dump()
    assert again.wait(3.0, [1, 41]) == DAY - 3.0  # the day's 100 units: 60 spent
    again.load(None)  # no state yet: nothing changes
    assert again.dump() == ledger.dump()
