from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowgraph._core._exceptions import AttemptsExhausted, GraphError
from flowgraph._core._policy import Call, Policy, Timeout
from flowgraph._policies import Retry
from flowgraph.testing._clock import virtual_time_backend

if TYPE_CHECKING:
    from collections.abc import Callable


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """Every async test here runs on both backends under virtual time."""
    return virtual_time_backend(request.param)


@dataclass
class Counters:
    retries: int = 0


@dataclass
class StubNode:
    name: str = "fetch"
    counters: Counters = field(default_factory=Counters)


@dataclass
class Response:
    headers: dict[str, str]


class HTTPStatusError(Exception):
    """Shaped like httpx.HTTPStatusError: the response hangs off the exception."""

    def __init__(self, retry_after: str) -> None:
        super().__init__(f"429 Too Many Requests (Retry-After: {retry_after})")
        self.response = Response({"Retry-After": retry_after})


class Flaky:
    """Fails with the given errors in turn, then returns ``"ok"``; records call times."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.times: list[float] = []

    async def __call__(self, item: object = None) -> str:
        self.times.append(anyio.current_time())
        if self.errors:
            raise self.errors.pop(0)
        return "ok"

    @property
    def gaps(self) -> list[float]:
        return [b - a for a, b in zip(self.times, self.times[1:], strict=False)]


def compose(call: Call, node: StubNode, *policies: Policy) -> Call:
    """Apply policies as the engine does: the first listed is the outermost."""
    for policy in reversed(policies):
        call = policy.wrap(call, node)
    return call


async def test_retries_until_success_and_counts() -> None:
    """Retryable errors are retried; each retry bumps the node's retries counter."""
    node = StubNode()
    fn = Flaky(OSError("reset"), OSError("reset"))
    call = Retry(attempts=5).wrap(fn, node)
    assert await call(1) == "ok"
    assert len(fn.times) == 3
    assert node.counters.retries == 2


async def test_gives_up_with_attempts_exhausted() -> None:
    """After the last attempt the last error is reported with the attempt count."""
    node = StubNode()
    errors = [OSError(f"reset {n}") for n in range(4)]
    call = Retry(attempts=4).wrap(Flaky(*errors), node)
    with pytest.raises(AttemptsExhausted) as info:
        await call(1)
    assert info.value.error is errors[-1]
    assert info.value.attempts == 4
    assert info.value.__cause__ is errors[-1]
    assert node.counters.retries == 3


async def test_non_retryable_error_propagates_at_once() -> None:
    """An error outside on= propagates itself after one attempt, without retries."""
    node = StubNode()
    fn = Flaky(ValueError("bad item"))
    with pytest.raises(ValueError, match=r"^bad item$"):
        await Retry(attempts=5, on=OSError).wrap(fn, node)(1)
    assert len(fn.times) == 1
    assert node.counters.retries == 0


async def test_non_retryable_after_retries_reports_attempts() -> None:
    """A non-retryable error on a later attempt still reports how many attempts ran."""
    node = StubNode()
    error = ValueError("bad page")
    call = Retry(attempts=5, on=(OSError,)).wrap(Flaky(OSError(), error), node)
    with pytest.raises(AttemptsExhausted) as info:
        await call(1)
    assert (info.value.error, info.value.attempts) == (error, 2)


async def test_predicate_decides_what_is_retried() -> None:
    """on= may be a predicate on the error."""
    node = StubNode()
    retry = Retry(attempts=5, on=lambda exc: "transient" in str(exc))
    fn = Flaky(RuntimeError("transient"), RuntimeError("fatal"))
    with pytest.raises(AttemptsExhausted) as info:
        await retry.wrap(fn, node)(1)
    assert str(info.value.error) == "fatal"
    assert len(fn.times) == 2


async def test_base_exceptions_are_never_retried() -> None:
    """Exceptions outside Exception (cancellation, KeyboardInterrupt...) propagate at once."""

    class Fatal(BaseException):
        pass

    fn = Flaky(Fatal())
    with pytest.raises(Fatal):
        await Retry(attempts=5).wrap(fn, StubNode())(1)
    assert len(fn.times) == 1


async def test_cancellation_during_attempt_is_not_retried() -> None:
    """Cancelling a retried call stops it; the call is not attempted again."""
    calls: list[float] = []

    async def hang(item: object) -> None:
        calls.append(anyio.current_time())
        await anyio.sleep_forever()

    with anyio.move_on_after(5) as scope:
        await Retry(attempts=5).wrap(hang, StubNode())(1)
    assert scope.cancelled_caught
    assert calls == [0.0]


