"""The seeded, reproducible :class:`FaultPlan` that FlakyTransport applies.

Each decision draws from its own ``random.Random`` seeded by a hash of ``(seed,
method, url, attempt)``, never from one generator consumed in arrival order, so
a seed replays the same faults whatever the backend or the interleaving.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal, final

import httpx

from ._faults import Fault, FaultKind, Latency, ScheduledFault, fault_kind, seconds
from ._match import Match, PathPattern

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

_DEFAULT_STATUSES = (500, 502, 503, 504)
_DEFAULT_LATENCY = Latency.uniform(0.01, 0.1)
RetryAfterFormat = Literal["seconds", "date"]


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
@dataclass(frozen=True, slots=True, init=False, repr=False, eq=False)
class FaultPlan:
    """Which faults to inject, drawn reproducibly from *seed*.

    For each request the plan looks, in order, at the *schedule* (first matching
    entry wins), then at the probabilities of the first route in *routes* whose
    pattern matches the URL path, then at *probabilities*. At most one fault is
    injected per request, so the probabilities of one table sum to at most 1.

    *max_consecutive* bounds the faults drawn from probabilities, never the
    schedule: a drawn failure is dropped when the same method and URL already
    failed that many times in a row, while a scheduled fault is always injected
    (and counts towards the run). So ``max_consecutive=3`` with a schedule
    failing attempts 1 to 49 fails 49 times, as written.

    Same seed, same faults: a decision depends only on the plan and on the
    request's method, URL and attempt number (its count among requests with that
    exact method and URL), on asyncio and trio alike and whatever the order in
    which concurrent requests arrive. The repr is the call that rebuilds the
    plan, seed included, so a failing test can print it.

    Args:
        seed: the seed every decision derives from.
        probabilities: chance of each fault kind per request, e.g. ``{"read_timeout": 0.1}``.
        routes: per path pattern (``"/items/{id}"``, a glob or ``re.Pattern``), a
            probability table that replaces *probabilities* for matching requests.
        schedule: explicit faults on given attempts (:class:`ScheduledFault`).
        max_consecutive: if set, a drawn failing fault is dropped after this many
            failing faults in a row on one method and URL; latency and slow streams
            do not count. ``None`` sets no bound.
        statuses: the 5xx codes a ``"server_error"`` draws from.
        retry_after: seconds a ``"rate_limited"`` 429 asks the client to wait;
            fractions are sent as they are (``Retry-After: 0.5``).
        retry_after_format: ``"seconds"`` sends delta-seconds; ``"date"`` sends an
            HTTP date that far in the (wall-clock) future, rounded up to a whole second.
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
    routes: Mapping[PathPattern, Mapping[FaultKind, float]]
    schedule: tuple[ScheduledFault, ...]
    max_consecutive: int | None
    statuses: tuple[int, ...]
    retry_after: float
    retry_after_format: RetryAfterFormat
    latency: Latency
    stream_chunk_size: int
    stream_delay: float
    _route_matches: tuple[tuple[Match, Mapping[FaultKind, float]], ...]

    def __init__(
        self,
        *,
        seed: int = 0,
        probabilities: Mapping[FaultKind | str, float] | None = None,
        routes: Mapping[PathPattern, Mapping[FaultKind | str, float]] | None = None,
        schedule: Iterable[ScheduledFault] = (),
        max_consecutive: int | None = None,
        statuses: Iterable[int] = _DEFAULT_STATUSES,
        retry_after: float | timedelta = 1,
        retry_after_format: RetryAfterFormat = "seconds",
        latency: Latency = _DEFAULT_LATENCY,
        stream_chunk_size: int = 64,
        stream_delay: float | timedelta = 0.01,
    ) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int (got {seed!r})")
        checked_routes: dict[PathPattern, Mapping[FaultKind, float]] = {}
        for pattern, table in (routes or {}).items():
            Match(path=pattern)  # validates the pattern
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
        if retry_after_format not in ("seconds", "date"):
            raise ValueError(
                f"retry_after_format must be 'seconds' or 'date' (got {retry_after_format!r})"
            )
        if stream_chunk_size < 1:
            raise ValueError(f"stream_chunk_size must be >= 1 byte (got {stream_chunk_size})")
        set_ = object.__setattr__
        set_(self, "seed", seed)
        set_(self, "probabilities", _probabilities(probabilities or {}, ""))
        set_(self, "routes", MappingProxyType(checked_routes))
        set_(self, "schedule", entries)
        set_(self, "max_consecutive", max_consecutive)
        set_(self, "statuses", codes)
        set_(self, "retry_after", seconds(retry_after, "retry_after"))
        set_(self, "retry_after_format", retry_after_format)
        set_(self, "latency", latency)
        set_(self, "stream_chunk_size", stream_chunk_size)
        set_(self, "stream_delay", seconds(stream_delay, "stream_delay"))
        matches = tuple((Match(path=p), table) for p, table in checked_routes.items())
        set_(self, "_route_matches", matches)

    def decide(
        self,
        method: str,
        url: str,
        attempt: int,
        *,
        streak: int = 0,
        headers: Mapping[str, str] | None = None,
        content: bytes = b"",
    ) -> Fault | None:
        """Return the fault for the *attempt*-th request of *method* on *url*, or ``None``.

        Pure and deterministic. *streak* is the number of failing faults the same
        method and URL got in a row just before; it matters only with
        *max_consecutive*. *headers* and *content* matter only to scheduled
        faults that match on them.
        """
        request = httpx.Request(method, url, headers=headers, content=content)
        return self.decide_request(request, attempt, streak=streak)

    def decide_request(
        self, request: httpx.Request, attempt: int, *, streak: int = 0
    ) -> Fault | None:
        """:meth:`decide` for an ``httpx.Request`` whose body has been read."""
        rng = self._rng(request.method.upper(), str(request.url), attempt)
        kind, status = self._scheduled(request, attempt)
        if kind is None:
            kind = self._drawn(request, rng.random())
            bounded = self.max_consecutive is not None and streak >= self.max_consecutive
            if kind is not None and kind.is_failure and bounded:
                return None
        if kind is None:
            return None
        if kind is FaultKind.SERVER_ERROR:
            return Fault(kind, status=status or rng.choice(self.statuses))
        if kind is FaultKind.RATE_LIMITED:
            return Fault(kind, status=429)
        if kind is FaultKind.LATENCY:
            return Fault(kind, delay=self.latency.sample(rng))
        if kind in (FaultKind.TRUNCATED_BODY, FaultKind.CONNECTION_RESET):
            return Fault(kind, fraction=rng.random())
        return Fault(kind)

    def retry_after_header(self) -> str:
        """The ``Retry-After`` value of a ``"rate_limited"`` 429 sent now."""
        if self.retry_after_format == "date":
            now = datetime.now(UTC).timestamp()
            when = datetime.fromtimestamp(math.ceil(now + self.retry_after), UTC)
            return format_datetime(when, usegmt=True)
        if self.retry_after.is_integer():
            return str(int(self.retry_after))
        return format(self.retry_after, "f").rstrip("0")

    def _rng(self, method: str, url: str, attempt: int) -> random.Random:
        key = f"{self.seed}\x00{method}\x00{url}\x00{attempt}".encode()
        return random.Random(int.from_bytes(hashlib.blake2b(key, digest_size=16).digest(), "big"))

    def _scheduled(
        self, request: httpx.Request, attempt: int
    ) -> tuple[FaultKind | None, int | None]:
        for entry in self.schedule:
            if entry.applies(request, attempt):
                return entry.kind, entry.status
        return None, None

    def _drawn(self, request: httpx.Request, draw: float) -> FaultKind | None:
        path = request.url.path
        table = next(
            (table for match, table in self._route_matches if match.path_params(path) is not None),
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
            ("retry_after_format", self.retry_after_format, "seconds"),
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
