"""Policies on real nodes, in virtual time: rates, retries, Retry-After, timeouts, limits."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

import flowgraph as fg
from flowgraph.testing import virtual_time_backend


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """Every test here runs in virtual time: minutes of waiting take milliseconds."""
    return virtual_time_backend(request.param)


def max_in_any_window(times: list[float], window: float) -> int:
    """The most calls that started within any interval of length *window*."""
    times = sorted(times)
    worst, first = 0, 0
    for last, t in enumerate(times):
        while t - times[first] >= window - 1e-9:
            first += 1
        worst = max(worst, last - first + 1)
    return worst


async def counting_sink(x: Any) -> None:
    pass


async def run_two_nodes_sharing(
    fn: Callable[[int], Awaitable[int]], items: int, **options: Any
) -> None:
    """Run ``range(items)`` through two nodes ``a`` and ``b`` of *fn*, both given *options*."""
    g = fg.Graph("g")
    src = g.source(range(items), name="src")
    a = g.transform(fn, name="a", **options)
    b = g.transform(fn, name="b", **options)
    g.connect(src, a, b)
    g.connect(a, g.sink(counting_sink, name="sa"))
    g.connect(b, g.sink(counting_sink, name="sb"))
    await g.run()


async def test_node_rate_limit_paces_a_thousand_items_over_a_hundred_seconds() -> None:
    """rate=Rate(10, per=1) over 1,000 items takes 100 s and never exceeds 10 in any second."""
    calls: list[float] = []

    async def fetch(x: int) -> int:
        calls.append(anyio.current_time())
        return x

    g = fg.Graph("g")
    g.chain(
        g.source(range(1000), name="src"),
        g.transform(fetch, workers=16, rate=fg.Rate(10, per=1.0)),
        g.sink(counting_sink),
    )
    started = anyio.current_time()
    result = await g.run()
    assert result.statistics["fetch"].items_out == 1000
    assert 98.9 <= anyio.current_time() - started <= 101
    assert max_in_any_window(calls, 1.0) == 10


async def test_two_nodes_sharing_a_limiter_never_exceed_it_together() -> None:
    """One RateLimiter with two windows, shared by two nodes, holds for their sum."""
    calls: list[float] = []
    api = fg.RateLimiter(fg.Rate(5, per=1.0), fg.Rate(20, per=10.0))

    async def call_api(x: int) -> int:
        calls.append(anyio.current_time())
        return x

    await run_two_nodes_sharing(call_api, 30, workers=4, rate=api)
    assert len(calls) == 60
    assert max_in_any_window(calls, 1.0) <= 5
    assert max_in_any_window(calls, 10.0) <= 20


class FakeResponse:
    def __init__(self, retry_after: str) -> None:
        self.headers = {"Retry-After": retry_after}


class TooManyRequests(Exception):
    def __init__(self, retry_after: str) -> None:
        super().__init__("429")
        self.response = FakeResponse(retry_after)


async def test_retry_after_sets_the_wait_between_attempts() -> None:
    """A 429 with Retry-After: 30 makes the next attempt wait exactly 30 s."""
    attempts: list[float] = []

    async def fetch(x: int) -> int:
        attempts.append(anyio.current_time())
        if len(attempts) < 3:
            raise TooManyRequests("30")
        return x

    g = fg.Graph("g")
    g.chain(
        g.source([1], name="src"),
        g.transform(fetch, retry=fg.Retry(attempts=5, initial=0.1)),
        g.sink(counting_sink),
    )
    result = await g.run()
    assert [round(b - a, 6) for a, b in itertools.pairwise(attempts)] == [30, 30]
    assert result.statistics["fetch"].retries == 2


async def test_backoff_waits_stay_within_the_configured_bounds() -> None:
    """Full-jitter waits lie in [0, min(cap, initial * multiplier**n)]."""
    attempts: list[float] = []

    async def always_fails(x: int) -> int:
        attempts.append(anyio.current_time())
        raise ConnectionError("down")

    g = fg.Graph("g")
    g.chain(
        g.source([1], name="src"),
        g.transform(
            always_fails, retry=fg.Retry(attempts=6, initial=1, multiplier=2, cap=8, seed=3)
        ),
        g.sink(counting_sink),
    )
    with pytest.raises(
        fg.NodeError, match=r"after 6 attempts; last error: ConnectionError: down$"
    ) as info:
        await g.run()
    assert info.value.attempts == 6
    waits = [b - a for a, b in itertools.pairwise(attempts)]
    for n, wait in enumerate(waits):
        assert 0 <= wait <= min(8, 1 * 2**n) + 1e-9


async def test_attempt_timeout_cancels_a_hung_call_and_retries_it() -> None:
    """A call that hangs is cancelled after attempt_timeout and the retry succeeds."""
    calls: Counter[int] = Counter()

    async def sometimes_hangs(x: int) -> int:
        calls[x] += 1
        if calls[x] == 1:
            await anyio.sleep_forever()
        return x

    g = fg.Graph("g")
    got: list[int] = []

    async def sink(x: int) -> None:
        got.append(x)

    g.chain(
        g.source(range(5), name="src"),
        g.transform(
            sometimes_hangs,
            workers=5,
            retry=fg.Retry(attempts=2, attempt_timeout=60, initial=0.5),
        ),
        g.sink(sink),
    )
    started = anyio.current_time()
    result = await g.run()
    assert sorted(got) == list(range(5))
    assert result.statistics["sometimes_hangs"].retries == 5
    assert 60 <= anyio.current_time() - started < 62


async def test_node_timeout_bounds_all_attempts_together() -> None:
    """timeout= on the node stops an item that would keep retrying past it."""

    async def always_fails(x: int) -> int:
        raise ConnectionError("down")

    g = fg.Graph("g")
    g.chain(
        g.source([1], name="src"),
        g.transform(
            always_fails,
            retry=fg.Retry(attempts=1000, initial=10, cap=10, seed=1),
            timeout=100,
        ),
        g.sink(counting_sink),
    )
    started = anyio.current_time()
    with pytest.raises(
        fg.NodeError, match=r"TimeoutError: node 'always_fails' timed out after 100 s$"
    ):
        await g.run()
    assert anyio.current_time() - started == pytest.approx(100)


async def test_shared_limit_caps_concurrency_across_nodes() -> None:
    """Two nodes sharing Limit(3) never run more than 3 calls at once together."""
    running = peak = 0
    db = fg.Limit(3)

    async def query(x: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await anyio.sleep(1)
        running -= 1
        return x

    await run_two_nodes_sharing(query, 20, workers=8, limit=db)
    assert peak == 3