async def test_cancellation_during_backoff_stops_retrying() -> None:
    """Cancellation in a backoff sleep propagates; no further attempt starts."""
    fn = Flaky(*[OSError() for _ in range(5)])
    retry = Retry(attempts=5, initial=100, multiplier=1, seed=1)
    with anyio.move_on_after(0.001) as scope:
        await retry.wrap(fn, StubNode())(1)
    assert scope.cancelled_caught
    assert len(fn.times) == 1


@given(
    seed=st.integers(0, 2**32),
    initial=st.floats(0.01, 10),
    multiplier=st.floats(1, 4),
    cap=st.floats(0.01, 60),
)
async def test_backoff_lies_within_bounds(
    seed: int, initial: float, multiplier: float, cap: float
) -> None:
    """Each wait lies in [0, min(cap, initial * multiplier**n)] (full jitter)."""
    fn = Flaky(*[OSError() for _ in range(7)])
    await Retry(attempts=8, initial=initial, multiplier=multiplier, cap=cap, seed=seed).wrap(
        fn, StubNode()
    )(1)
    for n, gap in enumerate(fn.gaps):
        assert 0 <= gap <= min(cap, initial * multiplier**n) + 1e-6


async def test_backoff_uses_full_range() -> None:
    """Full jitter spreads waits over the whole range, not only its top."""
    fn = Flaky(*[OSError() for _ in range(200)])
    await Retry(attempts=201, initial=1, multiplier=1, seed=7).wrap(fn, StubNode())(1)
    assert min(fn.gaps) < 0.1
    assert max(fn.gaps) > 0.9


async def test_seeded_backoff_is_reproducible() -> None:
    """The same seed and node name give the same waits; another node name does not."""

    async def gaps(retry: Retry, name: str) -> list[float]:
        fn = Flaky(*[OSError() for _ in range(5)])
        await retry.wrap(fn, StubNode(name=name))(1)
        return fn.gaps

    retry = Retry(attempts=6, initial=1, seed=42)
    first = await gaps(retry, "fetch")
    assert await gaps(Retry(attempts=6, initial=1, seed=42), "fetch") == pytest.approx(first)
    assert await gaps(retry, "parse") != pytest.approx(first)


async def test_retry_after_seconds_overrides_backoff() -> None:
    """A Retry-After of delta-seconds replaces the computed wait."""
    fn = Flaky(HTTPStatusError("7"), HTTPStatusError(" 2 "))
    assert await Retry(attempts=3, initial=0.01).wrap(fn, StubNode())(1) == "ok"
    assert fn.gaps == pytest.approx([7, 2])


async def test_retry_after_http_date_overrides_backoff() -> None:
    """A Retry-After HTTP-date waits until that wall-clock moment."""
    when = datetime.now(UTC) + timedelta(seconds=30)
    fn = Flaky(HTTPStatusError(format_datetime(when, usegmt=True)))
    await Retry(attempts=2, initial=0.01).wrap(fn, StubNode())(1)
    assert 28.5 <= fn.gaps[0] <= 30


async def test_retry_after_in_the_past_waits_nothing() -> None:
    """An HTTP-date already past means retry at once."""
    fn = Flaky(HTTPStatusError("Wed, 21 Oct 2015 07:28:00 GMT"))
    await Retry(attempts=2, initial=5).wrap(fn, StubNode())(1)
    assert fn.gaps == [0]


async def test_retry_after_is_capped() -> None:
    """max_retry_after bounds what a server may impose."""
    fn = Flaky(HTTPStatusError("86400"))
    await Retry(attempts=2, max_retry_after=timedelta(seconds=10)).wrap(fn, StubNode())(1)
    assert fn.gaps == [10]


@pytest.mark.parametrize("header", ["soon", "", "-5", "nan", "inf", "1e3", "Wed, 99 Foo 2015"])
async def test_malformed_retry_after_falls_back_to_backoff(header: str) -> None:
    """A header that is neither delta-seconds nor an HTTP-date is ignored."""
    retry = Retry(attempts=2, initial=5, seed=3)
    plain, with_header = Flaky(OSError()), Flaky(HTTPStatusError(header))
    await retry.wrap(plain, StubNode())(1)
    await retry.wrap(with_header, StubNode())(1)
    assert with_header.gaps == plain.gaps
    assert 0 < plain.gaps[0] <= 5


async def test_retry_after_found_case_insensitively_and_as_bytes() -> None:
    """Header lookup tolerates lower-case keys and byte values."""
    error = HTTPStatusError("x")
    error.response.headers = {"retry-after": b"4"}  # type: ignore[dict-item]
    fn = Flaky(error)
    await Retry(attempts=2, initial=0.01).wrap(fn, StubNode())(1)
    assert fn.gaps == [4]


