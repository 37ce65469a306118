"""Fault kinds, latency distributions and scheduled faults: the parts of a FaultPlan."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal, final

from ._match import ANY, Match, PathPattern

if TYPE_CHECKING:
    import random
    from collections.abc import Iterable, Mapping

    import httpx


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
    # The real status and headers (Content-Length kept), then the body stops short:
    # httpx.RemoteProtocolError while it is read, as when a peer closes early.
    TRUNCATED_BODY = "truncated_body"
    # The real status and headers, then part of the body and httpx.ReadError:
    # the connection was reset part-way through the body.
    CONNECTION_RESET = "connection_reset"
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


@final
@dataclass(frozen=True, slots=True)
class Fault:
    """One decision of a plan: which fault, with its drawn parameters."""

    kind: FaultKind
    status: int | None = None  # the response status for server_error (5xx) and rate_limited (429)
    delay: float = 0.0  # seconds of added latency (latency only)
    fraction: float = 0.0  # where in [0, 1) the body stops (truncated_body, connection_reset)


@final
@dataclass(frozen=True, slots=True, init=False, repr=False)
class ScheduledFault:
    """Inject *kind* on given attempts at every request that matches.

    Attempts count per exact method and URL, from 1, so
    ``ScheduledFault("server_error", attempts=range(1, 3), path="/items")``
    fails the first two requests of each ``/items?page=N`` and lets the third
    through. A schedule takes precedence over the plan's probabilities and over
    its *max_consecutive*: what is scheduled always happens.

    Args:
        kind: the fault to inject.
        attempts: the attempt numbers (>= 1) that get the fault, e.g. ``range(3, 6)``.
        path: the path pattern the URL must match (``"/items/{id}"``, a glob or a
            regex); the default matches every path.
        method: the HTTP method that must match, or ``None`` for any.
        query: query parameters the URL must carry (``None`` as a value: absent).
        headers: headers the request must carry (``None`` as a value: absent).
        json: the request body, parsed as JSON, must equal this value.
        content: the request body must be exactly these bytes.
        status: the status of a ``"server_error"`` (500-599); ``None`` draws one of
            the plan's statuses.

    Raises:
        ValueError: on an unknown kind, an empty schedule, an attempt below 1, a
            *status* that is not 5xx or is given for another kind, or an invalid
            condition.
    """

    kind: FaultKind
    attempts: range | tuple[int, ...]
    match: Match
    status: int | None

    def __init__(
        self,
        kind: FaultKind | str,
        *,
        attempts: Iterable[int],
        path: PathPattern = "*",
        method: str | None = None,
        query: Mapping[str, object] | None = None,
        headers: Mapping[str, object] | None = None,
        json: Any = ANY,
        content: bytes | str | None = None,
        status: int | None = None,
    ) -> None:
        checked = fault_kind(kind)
        numbers = attempts if isinstance(attempts, range) else tuple(sorted(set(attempts)))
        if len(numbers) == 0:
            raise ValueError("attempts must name at least one attempt (got none)")
        if min(numbers) < 1:
            raise ValueError(f"attempts are numbered from 1 (got {min(numbers)})")
        match = Match(method, path, query=query, headers=headers, json=json, content=content)
        if status is not None:
            if checked is not FaultKind.SERVER_ERROR:
                raise ValueError(
                    f"status applies only to 'server_error' (got kind {checked.value!r})"
                )
            if not 500 <= status <= 599:
                raise ValueError(f"status must be a 5xx status code (got {status})")
        object.__setattr__(self, "kind", checked)
        object.__setattr__(self, "attempts", numbers)
        object.__setattr__(self, "match", match)
        object.__setattr__(self, "status", status)

    @property
    def path(self) -> PathPattern:
        """The path pattern requests must match."""
        return self.match.path

    @property
    def method(self) -> str | None:
        """The method requests must use, or ``None`` for any."""
        return self.match.method

    def applies(self, request: httpx.Request, attempt: int) -> bool:
        """Whether this entry covers *request*, the *attempt*-th at its method and URL."""
        return attempt in self.attempts and self.match.matches(request)

    def __repr__(self) -> str:
        parts = [repr(self.kind.value), f"attempts={self.attempts!r}"]
        if self.path != "*":
            parts.append(f"path={self.path!r}")
        if self.method is not None:
            parts.append(f"method={self.method!r}")
        parts += self.match.options()
        if self.status is not None:
            parts.append(f"status={self.status!r}")
        return f"ScheduledFault({', '.join(parts)})"
