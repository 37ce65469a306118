"""Hypothesis strategies for fault plans, so a test can state what must hold under *any* plan.

The seed of every plan is drawn by Hypothesis, so a failing example shrinks
(towards fewer and rarer faults) and replays from Hypothesis' database; the
plan's repr, seed included, appears in the falsifying example. For instance::

    @given(plan=fault_plans(max_consecutive_failures=3))
    async def test_crawl_is_complete(plan):
        ...  # a client retrying 4 times must still get every record exactly once

Importing this module imports Hypothesis; ``flowgraph.testing`` itself never does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hypothesis import strategies as st

from ._faults import FAILURES, FaultKind, Latency, ScheduledFault, fault_kind
from ._plan import FaultPlan

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["fault_plans", "latencies", "scheduled_faults"]

_MAX_ATTEMPT = 6


def latencies(*, max_seconds: float = 0.01) -> st.SearchStrategy[Latency]:
    """Latency distributions whose delays stay (mostly) under *max_seconds*.

    Raises:
        ValueError: if *max_seconds* is not > 0.
    """
    if not max_seconds > 0:
        raise ValueError(f"max_seconds must be > 0 (got {max_seconds!r})")
    delays = st.floats(0, max_seconds, allow_nan=False)
    return st.one_of(
        delays.map(Latency.fixed),
        st.tuples(delays, delays).map(lambda pair: Latency.uniform(*sorted(pair))),
        st.floats(max_seconds / 100, max_seconds / 2).map(Latency.exponential),
    )


def scheduled_faults(
    kinds: Iterable[FaultKind | str] = FAILURES, *, last_attempt: int = _MAX_ATTEMPT
) -> st.SearchStrategy[ScheduledFault]:
    """Scheduled faults of one of *kinds* on a run of up to 3 attempts at every URL.

    The attempts lie between 1 and *last_attempt*.

    Raises:
        ValueError: if *kinds* is empty or names an unknown kind, or *last_attempt* < 1.
    """
    choices = _kinds(kinds)
    if not choices:
        raise ValueError("kinds must name at least one fault kind (got none)")
    if last_attempt < 1:
        raise ValueError(f"last_attempt must be >= 1 (got {last_attempt})")
    return st.integers(1, last_attempt).flatmap(
        lambda first: st.builds(
            lambda kind, length: ScheduledFault(kind, attempts=range(first, first + length)),
            st.sampled_from(choices),
            st.integers(1, min(3, last_attempt - first + 1)),
        )
    )


def fault_plans(
    *,
    kinds: Iterable[FaultKind | str] = FAILURES,
    max_probability: float = 0.5,
    max_consecutive_failures: int | None = None,
    schedules: bool = True,
    latency: Latency | None = None,
    stream_delay: float = 0.001,
) -> st.SearchStrategy[FaultPlan]:
    """Valid fault plans injecting only *kinds*, with probabilities summing to <= *max_probability*.

    By default only the failing kinds are drawn (no latency or slow streams, which
    cost real time without a virtual clock).

    Args:
        kinds: the fault kinds plans may inject.
        max_probability: upper bound on the summed fault probability per request.
        max_consecutive_failures: if set, every plan has this ``max_consecutive``, and
            its scheduled faults fall within the first that many attempts, so no URL
            fails more than that many times in a row (a schedule always wins over
            ``max_consecutive``, so later ones could break the bound).
        schedules: whether plans may also carry up to two :class:`ScheduledFault` s.
        latency: the ``latency`` distribution of every plan; ``None`` draws one
            from :func:`latencies` when *kinds* includes ``"latency"``.
        stream_delay: the delay between chunks of slow streams.

    Raises:
        ValueError: on an unknown kind, *max_probability* outside [0, 1], or a
            negative *max_consecutive_failures*.
    """
    choices = _kinds(kinds)
    if not 0 <= max_probability <= 1:
        raise ValueError(f"max_probability must be between 0 and 1 (got {max_probability!r})")
    if max_consecutive_failures is not None and max_consecutive_failures < 0:
        raise ValueError(
            f"max_consecutive_failures must be >= 0 or None (got {max_consecutive_failures})"
        )
    probabilities = (
        st.tuples(
            st.lists(
                st.tuples(st.sampled_from(choices), st.integers(1, 100)),
                unique_by=lambda pair: pair[0],
            ),
            st.floats(0, max_probability, allow_nan=False),
        ).map(lambda drawn: _spread(*drawn))
        if choices
        else st.just({})
    )
    if latency is not None:
        latency_strategy = st.just(latency)
    elif FaultKind.LATENCY in choices:
        latency_strategy = latencies()
    else:
        latency_strategy = st.just(FaultPlan().latency)
    return st.builds(
        FaultPlan,
        seed=st.integers(0, 2**64 - 1),
        probabilities=probabilities,
        schedule=_schedules(choices, schedules, max_consecutive_failures),
        max_consecutive=st.just(max_consecutive_failures),
        latency=latency_strategy,
        stream_delay=st.just(stream_delay),
    )


def _schedules(
    choices: list[FaultKind], wanted: bool, bound: int | None
) -> st.SearchStrategy[list[ScheduledFault]] | st.SearchStrategy[tuple[()]]:
    if not (wanted and choices) or bound == 0:
        return st.just(())
    last = _MAX_ATTEMPT if bound is None else min(bound, _MAX_ATTEMPT)
    return st.lists(scheduled_faults(choices, last_attempt=last), max_size=2)


def _kinds(kinds: Iterable[FaultKind | str]) -> list[FaultKind]:
    return list(dict.fromkeys(fault_kind(kind) for kind in kinds))


def _spread(weights: list[tuple[FaultKind, int]], total: float) -> dict[FaultKind | str, float]:
    """Split probability *total* between kinds in proportion to their weights."""
    scale = sum(weight for _, weight in weights)
    return {kind: total * weight / scale for kind, weight in weights}