async def test_attempt_timeout_cancels_hung_call_and_retries() -> None:
    """A hung attempt is cancelled after attempt_timeout and retried."""
    node = StubNode()
    starts: list[float] = []

    async def hangs_once(item: object) -> str:
        starts.append(anyio.current_time())
        if len(starts) == 1:
            await anyio.sleep_forever()
        return "ok"

    retry = Retry(attempts=3, attempt_timeout=5, initial=1)
    assert await retry.wrap(hangs_once, node)(1) == "ok"
    assert 5 <= starts[1] - starts[0] <= 6
    assert node.counters.retries == 1


async def test_attempt_timeout_is_retried_whatever_on_says() -> None:
    """Timed-out attempts are retried even when on= names other errors, then reported."""

    async def hang(item: object) -> None:
        await anyio.sleep_forever()

    retry = Retry(attempts=2, attempt_timeout=timedelta(seconds=5), on=OSError)
    with pytest.raises(AttemptsExhausted) as info:
        await retry.wrap(hang, StubNode())(1)
    assert info.value.attempts == 2
    assert isinstance(info.value.error, TimeoutError)
    assert str(info.value.error) == "attempt 2 timed out after 5 s"


async def test_deadline_stops_retrying() -> None:
    """No attempt starts, and no wait is begun, past the deadline."""
    fn = Flaky(*[OSError() for _ in range(1000)])
    retry = Retry(attempts=None, deadline=60, initial=1, multiplier=2, cap=8, seed=5)
    with pytest.raises(AttemptsExhausted) as info:
        await retry.wrap(fn, StubNode())(1)
    assert info.value.attempts == len(fn.times) > 3
    assert fn.times[-1] - fn.times[0] < 60
    assert anyio.current_time() - fn.times[0] < 60


async def test_deadline_and_attempts_first_one_wins() -> None:
    """With both limits set, whichever is reached first stops the retries."""
    fn = Flaky(*[OSError() for _ in range(10)])
    with pytest.raises(AttemptsExhausted) as info:
        await Retry(attempts=3, deadline=3600).wrap(fn, StubNode())(1)
    assert info.value.attempts == 3


async def test_call_outside_a_graph() -> None:
    """retry.call(fn, *args) retries a plain coroutine function and returns its result."""
    attempts: list[int] = []

    async def add(a: int, b: int) -> int:
        attempts.append(a)
        if len(attempts) < 3:
            raise ConnectionError("refused")
        return a + b

    assert await Retry(attempts=3, seed=1).call(add, 2, 3) == 5
    assert len(attempts) == 3


async def test_call_raises_last_error_itself_with_a_note() -> None:
    """Outside a graph, giving up raises the last error, noting the attempt count."""
    error = ConnectionError("refused")
    fn = Flaky(ConnectionError(), error)
    with pytest.raises(ConnectionError) as info:
        await Retry(attempts=2).call(fn)
    assert info.value is error
    assert info.value.__notes__ == ["flowgraph.Retry gave up after 2 attempts"]


async def test_timeout_bounds_one_call() -> None:
    """Timeout cancels a call that overruns and names the node."""

    async def hang(item: object) -> None:
        await anyio.sleep_forever()

    with pytest.raises(TimeoutError, match=r"^node 'fetch' timed out after 2.5 s$"):
        await Timeout(2.5).wrap(hang, StubNode())(1)
    assert anyio.current_time() == pytest.approx(2.5)


async def test_timeout_outside_retry_bounds_the_total() -> None:
    """[Timeout, Retry]: the timeout covers every attempt and backoff together."""
    fn = Flaky(*[OSError() for _ in range(1000)])
    call = compose(fn, StubNode(), Timeout(30), Retry(attempts=1000, initial=2, multiplier=1))
    with pytest.raises(TimeoutError):
        await call(1)
    assert anyio.current_time() == pytest.approx(30)
    assert len(fn.times) > 10


async def test_timeout_inside_retry_bounds_each_attempt() -> None:
    """[Retry, Timeout]: each attempt is bounded and a timed-out attempt is retried."""
    node = StubNode()
    starts: list[float] = []

    async def slow_once(item: object) -> str:
        starts.append(anyio.current_time())
        if len(starts) == 1:
            await anyio.sleep(3600)
        return "ok"

    call = compose(slow_once, node, Retry(attempts=2, initial=1), Timeout(10))
    assert await call(1) == "ok"
    assert 10 <= starts[1] <= 11
    assert node.counters.retries == 1


async def test_timeout_passes_results_through() -> None:
    """A call that finishes in time returns its result unchanged."""
    assert await Timeout(1).wrap(Flaky(), StubNode())(1) == "ok"


def test_policies_satisfy_the_protocol() -> None:
    """Retry and Timeout are engine policies."""
    assert isinstance(Retry(), Policy)
    assert isinstance(Timeout(1), Policy)


