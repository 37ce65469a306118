"""Retry with exponential backoff and full jitter, honouring ``Retry-After``.

Retry reads time only through anyio (``anyio.current_time``,
``anyio.sleep``, cancel scopes), so virtual clocks make hours of backoff run in
milliseconds on asyncio and trio alike.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import (
    TYPE_CHECKING,
    Any,
    ClassVar,
    Final,
    TypeAlias,
    TypeVar,
    TypeVarTuple,
    final,
)

import anyio

from .._core._exceptions import AttemptsExhausted, GraphError, NodeError, PartialOutputError
from .._core._policy import bounded
from .._core._validate import to_seconds

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from .._core._policy import Call, NodeContext, NodeCounters

__all__ = ["Retry"]

T = TypeVar("T")
PosArgsT = TypeVarTuple("PosArgsT")

RetryOn: TypeAlias = "type[Exception] | tuple[type[Exception], ...] | Callable[[Exception], bool]"
"""Which errors a :class:`Retry` retries: exception types, or a predicate on the error."""

_object_setattr = object.__setattr__

# RFC 9110 delta-seconds is 1*DIGIT; a decimal fraction is tolerated.
_DELTA_SECONDS: Final = re.compile(r"[0-9]+(?:\.[0-9]+)?", re.ASCII)

_RETRY_DEFAULTS: Final[dict[str, object]] = {
    "attempts": 3,
    "deadline": None,
    "initial": 0.1,
    "multiplier": 2.0,
    "cap": 30.0,
    "on": Exception,
    "attempt_timeout": None,
    "max_retry_after": 60.0,
    "seed": None,
}


def _optional_seconds(name: str, value: float | timedelta | None) -> float | None:
    return None if value is None else to_seconds(name, value)


def _check_on(on: RetryOn) -> RetryOn:
    types = on if isinstance(on, tuple) else (on,)
    if all(isinstance(t, type) and issubclass(t, Exception) for t in types) and types:
        return on
    if not isinstance(on, tuple | type) and callable(on):
        return on
    raise GraphError(
        f"on must be Exception subclasses or a predicate (exc) -> bool (got {on!r}); "
        "cancellation, KeyboardInterrupt and SystemExit are never retried"
    )


def _name_of(obj: object) -> str:
    module = getattr(obj, "__module__", "builtins")
    name = getattr(obj, "__qualname__", repr(obj))
    return name if module == "builtins" else f"{module}.{name}"


def _repr_on(on: RetryOn) -> str:
    if not isinstance(on, tuple):
        return _name_of(on)
    names = [_name_of(t) for t in on]
    return f"({names[0]},)" if len(names) == 1 else f"({', '.join(names)})"


def _retry_after(error: BaseException) -> float | None:
    """Seconds the server asked us to wait, from ``error.response.headers["Retry-After"]``.

    Duck-typed on the shape of ``httpx.HTTPStatusError``. Accepts delta-seconds and
    HTTP-dates (relative to wall-clock now, never negative); ``None`` when absent or
    malformed, so a strange header never masks the error it came with.
    """
    try:
        headers = error.response.headers  # type: ignore[attr-defined]
        value = headers.get("Retry-After")
        if value is None:
            value = headers.get("retry-after")
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        if not isinstance(value, str):
            return None
        value = value.strip()
        if _DELTA_SECONDS.fullmatch(value):
            return float(value)
        when = parsedate_to_datetime(value)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, (when - datetime.now(UTC)).total_seconds())
    except Exception:
        return None


@final
@dataclass(frozen=True, init=False, repr=False, slots=True)
class Retry:
    """Call again on failure, waiting with exponential backoff and full jitter.

    Before retry *n* (0 for the first) it waits ``uniform(0, min(cap, initial *
    multiplier**n))`` seconds, unless the error carries a ``Retry-After`` header
    (``error.response.headers``, as on ``httpx.HTTPStatusError``): then it waits
    what the server asked, at most *max_retry_after*. It gives up after
    *attempts* calls, or when the next attempt could not start within *deadline*
    seconds of the first one, whichever comes first.

    On a node, each retry adds one to the node's ``retries`` counter and giving up
    raises ``AttemptsExhausted(last_error, attempts)`` so the engine records the
    attempt count. An error that is not retryable propagates at once.

    Cancellation is never retried: it propagates at once, from an attempt or from
    a backoff sleep. ``KeyboardInterrupt`` and ``SystemExit`` likewise.

    On a node, the policies wrap its call in a fixed order, outermost first:
    ``timeout=`` (the whole item, every retry and backoff included), then the
    retry, then ``limit=``, then ``rate=``, so every attempt waits for a
    concurrency slot and spends rate budget; *attempt_timeout* bounds each attempt.

    Args:
        attempts: most calls in total (``None``: unlimited, then *deadline* is required).
        deadline: seconds from the first attempt after which no new attempt starts;
            a running attempt is not cut short.
        initial: backoff ceiling before the first retry.
        multiplier: growth of the ceiling per retry (``>= 1``).
        cap: the ceiling never grows beyond this.
        on: exception types to retry, or a predicate ``(exc) -> bool``.
        attempt_timeout: seconds allowed per attempt; an attempt that overruns is
            cancelled and counts as a retryable ``TimeoutError`` whatever *on* says.
        max_retry_after: longest wait a ``Retry-After`` header may impose.
        seed: seeds the jitter so delays are reproducible; on a node the stream also
            depends on the node's name, so nodes sharing a policy do not retry in step.

    Raises:
        GraphError: if a value is out of range. TypeError: if a duration is not a
            number or a timedelta.

    Added in 0.1.
    """

    slot: ClassVar[str] = "retry"
    attempts: int | None
    deadline: float | None
    initial: float
    multiplier: float
    cap: float
    on: RetryOn
    attempt_timeout: float | None
    max_retry_after: float
    seed: int | None
    _rng: random.Random = field(compare=False, hash=False)

    def __init__(
        self,
        *,
        attempts: int | None = 3,
        deadline: float | timedelta | None = None,
        initial: float | timedelta = 0.1,
        multiplier: float = 2.0,
        cap: float | timedelta = 30.0,
        on: RetryOn = Exception,
        attempt_timeout: float | timedelta | None = None,
        max_retry_after: float | timedelta = 60.0,
        seed: int | None = None,
    ) -> None:
        if attempts is not None:
            if isinstance(attempts, bool) or not isinstance(attempts, int):
                raise TypeError(f"attempts must be an int or None (got {attempts!r})")
            if attempts < 1:
                raise GraphError(f"attempts must be >= 1 (got {attempts!r})")
        if attempts is None and deadline is None:
            raise GraphError("attempts and deadline cannot both be None (it would never give up)")
        if isinstance(multiplier, bool) or not isinstance(multiplier, int | float):
            raise TypeError(f"multiplier must be a number (got {multiplier!r})")
        if not multiplier >= 1 or math.isinf(multiplier):
            raise GraphError(f"multiplier must be >= 1 (got {multiplier!r})")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"seed must be an int or None (got {seed!r})")
        _object_setattr(self, "attempts", attempts)
        _object_setattr(self, "deadline", _optional_seconds("deadline", deadline))
        _object_setattr(self, "initial", to_seconds("initial", initial))
        _object_setattr(self, "multiplier", float(multiplier))
        _object_setattr(self, "cap", to_seconds("cap", cap))
        _object_setattr(self, "on", _check_on(on))
        _object_setattr(
            self, "attempt_timeout", _optional_seconds("attempt_timeout", attempt_timeout)
        )
        _object_setattr(
            self,
            "max_retry_after",
            to_seconds("max_retry_after", max_retry_after, inclusive=True),
        )
        _object_setattr(self, "seed", seed)
        _object_setattr(self, "_rng", random.Random(seed))

    def __repr__(self) -> str:
        parts = [
            f"{name}={_repr_on(value) if name == 'on' else repr(value)}"
            for name, default in _RETRY_DEFAULTS.items()
            if (value := getattr(self, name)) != default
        ]
        return f"Retry({', '.join(parts)})"

    def wrap(self, call: Call, node: NodeContext) -> Call:
        """Return *call* retried under this policy, counting retries on *node*."""
        rng = random.Random() if self.seed is None else random.Random(f"{self.seed}:{node.name}")
        counters = node.counters

        async def retrying(item: Any) -> Any:
            return await self._run(call, (item,), counters, rng)

        return retrying

    async def call(self, fn: Callable[[*PosArgsT], Awaitable[T]], *args: *PosArgsT) -> T:
        """Await ``fn(*args)`` under this policy, outside any graph.

        Returns what *fn* returns. When the policy gives up, the last error is
        raised itself, with a note saying how many attempts ran. Cancellation
        propagates at once.
        """
        try:
            return await self._run(fn, args, None, self._rng)
        except AttemptsExhausted as exhausted:
            error = exhausted.error
            attempts = exhausted.attempts
        error.add_note(f"flowgraph.Retry gave up after {attempts} attempts")
        raise error

    def _backoff(self, retry: int, rng: random.Random) -> float:
        try:
            ceiling = min(self.cap, self.initial * self.multiplier**retry)
        except OverflowError:
            ceiling = self.cap
        return rng.uniform(0.0, ceiling)

    def _retryable(self, error: Exception) -> bool:
        on = self.on
        if isinstance(on, type | tuple):
            return isinstance(error, on)
        return bool(on(error))

    async def _run(
        self,
        fn: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        counters: NodeCounters | None,
        rng: random.Random,
    ) -> T:
        started = anyio.current_time()
        attempt = 0
        while True:
            attempt += 1
            if attempt > 1 and counters is not None:
                counters.retries += 1
            error: Exception
            try:
                if self.attempt_timeout is None:
                    return await fn(*args)
                with bounded(self.attempt_timeout):
                    return await fn(*args)
                error = TimeoutError(
                    f"attempt {attempt} timed out after {self.attempt_timeout:g} s"
                )
            except Exception as exc:
                if isinstance(exc, PartialOutputError | NodeError) or not self._retryable(exc):
                    if attempt == 1:
                        raise
                    raise AttemptsExhausted(exc, attempt) from exc
                error = exc
            retry_after = _retry_after(error)
            if retry_after is None:
                wait = self._backoff(attempt - 1, rng)
            else:
                wait = min(retry_after, self.max_retry_after)
            out_of_attempts = self.attempts is not None and attempt >= self.attempts
            out_of_time = (
                self.deadline is not None and anyio.current_time() + wait >= started + self.deadline
            )
            if out_of_attempts or out_of_time:
                raise AttemptsExhausted(error, attempt) from error
            await anyio.sleep(wait)
