"""Fault kinds and the seeded, reproducible :class:`FaultPlan` that FlakyTransport applies.

Each decision draws from its own ``random.Random`` seeded by a hash of ``(seed,
method, url, attempt)``, never from one generator consumed in arrival order, so
a seed replays the same faults whatever the backend or the interleaving.
"""

from __future__ import annotations

import enum
import fnmatch
import hashlib
import math
import random
import re
from dataclasses import dataclass
from datetime import timedelta
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal, final
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence


class FaultKind(enum.StrEnum):
    """What can go wrong with one HTTP request."""

    # httpx.ConnectError before anything is sent; the server never sees the request.
    CONNECT_ERROR = "connect_error"
    # httpx.ConnectTimeout; the server never sees the request.
    CONNECT_TIMEOUT = "connect_timeout"
    # httpx.ReadTimeout; no response arrives.
    READ_TIMEOUT = "read_timeout"
    # A 500, 502, 503 or 504 response in place of the real one.
    SERVER_ERROR = "server_error"
    # A 429 response with a Retry-After header in place of the real one.
    RATE_LIMITED = "rate_limited"
    # The real response, after an added delay drawn from the plan's Latency.
    LATENCY = "latency"
    # The real status and headers with the body cut to a proper prefix.
    TRUNCATED_BODY = "truncated_body"
    # A 200 "application/json" response whose body is an HTML error page.
    INVALID_JSON = "invalid_json"
    # The real response, its body delivered in small chunks with delays between them.
    SLOW_STREAM = "slow_stream"

    @property
    def is_failure(self) -> bool:
        """Whether a client sees this fault as a failed request (latency and slow streams pass)."""
        return self not in (FaultKind.LATENCY, FaultKind.SLOW_STREAM)


FAILURES: tuple[FaultKind, ...] = tuple(kind for kind in FaultKind if kind.is_failure)
"""The fault kinds that make a request fail, in declaration order."""


def fault_kind(value: FaultKind | str) -> FaultKind:
    """Return the :class:`FaultKind` named *value*.

    Raises:
        ValueError: if *value* names no fault kind; the message lists the valid names.
    """
    try:
        return FaultKind(value)
    except ValueError:
        names = ", ".join(kind.value for kind in FaultKind)
        raise ValueError(f"unknown fault kind {value!r}; expected one of: {names}") from None


def seconds(value: float | timedelta, name: str) -> float:
    """Return *value* in seconds; raise ValueError unless it is finite and >= 0."""
    result = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if not 0 <= result < math.inf:
        raise ValueError(f"{name} must be a finite duration >= 0 seconds (got {value!r})")
    return result


@final
@dataclass(frozen=True, slots=True, init=False, repr=False)
class Latency:
    """A distribution of added delays, in seconds.

    Build one with :meth:`fixed`, :meth:`uniform` or :meth:`exponential`, each of
    which raises ValueError on a negative or infinite duration; the repr is that call.
    """

    distribution: Literal["fixed", "uniform", "exponential"]
    parameters: tuple[float, ...]

    @classmethod
    def fixed(cls, delay: float | timedelta) -> Latency:
        """Always *delay* seconds (ValueError if negative or infinite)."""
        return cls._make("fixed", seconds(delay, "delay"))

    @classmethod
    def uniform(cls, low: float | timedelta, high: float | timedelta) -> Latency:
        """Uniformly between *low* and *high* seconds (ValueError unless 0 <= low <= high < inf)."""
        low_s, high_s = seconds(low, "low"), seconds(high, "high")
        if low_s > high_s:
            raise ValueError(f"low must be <= high (got low={low_s!r}, high={high_s!r})")
        return cls._make("uniform", low_s, high_s)

    @classmethod
    def exponential(cls, mean: float | timedelta) -> Latency:
        """Exponential with mean *mean*: mostly short, sometimes long (ValueError unless > 0)."""
        mean_s = seconds(mean, "mean")
        if mean_s == 0:
            raise ValueError("mean must be > 0 seconds (got 0.0)")
        return cls._make("exponential", mean_s)

    @classmethod
    def _make(cls, distribution: str, *parameters: float) -> Latency:
        latency = object.__new__(cls)
        object.__setattr__(latency, "distribution", distribution)
        object.__setattr__(latency, "parameters", parameters)
        return latency

    def sample(self, rng: random.Random) -> float:
        """Draw one delay from *rng*."""
        if self.distribution == "fixed":
            return self.parameters[0]
        if self.distribution == "uniform":
            return rng.uniform(*self.parameters)
        return rng.expovariate(1 / self.parameters[0])

    def __repr__(self) -> str:
        return f"Latency.{self.distribution}({', '.join(map(repr, self.parameters))})"


