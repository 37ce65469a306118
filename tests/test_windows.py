"""Time-window sources: consecutive [start, end) windows, resumed from a checkpoint."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import anyio
import pytest

import flowgraph as fg
from flowgraph._policies import wall_time
from flowgraph.testing import VirtualClock

if TYPE_CHECKING:
    from collections.abc import Callable

WEEK = timedelta(days=7)
START = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.fixture(params=["asyncio", "trio"])
def clock(request: pytest.FixtureRequest) -> VirtualClock:
    return VirtualClock(request.param)


@pytest.fixture
def anyio_backend(clock: VirtualClock) -> tuple[str, dict[str, Any]]:
    """Every async test here runs on both backends under virtual time."""
    return clock.anyio_backend


def now() -> datetime:
    """The wall time windows() reads: anyio's clock, so virtual time moves it."""
    return datetime.fromtimestamp(wall_time(), UTC)


async def pull(source: Any, position: Any = None) -> list[fg.Positioned]:
    return [value async for value in source(position)]


def week(n: int) -> fg.Window:
    return fg.Window(START + n * WEEK, START + (n + 1) * WEEK)


async def test_windows_cover_the_range_once_in_order() -> None:
    """Past windows come in order, each positioned at its end; the last is clipped to until."""
    source = fg.windows(start=START, every=WEEK, until=START + timedelta(days=24))
    values = await pull(source)
    assert [v.item for v in values] == [
        *map(week, range(3)),
        fg.Window(START + 3 * WEEK, START + timedelta(days=24)),
    ]
    assert [v.position for v in values] == [v.item.end.isoformat() for v in values]
    assert await pull(source, values[1].position) == values[2:]
    assert await pull(source, values[-1].position) == []


async def test_the_open_window_is_yielded_at_its_start_and_again_next_time() -> None:
    """The window holding now is yielded positioned at its start, so the next pull repeats it."""
    start = now() - timedelta(days=2, hours=12)
    source = fg.windows(start=start, every=timedelta(days=1))
    first = await pull(source)
    assert [v.item.start - start for v in first] == [timedelta(days=n) for n in range(3)]
    assert first[2].item.end > now()  # still open
    assert first[2].position == first[2].item.start.isoformat() == first[1].position
    await anyio.sleep(fg.DAY)
    again = await pull(source, first[2].position)
    assert [v.item for v in again] == [
        first[2].item,
        fg.Window(first[2].item.end, start + timedelta(days=4)),
    ]
    assert again[0].position == again[0].item.end.isoformat()  # complete now


async def test_partial_false_waits_for_a_window_to_end() -> None:
    """With partial=False, only windows that have ended are yielded."""
    start = now() - timedelta(hours=30)
    values = await pull(fg.windows(start=start, every=timedelta(days=1), partial=False))
    assert [v.item for v in values] == [fg.Window(start, start + timedelta(days=1))]


async def test_a_window_not_started_yet_is_left_for_later() -> None:
    """A start in the future yields nothing until it comes."""
    source = fg.windows(start=now() + timedelta(hours=1), every=fg.HOUR)
    assert await pull(source) == []
    await anyio.sleep(fg.HOUR + 1)
    assert len(await pull(source)) == 1


def hours_in(window: fg.Window) -> float:
    """Real hours (aware datetimes in one zone subtract as wall clocks)."""
    return (window.end.timestamp() - window.start.timestamp()) / 3600


async def test_daily_windows_keep_to_local_midnight_across_daylight_saving() -> None:
    """Whole-day windows step in the start's calendar: 24, 23 and 24 hours around DST."""
    zone = ZoneInfo("America/New_York")
    start = datetime(2024, 3, 9, tzinfo=zone)
    values = await pull(fg.windows(start=start, every=fg.DAY, until=start + timedelta(days=3)))
    assert [hours_in(v.item) for v in values] == [24, 23, 24]
    assert {v.item.start.astimezone(zone).time() for v in values} == {datetime.min.time()}
    hours = await pull(fg.windows(start=start, every=6 * fg.HOUR, until=start + timedelta(days=2)))
    # Shorter steps are exact durations: 47 hours in windows of 6, the last clipped to 5.
    assert [hours_in(v.item) for v in hours] == [6] * 7 + [5]


def graph_of(source: Any, seen: list[fg.Window], fail_at: fg.Window | None = None) -> fg.Graph:
    graph = fg.Graph("weekly")

    async def load(window: fg.Window) -> None:
        if window == fail_at:
            raise RuntimeError(f"the API is down for {window.start:%Y-%m-%d}")
        seen.append(window)

    graph.chain(graph.source(source, name="weeks", checkpoint=True), graph.sink(load))
    return graph


