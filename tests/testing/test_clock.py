from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import anyio
import pytest

from flowgraph.testing._clock import VirtualClock, virtual_time_backend


@pytest.fixture(params=["asyncio", "trio"])
def clock(request: pytest.FixtureRequest) -> VirtualClock:
    """A fresh virtual clock per test, on each backend."""
    return VirtualClock(request.param)


@pytest.fixture
def anyio_backend(clock: VirtualClock) -> tuple[str, dict[str, Any]]:
    """Run the async tests of this module under the clock above."""
    return clock.anyio_backend


async def test_hour_of_sleep_takes_no_real_time() -> None:
    """An hour of sleep advances virtual time by exactly an hour in well under a second."""
    real_start = time.perf_counter()
    start = anyio.current_time()
    await anyio.sleep(3600)
    assert anyio.current_time() - start == pytest.approx(3600, abs=1e-9)
    assert time.perf_counter() - real_start < 1.0


async def test_time_starts_at_zero_and_matches_clock(clock: VirtualClock) -> None:
    """Virtual time starts at 0 and the clock reads what anyio reads."""
    assert anyio.current_time() == 0.0
    await anyio.sleep(2.5)
    assert clock.current_time() == anyio.current_time() == pytest.approx(2.5)


async def test_timers_fire_in_order_at_their_times() -> None:
    """Concurrent sleepers wake in deadline order, each at its own virtual time."""
    woke: list[tuple[int, float]] = []

    async def sleeper(seconds: int) -> None:
        await anyio.sleep(seconds)
        woke.append((seconds, anyio.current_time()))

    async with anyio.create_task_group() as tg:
        for seconds in [50, 10, 30, 20, 40]:
            tg.start_soon(sleeper, seconds)
    assert [s for s, _ in woke] == [10, 20, 30, 40, 50]
    assert [t for _, t in woke] == pytest.approx([10, 20, 30, 40, 50])


async def test_cancel_scopes_use_virtual_time() -> None:
    """move_on_after and fail_after expire at exact virtual deadlines."""
    with anyio.move_on_after(90) as scope:
        await anyio.sleep_forever()
    assert scope.cancelled_caught
    assert anyio.current_time() == pytest.approx(90)
    with pytest.raises(TimeoutError), anyio.fail_after(timedelta(days=2).total_seconds()):
        await anyio.sleep(timedelta(days=3).total_seconds())
    assert anyio.current_time() == pytest.approx(90 + 2 * 86400)


async def test_jump_moves_time_forward(clock: VirtualClock) -> None:
    """jump() advances virtual time; timers now due fire at the next checkpoint."""
    fired: list[float] = []

    async def sleeper(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        task_status.started()
        await anyio.sleep(100)
        fired.append(anyio.current_time())

    async with anyio.create_task_group() as tg:
        await tg.start(sleeper)
        clock.jump(timedelta(seconds=150))
        assert anyio.current_time() == pytest.approx(150)
    assert fired == [pytest.approx(150)]


async def test_thread_wakes_loop_without_timers() -> None:
    """With no timer pending, the loop still waits for a worker thread to finish."""

    def work() -> int:
        time.sleep(0.01)
        return 42

    assert await anyio.to_thread.run_sync(work) == 42


def test_threshold_lets_threads_finish_before_jumping(backend: str) -> None:
    """With an autojump threshold, a short thread finishes before a long timer fires."""
    name, options = virtual_time_backend(backend, autojump_threshold=0.2)
    finished: list[str] = []

    async def main() -> None:
        async def in_thread() -> None:
            await anyio.to_thread.run_sync(time.sleep, 0.01)
            finished.append("thread")

        async def timer() -> None:
            await anyio.sleep(10)
            finished.append("timer")

        async with anyio.create_task_group() as tg:
            tg.start_soon(in_thread)
            tg.start_soon(timer)

    anyio.run(main, backend=name, backend_options=options)
    assert finished == ["thread", "timer"]


def test_clock_carries_on_across_runs(backend: str) -> None:
    """One clock reused for two runs keeps time monotonic, outside any pytest plugin."""
    clock = VirtualClock(backend)
    name, options = clock.anyio_backend
    anyio.run(anyio.sleep, 60, backend=name, backend_options=options)
    anyio.run(anyio.sleep, 60, backend=name, backend_options=options)
    assert clock.current_time() == pytest.approx(120)


def test_backend_options_shape() -> None:
    """Each backend gets the anyio option that installs its clock."""
    from trio.testing import MockClock

    name, options = virtual_time_backend("trio")
    assert name == "trio"
    assert isinstance(options["clock"], MockClock)
    assert options["clock"].autojump_threshold == 0
    name, options = virtual_time_backend("asyncio")
    assert name == "asyncio"
    assert callable(options["loop_factory"])


def test_repr() -> None:
    """The repr rebuilds the clock."""
    assert repr(VirtualClock("trio")) == "VirtualClock('trio', autojump_threshold=0.0)"
    assert (
        repr(VirtualClock("asyncio", autojump_threshold=0.5))
        == "VirtualClock('asyncio', autojump_threshold=0.5)"
    )


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (
            lambda: VirtualClock("curio"),
            ValueError,
            r"^backend must be 'asyncio' or 'trio' \(got 'curio'\)$",
        ),
        (
            lambda: VirtualClock("trio", autojump_threshold=-1),
            ValueError,
            r"^autojump_threshold must be >= 0 \(got -1\)$",
        ),
        (
            lambda: VirtualClock("asyncio", autojump_threshold="1"),  # type: ignore[arg-type]
            TypeError,
            r"^autojump_threshold must be a number of seconds or a timedelta \(got '1'\)$",
        ),
        (
            lambda: VirtualClock("asyncio").jump(-5),
            ValueError,
            r"^seconds must be >= 0 \(got -5\)$",
        ),
    ],
    ids=["backend", "negative-threshold", "threshold-type", "negative-jump"],
)
def test_validation(make: Any, error: type[Exception], message: str) -> None:
    """Bad arguments are rejected with a message naming the allowed values."""
    with pytest.raises(error, match=message):
        make()


def test_run_gives_any_anyio_code_virtual_time(backend: str) -> None:
    """VirtualClock.run runs a coroutine function under the clock and returns its result."""
    clock = VirtualClock(backend)

    async def day_of_polling(every: float) -> list[float]:
        seen = []
        with anyio.move_on_after(86_400):
            while True:
                await anyio.sleep(every)
                seen.append(anyio.current_time())
        return seen

    real_start = time.perf_counter()
    seen = clock.run(day_of_polling, 3600.0)
    assert seen == [pytest.approx(3600.0 * n) for n in range(1, 24)]
    assert clock.current_time() == pytest.approx(86_400)
    assert time.perf_counter() - real_start < 2
    assert clock.run(anyio.sleep, 1) is None
    assert clock.current_time() == pytest.approx(86_401)


def test_run_raises_what_the_coroutine_raises(backend: str) -> None:
    """An error inside run() propagates unchanged; a virtual timeout fires at its deadline."""

    async def too_slow() -> None:
        with anyio.fail_after(30):
            await anyio.sleep(60)

    clock = VirtualClock(backend)
    with pytest.raises(TimeoutError):
        clock.run(too_slow)
    assert clock.current_time() == pytest.approx(30)