Pattern = str | re.Pattern[str]
"""A URL path pattern: a glob (``"/items*"``) or a regex, either matching the whole path."""


def _check_pattern(pattern: object) -> None:
    if not isinstance(pattern, str | re.Pattern):
        raise TypeError(f"a path pattern must be a glob string or re.Pattern (got {pattern!r})")


def _matches(pattern: Pattern, path: str) -> bool:
    if isinstance(pattern, str):
        return fnmatch.fnmatchcase(path, pattern)
    return pattern.fullmatch(path) is not None


@final
@dataclass(frozen=True, slots=True, init=False, repr=False)
class ScheduledFault:
    """Inject *kind* on given attempts at every URL whose path matches *path*.

    Attempts count per exact method and URL, from 1, so
    ``ScheduledFault("server_error", attempts=range(1, 3), path="/items")``
    fails the first two requests of each ``/items?page=N`` and lets the third
    through. A schedule takes precedence over the plan's probabilities.

    Args:
        kind: the fault to inject.
        attempts: the attempt numbers (>= 1) that get the fault, e.g. ``range(3, 6)``.
        path: glob or regex that the URL path must match; the default matches every path.
        method: the HTTP method that must match, or ``None`` for any.
        status: the status of a ``"server_error"`` (500-599); ``None`` draws one of
            the plan's statuses.

    Raises:
        ValueError: on an unknown kind, an empty schedule, an attempt below 1, or a
            *status* that is not 5xx or is given for another kind.
    """

    kind: FaultKind
    attempts: range | tuple[int, ...]
    path: Pattern
    method: str | None
    status: int | None

    def __init__(
        self,
        kind: FaultKind | str,
        *,
        attempts: Iterable[int],
        path: Pattern = "*",
        method: str | None = None,
        status: int | None = None,
    ) -> None:
        checked = fault_kind(kind)
        numbers = attempts if isinstance(attempts, range) else tuple(sorted(set(attempts)))
        if len(numbers) == 0:
            raise ValueError("attempts must name at least one attempt (got none)")
        if min(numbers) < 1:
            raise ValueError(f"attempts are numbered from 1 (got {min(numbers)})")
        _check_pattern(path)
        if status is not None:
            if checked is not FaultKind.SERVER_ERROR:
                raise ValueError(
                    f"status applies only to 'server_error' (got kind {checked.value!r})"
                )
            if not 500 <= status <= 599:
                raise ValueError(f"status must be a 5xx status code (got {status})")
        object.__setattr__(self, "kind", checked)
        object.__setattr__(self, "attempts", numbers)
        object.__setattr__(self, "path", path)
        object.__setattr__(self, "method", None if method is None else method.upper())
        object.__setattr__(self, "status", status)

    def applies(self, method: str, path: str, attempt: int) -> bool:
        """Whether this entry covers the *attempt*-th request of *method* on *path*."""
        return (
            attempt in self.attempts
            and (self.method is None or self.method == method.upper())
            and _matches(self.path, path)
        )

    def __repr__(self) -> str:
        parts = [repr(self.kind.value), f"attempts={self.attempts!r}"]
        options: tuple[tuple[str, object, object], ...] = (
            ("path", self.path, "*"),
            ("method", self.method, None),
            ("status", self.status, None),
        )
        parts += [f"{name}={value!r}" for name, value, default in options if value != default]
        return f"ScheduledFault({', '.join(parts)})"


def _probabilities(table: Mapping[FaultKind | str, float], where: str) -> Mapping[FaultKind, float]:
    checked: dict[FaultKind, float] = {}
    for name, probability in table.items():
        kind = fault_kind(name)
        if isinstance(probability, bool) or not isinstance(probability, int | float):
            raise TypeError(f"probability of {kind.value!r} must be a number (got {probability!r})")
        if not 0 <= probability <= 1:
            raise ValueError(
                f"probability of {kind.value!r} must be between 0 and 1 (got {probability!r})"
            )
        checked[kind] = float(probability)
    total = sum(checked.values())
    if total > 1 + 1e-9:
        raise ValueError(f"fault probabilities{where} must sum to at most 1 (got {total:.6g})")
    return MappingProxyType({kind: checked[kind] for kind in FaultKind if kind in checked})