def test_policies_are_frozen_values() -> None:
    """Policies are immutable, comparable and hashable; durations are stored as seconds."""
    retry = Retry(attempts=5, deadline=timedelta(minutes=2), attempt_timeout=timedelta(0, 3))
    assert (retry.deadline, retry.attempt_timeout) == (120.0, 3.0)
    assert retry == Retry(attempts=5, deadline=120, attempt_timeout=3)
    assert hash(retry) == hash(Retry(attempts=5, deadline=120.0, attempt_timeout=3.0))
    assert Timeout(timedelta(seconds=5)) == Timeout(5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        retry.attempts = 3  # type: ignore[misc]


def is_transient(exc: Exception) -> bool:
    return isinstance(exc, OSError)


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (Retry(), "Retry()"),
        (Retry(attempts=5, seed=3), "Retry(attempts=5, seed=3)"),
        (Retry(attempts=None, deadline=60), "Retry(attempts=None, deadline=60.0)"),
        (
            Retry(initial=0.5, multiplier=3, cap=10, max_retry_after=0, attempt_timeout=2),
            "Retry(initial=0.5, multiplier=3.0, cap=10.0, attempt_timeout=2.0, "
            "max_retry_after=0.0)",
        ),
        (Retry(on=OSError), "Retry(on=OSError)"),
        (Retry(on=(OSError,)), "Retry(on=(OSError,))"),
        (Retry(on=(OSError, TimeoutError)), "Retry(on=(OSError, TimeoutError))"),
        (Retry(on=is_transient), f"Retry(on={__name__}.is_transient)"),
        (Timeout(5), "Timeout(5.0)"),
    ],
)
def test_repr_rebuilds_the_policy(policy: object, expected: str) -> None:
    """The repr is the call that builds the policy, listing only non-defaults."""
    assert repr(policy) == expected


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: Retry(attempts=0), GraphError, r"^attempts must be >= 1 \(got 0\)$"),
        (
            lambda: Retry(attempts=2.5),  # type: ignore[arg-type]
            TypeError,
            r"^attempts must be an int or None \(got 2.5\)$",
        ),
        (
            lambda: Retry(attempts=None),
            GraphError,
            r"^attempts and deadline cannot both be None \(it would never give up\)$",
        ),
        (lambda: Retry(deadline=0), GraphError, r"^deadline must be > 0 \(got 0\)$"),
        (
            lambda: Retry(deadline=timedelta(seconds=-1)),
            GraphError,
            r"^deadline must be > 0 \(got datetime.timedelta\(days=-1, seconds=86399\)\)$",
        ),
        (lambda: Retry(initial=-1), GraphError, r"^initial must be > 0 \(got -1\)$"),
        (lambda: Retry(cap=float("inf")), GraphError, r"^cap must be finite \(got inf\)$"),
        (lambda: Retry(cap=float("nan")), GraphError, r"^cap must be > 0 \(got nan\)$"),
        (lambda: Retry(multiplier=0.5), GraphError, r"^multiplier must be >= 1 \(got 0.5\)$"),
        (lambda: Retry(attempt_timeout=0), GraphError, r"^attempt_timeout must be > 0 \(got 0\)$"),
        (
            lambda: Retry(max_retry_after=-1),
            GraphError,
            r"^max_retry_after must be >= 0 \(got -1\)$",
        ),
        (
            lambda: Retry(initial="1s"),  # type: ignore[arg-type]
            TypeError,
            r"^initial must be a number of seconds or a timedelta \(got '1s'\)$",
        ),
        (
            lambda: Retry(seed="x"),  # type: ignore[arg-type]
            TypeError,
            r"^seed must be an int or None \(got 'x'\)$",
        ),
        (
            lambda: Retry(on=KeyboardInterrupt),  # type: ignore[arg-type]
            GraphError,
            r"^on must be Exception subclasses or a predicate \(exc\) -> bool "
            r"\(got <class 'KeyboardInterrupt'>\); "
            r"cancellation, KeyboardInterrupt and SystemExit are never retried$",
        ),
        (lambda: Retry(on=()), GraphError, r"^on must be Exception subclasses .*$"),
        (lambda: Timeout(0), GraphError, r"^seconds must be > 0 \(got 0\)$"),
    ],
)
def test_validation(make: Callable[[], object], error: type[Exception], message: str) -> None:
    """Out-of-range settings fail at declaration with a message saying what is allowed."""
    with pytest.raises(error, match=message):
        make()


def test_graph_errors_are_value_errors() -> None:
    """Declaration errors can also be caught as ValueError."""
    with pytest.raises(ValueError, match=r"^attempts must be >= 1 \(got -1\)$"):
        Retry(attempts=-1)