async def test_a_restart_resumes_after_the_last_finished_window(database_url: str) -> None:
    """A run that fails at week 5 is resumed at week 5: no week skipped, none loaded twice."""
    source = fg.windows(start=START, every=WEEK, until=START + 10 * WEEK)
    checkpoints = fg.Checkpoints(database_url, every=1)
    seen: list[fg.Window] = []
    with pytest.raises(fg.NodeError, match=r"^node 'load' failed on item Window"):
        await graph_of(source, seen, fail_at=week(5)).run(checkpoints=checkpoints)
    assert seen == [week(n) for n in range(5)]
    await graph_of(source, seen).run(checkpoints=checkpoints)
    assert seen == [week(n) for n in range(10)]
    await graph_of(source, seen).run(checkpoints=checkpoints)
    assert len(seen) == 10  # nothing left


async def test_the_open_week_is_pulled_again_on_the_next_run(database_url: str) -> None:
    """Run weekly: each run loads the weeks since the last, and the open one again."""
    start = now() - timedelta(days=15)
    source = fg.windows(start=start, every=WEEK)
    checkpoints = fg.Checkpoints(database_url, every=1)
    runs: list[list[fg.Window]] = []
    for _ in range(3):
        runs.append([])
        await graph_of(source, runs[-1]).run(checkpoints=checkpoints)
        await anyio.sleep(fg.WEEK)

    def weeks(*ns: int) -> list[fg.Window]:
        return [fg.Window(start + n * WEEK, start + (n + 1) * WEEK) for n in ns]

    assert runs == [weeks(0, 1, 2), weeks(2, 3), weeks(3, 4)]


async def test_poll_pulls_what_is_new_every_hour(database_url: str) -> None:
    """fg.poll(fg.windows(...), every=fg.HOUR): each hour, the hour that ended and the open one."""
    start = now().replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    hour = timedelta(hours=1)
    seen: list[fg.Window] = []
    graph = graph_of(fg.poll(fg.windows(start=start, every=hour), every=fg.HOUR), seen)
    async with fg.open_run(graph, checkpoints=fg.Checkpoints(database_url, interval=600)) as run:
        await anyio.sleep(3.5 * fg.HOUR)
        run.stop()
    hours = [fg.Window(start + n * hour, start + (n + 1) * hour) for n in range(6)]
    # Polls at 0, 1, 2 and 3 hours: each pulls the hour that was open last time, now
    # finished, and the one now open; the first also pulls the two finished before it.
    assert seen == [*hours[:3], *hours[2:4], *hours[3:5], *hours[4:6]]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: fg.windows(start=datetime(2024, 1, 1), every=WEEK),
            r"^start must be a timezone-aware datetime \(got datetime.datetime\(2024, 1, 1, 0, 0\)\)$",
        ),
        (
            lambda: fg.windows(start=START, every=WEEK, until=START),
            r"^until must be after start \(got start=2024-01-01T00:00:00\+00:00, "
            r"until=2024-01-01T00:00:00\+00:00\)$",
        ),
        (
            lambda: fg.windows(start=START, every=WEEK, until=datetime(2025, 1, 1)),
            r"^until must be a timezone-aware datetime or None",
        ),
        (lambda: fg.windows(start=START, every=0), r"^every must be > 0 \(got 0\)$"),
    ],
)
def test_bad_windows_are_refused_at_once(make: Callable[[], object], message: str) -> None:
    """Naive datetimes, an empty range or a zero step are declaration errors."""
    with pytest.raises(fg.GraphError, match=message):
        make()


async def test_a_position_from_elsewhere_is_refused() -> None:
    """A checkpoint that is not an aware ISO string says what it expected."""
    source = fg.windows(start=START, every=WEEK)
    with pytest.raises(TypeError, match=r"^windows\(\) resumes from an ISO 8601 position string"):
        await pull(source, 17)
    with pytest.raises(ValueError, match=r"^windows\(\) cannot resume from '2024-01-08T00:00:00'"):
        await pull(source, "2024-01-08T00:00:00")


def test_windows_is_named_and_reprs_as_its_call() -> None:
    """The source is named windows and its repr is the call that built it."""
    source = fg.windows(start=START, every=WEEK, until=START + WEEK, partial=False)
    assert source.__name__ == "windows"
    assert repr(source) == (
        "windows(start='2024-01-01T00:00:00+00:00', every=604800.0, "
        "until='2024-01-08T00:00:00+00:00', partial=False)"
    )
    graph = fg.Graph("g")
    assert graph.source(source, checkpoint=True).name == "windows"