def _table_repr(table: Mapping[FaultKind, float]) -> str:
    return "{" + ", ".join(f"{kind.value!r}: {p!r}" for kind, p in table.items()) + "}"


@final
@dataclass(frozen=True, slots=True)
class Fault:
    """One decision of a plan: which fault, with its drawn parameters."""

    kind: FaultKind
    status: int | None = None  # the response status for server_error (5xx) and rate_limited (429)
    delay: float = 0.0  # seconds of added latency (latency only)
    fraction: float = 0.0  # where in [0, 1) a truncated body is cut (truncated_body only)


_DEFAULT_STATUSES = (500, 502, 503, 504)
_DEFAULT_LATENCY = Latency.uniform(0.01, 0.1)


@final
@dataclass(frozen=True, slots=True, init=False, repr=False, eq=False)
class FaultPlan:
    """Which faults to inject, drawn reproducibly from *seed*.

    For each request the plan looks, in order, at the *schedule* (first matching
    entry wins), then at the probabilities of the first route in *routes* whose
    pattern matches the URL path, then at *probabilities*. At most one fault is
    injected per request, so the probabilities of one table sum to at most 1.

    Same seed, same faults: a decision depends only on the plan and on the
    request's method, URL and attempt number (its count among requests with that
    exact method and URL), on asyncio and trio alike and whatever the order in
    which concurrent requests arrive. The repr is the call that rebuilds the
    plan, seed included, so a failing test can print it.

    Args:
        seed: the seed every decision derives from.
        probabilities: chance of each fault kind per request, e.g. ``{"read_timeout": 0.1}``.
        routes: per path pattern (glob or ``re.Pattern``), a probability table that
            replaces *probabilities* for matching requests, e.g. ``{"/items*": {...}}``.
        schedule: explicit faults on given attempts (:class:`ScheduledFault`).
        max_consecutive: if set, after this many failing faults in a row on one
            method and URL the next request gets none; latency and slow streams do
            not count. ``None`` sets no bound.
        statuses: the 5xx codes a ``"server_error"`` draws from.
        retry_after: seconds in the ``Retry-After`` header of a ``"rate_limited"`` 429.
        latency: the distribution of ``"latency"`` delays.
        stream_chunk_size: bytes per chunk of a ``"slow_stream"`` body.
        stream_delay: seconds between the chunks of a ``"slow_stream"`` body.

    Raises:
        ValueError: on an unknown fault kind, a probability outside [0, 1], a table
            summing above 1, or another out-of-range option; the message says what
            is allowed.
        TypeError: on a route pattern that is neither a string nor a regex.
    """

    seed: int
    probabilities: Mapping[FaultKind, float]
    routes: Mapping[Pattern, Mapping[FaultKind, float]]
    schedule: tuple[ScheduledFault, ...]
    max_consecutive: int | None
    statuses: tuple[int, ...]
    retry_after: int
    latency: Latency
    stream_chunk_size: int
    stream_delay: float

    def __init__(
        self,
        *,
        seed: int = 0,
        probabilities: Mapping[FaultKind | str, float] | None = None,
        routes: Mapping[Pattern, Mapping[FaultKind | str, float]] | None = None,
        schedule: Iterable[ScheduledFault] = (),
        max_consecutive: int | None = None,
        statuses: Iterable[int] = _DEFAULT_STATUSES,
        retry_after: int = 1,
        latency: Latency = _DEFAULT_LATENCY,
        stream_chunk_size: int = 64,
        stream_delay: float | timedelta = 0.01,
    ) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int (got {seed!r})")
        checked_routes: dict[Pattern, Mapping[FaultKind, float]] = {}
        for pattern, table in (routes or {}).items():
            _check_pattern(pattern)
            checked_routes[pattern] = _probabilities(table, f" for route {pattern!r}")
        entries = tuple(schedule)
        for entry in entries:
            if not isinstance(entry, ScheduledFault):
                raise TypeError(f"schedule entries must be ScheduledFault (got {entry!r})")
        if max_consecutive is not None and max_consecutive < 0:
            raise ValueError(f"max_consecutive must be >= 0 or None (got {max_consecutive})")
        codes = tuple(statuses)
        if not codes:
            raise ValueError("statuses must name at least one 5xx status code (got none)")
        for code in codes:
            if not 500 <= code <= 599:
                raise ValueError(f"statuses must be 5xx status codes (got {code})")
        if retry_after < 0:
            raise ValueError(f"retry_after must be >= 0 seconds (got {retry_after})")
        if stream_chunk_size < 1:
            raise ValueError(f"stream_chunk_size must be >= 1 byte (got {stream_chunk_size})")
        set_ = object.__setattr__
        set_(self, "seed", seed)
        set_(self, "probabilities", _probabilities(probabilities or {}, ""))
        set_(self, "routes", MappingProxyType(checked_routes))
        set_(self, "schedule", entries)
        set_(self, "max_consecutive", max_consecutive)
        set_(self, "statuses", codes)
        set_(self, "retry_after", retry_after)
        set_(self, "latency", latency)
        set_(self, "stream_chunk_size", stream_chunk_size)
        set_(self, "stream_delay", seconds(stream_delay, "stream_delay"))

    def decide(self, method: str, url: str, attempt: int) -> Fault | None:
        """Return the fault for the *attempt*-th request of *method* on *url*, or ``None``.

        Pure and deterministic; *max_consecutive* is applied by the transport,
        which knows the previous outcomes.
        """
        path = unquote(urlsplit(url).path) or "/"
        rng = self._rng(method.upper(), url, attempt)
        kind, status = self._scheduled(method, path, attempt)
        if kind is None:
            kind = self._drawn(path, rng.random())
        if kind is None:
            return None
        if kind is FaultKind.SERVER_ERROR:
            return Fault(kind, status=status or rng.choice(self.statuses))
        if kind is FaultKind.RATE_LIMITED:
            return Fault(kind, status=429)
        if kind is FaultKind.LATENCY:
            return Fault(kind, delay=self.latency.sample(rng))
        if kind is FaultKind.TRUNCATED_BODY:
            return Fault(kind, fraction=rng.random())
        return Fault(kind)

    def _rng(self, method: str, url: str, attempt: int) -> random.Random:
        key = f"{self.seed}\x00{method}\x00{url}\x00{attempt}".encode()
        return random.Random(int.from_bytes(hashlib.blake2b(key, digest_size=16).digest(), "big"))

    def _scheduled(
        self, method: str, path: str, attempt: int
    ) -> tuple[FaultKind | None, int | None]:
        for entry in self.schedule:
            if entry.applies(method, path, attempt):
                return entry.kind, entry.status
        return None, None

    def _drawn(self, path: str, draw: float) -> FaultKind | None:
        table = next(
            (table for pattern, table in self.routes.items() if _matches(pattern, path)),
            self.probabilities,
        )
        for kind, probability in table.items():
            if draw < probability:
                return kind
            draw -= probability
        return None

    def __repr__(self) -> str:
        parts = [f"seed={self.seed!r}"]
        if self.probabilities:
            parts.append(f"probabilities={_table_repr(self.probabilities)}")
        if self.routes:
            routes = ", ".join(f"{p!r}: {_table_repr(t)}" for p, t in self.routes.items())
            parts.append(f"routes={{{routes}}}")
        if self.schedule:
            parts.append(f"schedule=[{', '.join(map(repr, self.schedule))}]")
        defaults: Sequence[tuple[str, object, object]] = (
            ("max_consecutive", self.max_consecutive, None),
            ("statuses", self.statuses, _DEFAULT_STATUSES),
            ("retry_after", self.retry_after, 1),
            ("latency", self.latency, _DEFAULT_LATENCY),
            ("stream_chunk_size", self.stream_chunk_size, 64),
            ("stream_delay", self.stream_delay, 0.01),
        )
        parts += [f"{name}={value!r}" for name, value, default in defaults if value != default]
        return f"FaultPlan({', '.join(parts)})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FaultPlan) and repr(self) == repr(other)

    def __hash__(self) -> int:
        return hash(repr(self))
