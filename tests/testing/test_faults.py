from __future__ import annotations

import dataclasses
import random
import re
from datetime import timedelta

import pytest

from flowgraph.testing import Fault, FaultKind, FaultPlan, Latency, ScheduledFault

URL = "http://api.test/items?page=1"


def test_only_latency_and_slow_streams_let_the_request_succeed() -> None:
    """Latency and slow streams are degradations; every other kind is a failure."""
    passing = {kind for kind in FaultKind if not kind.is_failure}
    assert passing == {FaultKind.LATENCY, FaultKind.SLOW_STREAM}


def test_plan_without_faults_never_injects() -> None:
    """The default plan decides "no fault" for every request."""
    plan = FaultPlan()
    assert all(plan.decide("GET", URL, attempt) is None for attempt in range(1, 200))


def test_decision_depends_only_on_seed_method_url_and_attempt() -> None:
    """Two equal plans decide the same, whatever order the requests are asked about in."""
    keys = [(m, f"http://api.test/{p}", a) for m in ("GET", "POST") for p in "abc" for a in (1, 2)]
    shuffled = random.Random(5).sample(keys, len(keys))
    first = FaultPlan(seed=9, probabilities={"server_error": 0.3, "latency": 0.3})
    second = FaultPlan(seed=9, probabilities={"server_error": 0.3, "latency": 0.3})
    assert {k: first.decide(*k) for k in keys} == {k: second.decide(*k) for k in shuffled}


def test_different_seeds_give_different_faults() -> None:
    """Changing the seed changes which requests fail."""
    urls = [f"http://api.test/items?page={n}" for n in range(50)]
    decisions = [
        [
            FaultPlan(seed=seed, probabilities={"read_timeout": 0.5}).decide("GET", u, 1)
            for u in urls
        ]
        for seed in (1, 2)
    ]
    assert decisions[0] != decisions[1]


def test_fault_frequency_follows_probabilities() -> None:
    """Over many requests each kind is injected about as often as its probability says."""
    plan = FaultPlan(seed=3, probabilities={"read_timeout": 0.2, "server_error": 0.1})
    decisions = [plan.decide("GET", f"http://api.test/x/{n}", 1) for n in range(10_000)]
    kinds = [d.kind if d else None for d in decisions]
    assert 0.18 < kinds.count(FaultKind.READ_TIMEOUT) / 10_000 < 0.22
    assert 0.08 < kinds.count(FaultKind.SERVER_ERROR) / 10_000 < 0.12


def test_fault_parameters_are_drawn_from_the_plan() -> None:
    """Server errors use the plan's statuses, 429s their fixed status, latency its distribution."""
    urls = [f"http://api.test/{n}" for n in range(300)]
    errors = FaultPlan(probabilities={"server_error": 1}, statuses=[502, 504])
    assert {errors.decide("GET", u, 1) for u in urls} == {
        Fault(FaultKind.SERVER_ERROR, status=502),
        Fault(FaultKind.SERVER_ERROR, status=504),
    }
    limited = FaultPlan(probabilities={"rate_limited": 1})
    assert limited.decide("GET", URL, 1) == Fault(FaultKind.RATE_LIMITED, status=429)
    slow = FaultPlan(probabilities={"latency": 1}, latency=Latency.uniform(2, 3))
    delays = [d.delay for u in urls if (d := slow.decide("GET", u, 1))]
    assert len(delays) == 300
    assert all(2 <= delay <= 3 for delay in delays)


def test_routes_replace_the_default_probabilities_for_matching_paths() -> None:
    """The first route whose glob or regex matches the path decides; others use the default."""
    plan = FaultPlan(
        probabilities={"connect_error": 1},
        routes={re.compile(r"/users/\d+"): {}, "/items*": {"read_timeout": 1}},
    )
    assert plan.decide("GET", "http://a/users/7", 1) is None
    assert plan.decide("GET", "http://a/items/cursor?c=1", 1) == Fault(FaultKind.READ_TIMEOUT)
    assert plan.decide("GET", "http://a/users/x", 1) == Fault(FaultKind.CONNECT_ERROR)


def test_schedule_hits_exactly_the_scheduled_attempts() -> None:
    """Attempts 3 to 5 of GET /items get the scheduled 503; others and other paths do not."""
    plan = FaultPlan(
        schedule=[ScheduledFault("server_error", attempts=range(3, 6), path="/items", status=503)]
    )
    faults = [plan.decide("GET", "http://a/items", attempt) for attempt in range(1, 8)]
    expected = [
        Fault(FaultKind.SERVER_ERROR, status=503) if 3 <= a <= 5 else None for a in range(1, 8)
    ]
    assert faults == expected
    assert plan.decide("GET", "http://a/other", 3) is None


def test_schedule_filters_by_method_and_wins_over_probabilities() -> None:
    """A method-restricted entry leaves other methods to the probabilities."""
    plan = FaultPlan(
        probabilities={"connect_error": 1},
        schedule=[ScheduledFault("rate_limited", attempts=[1], method="post")],
    )
    assert plan.decide("POST", URL, 1) == Fault(FaultKind.RATE_LIMITED, status=429)
    assert plan.decide("GET", URL, 1) == Fault(FaultKind.CONNECT_ERROR)


def test_repr_is_the_call_that_rebuilds_the_plan() -> None:
    """eval(repr(plan)) gives an equal plan, and the repr shows the seed."""
    plan = FaultPlan(
        seed=1234,
        probabilities={"read_timeout": 0.25, "latency": 0.5},
        routes={"/items*": {"server_error": 0.5}, re.compile("/x"): {}},
        schedule=[ScheduledFault("server_error", attempts=range(1, 3), method="GET", status=503)],
        max_consecutive=2,
        statuses=(503,),
        retry_after=5,
        latency=Latency.exponential(0.2),
        stream_chunk_size=8,
        stream_delay=timedelta(milliseconds=5),
    )
    text = repr(plan)
    assert text.startswith(
        "FaultPlan(seed=1234, probabilities={'read_timeout': 0.25, 'latency': 0.5}"
    )
    namespace = {
        "FaultPlan": FaultPlan,
        "ScheduledFault": ScheduledFault,
        "Latency": Latency,
        "re": re,
    }
    assert eval(text, namespace) == plan
    assert repr(FaultPlan(seed=7)) == "FaultPlan(seed=7)"


def test_plans_and_their_parts_are_frozen() -> None:
    """Assigning to a plan, a schedule entry or a latency raises."""
    for obj, name in [
        (FaultPlan(), "seed"),
        (ScheduledFault("read_timeout", attempts=[1]), "kind"),
        (Latency.fixed(1), "parameters"),
    ]:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(obj, name, None)


def test_latency_distributions_sample_within_their_bounds() -> None:
    """Fixed is constant, uniform stays in its bounds, exponential is positive with the given mean."""
    rng = random.Random(0)
    assert Latency.fixed(timedelta(seconds=2)).sample(rng) == 2.0
    assert all(1 <= Latency.uniform(1, 1.5).sample(rng) <= 1.5 for _ in range(100))
    samples = [Latency.exponential(0.5).sample(rng) for _ in range(5000)]
    assert min(samples) >= 0
    assert 0.45 < sum(samples) / len(samples) < 0.55
    assert repr(Latency.uniform(0.01, 0.1)) == "Latency.uniform(0.01, 0.1)"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"probabilities": {"read_timeout": 1.5}},
            "probability of 'read_timeout' must be between 0 and 1 (got 1.5)",
        ),
        (
            {"probabilities": {"server_error": -0.1}},
            "probability of 'server_error' must be between 0 and 1 (got -0.1)",
        ),
        (
            {"probabilities": {"server_error": 0.7, "latency": 0.6}},
            "fault probabilities must sum to at most 1 (got 1.3)",
        ),
        (
            {"routes": {"/items*": {"server_error": 0.7, "latency": 0.6}}},
            "fault probabilities for route '/items*' must sum to at most 1 (got 1.3)",
        ),
        (
            {"probabilities": {"timeout": 0.1}},
            "unknown fault kind 'timeout'; expected one of: connect_error, connect_timeout, "
            "read_timeout, server_error, rate_limited, latency, truncated_body, connection_reset, "
            "invalid_json, slow_stream",
        ),
        ({"max_consecutive": -1}, "max_consecutive must be >= 0 or None (got -1)"),
        ({"statuses": []}, "statuses must name at least one 5xx status code (got none)"),
        ({"statuses": [503, 404]}, "statuses must be 5xx status codes (got 404)"),
        ({"retry_after": -1}, "retry_after must be a finite duration >= 0 seconds (got -1)"),
        (
            {"retry_after_format": "http"},
            "retry_after_format must be 'seconds' or 'date' (got 'http')",
        ),
        ({"stream_chunk_size": 0}, "stream_chunk_size must be >= 1 byte (got 0)"),
        (
            {"stream_delay": -0.5},
            "stream_delay must be a finite duration >= 0 seconds (got -0.5)",
        ),
    ],
)
def test_plan_rejects_invalid_options_saying_what_is_allowed(
    options: dict[str, object], message: str
) -> None:
    """Each invalid option raises a ValueError naming the option and the allowed values."""
    with pytest.raises(ValueError, match=rf"^{re.escape(message)}$"):
        FaultPlan(**options)  # type: ignore[arg-type]


def test_plan_rejects_values_of_the_wrong_type() -> None:
    """A non-int seed, non-number probability or non-pattern route raises TypeError."""
    with pytest.raises(TypeError, match=r"^seed must be an int \(got '1'\)$"):
        FaultPlan(seed="1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^probability of 'latency' must be a number \(got '1'\)$"):
        FaultPlan(probabilities={"latency": "1"})  # type: ignore[dict-item]
    with pytest.raises(
        TypeError, match=r"^a path pattern must be a string or re.Pattern \(got 3\)$"
    ):
        FaultPlan(routes={3: {}})  # type: ignore[dict-item]


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: ScheduledFault("latency", attempts=[]),
            "attempts must name at least one attempt (got none)",
        ),
        (
            lambda: ScheduledFault("latency", attempts=range(2)),
            "attempts are numbered from 1 (got 0)",
        ),
        (
            lambda: ScheduledFault("read_timeout", attempts=[1], status=503),
            "status applies only to 'server_error' (got kind 'read_timeout')",
        ),
        (
            lambda: ScheduledFault("server_error", attempts=[1], status=404),
            "status must be a 5xx status code (got 404)",
        ),
        (lambda: Latency.uniform(2, 1), "low must be <= high (got low=2.0, high=1.0)"),
        (lambda: Latency.fixed(-1), "delay must be a finite duration >= 0 seconds (got -1)"),
        (lambda: Latency.exponential(0), "mean must be > 0 seconds (got 0.0)"),
    ],
)
def test_schedule_and_latency_reject_invalid_values(build: object, message: str) -> None:
    """Scheduled faults and latencies validate on construction with precise messages."""
    assert callable(build)
    with pytest.raises(ValueError, match=rf"^{re.escape(message)}$"):
        build()


def test_max_consecutive_drops_drawn_failures_only() -> None:
    """Past the bound a drawn failure becomes no fault; a scheduled one is injected anyway."""
    plan = FaultPlan(
        probabilities={"read_timeout": 1},
        max_consecutive=2,
        schedule=[ScheduledFault("server_error", attempts=[9], status=502)],
    )
    timeout = Fault(FaultKind.READ_TIMEOUT)
    assert [plan.decide("GET", URL, 1, streak=s) for s in (0, 1, 2, 3)] == [
        timeout,
        timeout,
        None,
        None,
    ]
    assert plan.decide("GET", URL, 9, streak=5) == Fault(FaultKind.SERVER_ERROR, status=502)
    slow = FaultPlan(probabilities={"latency": 1}, max_consecutive=0)
    decided = slow.decide("GET", URL, 1, streak=7)
    assert decided is not None
    assert decided.kind is FaultKind.LATENCY  # not a failure: never bounded


def test_scheduled_faults_match_on_the_whole_request() -> None:
    """Path templates, query, headers and body narrow a schedule; decide() takes them."""
    entry = ScheduledFault(
        "rate_limited",
        attempts=[1],
        method="POST",
        path="/accounts/{account}/charges",
        query={"dry_run": None},
        headers={"idempotency-key": "k-1"},
        json={"amount": 5},
    )
    plan = FaultPlan(schedule=[entry])
    url = "http://api.test/accounts/acme/charges"
    body = b'{"amount": 5}'
    key = {"Idempotency-Key": "k-1"}
    assert plan.decide("POST", url, 1, headers=key, content=body) == Fault(
        FaultKind.RATE_LIMITED, status=429
    )
    assert plan.decide("POST", url, 2, headers=key, content=body) is None
    assert plan.decide("POST", url + "?dry_run=1", 1, headers=key, content=body) is None
    assert plan.decide("POST", url, 1, headers={"Idempotency-Key": "k-2"}, content=body) is None
    assert plan.decide("POST", url, 1, headers=key, content=b'{"amount": 6}') is None
    assert (entry.path, entry.method) == ("/accounts/{account}/charges", "POST")
    assert repr(entry) == (
        "ScheduledFault('rate_limited', attempts=(1,), path='/accounts/{account}/charges', "
        "method='POST', query={'dry_run': None}, headers={'idempotency-key': 'k-1'}, "
        "json={'amount': 5})"
    )
    assert eval(repr(plan), {"FaultPlan": FaultPlan, "ScheduledFault": ScheduledFault}) == plan


def test_broken_bodies_draw_where_they_break() -> None:
    """truncated_body and connection_reset carry the fraction of the body that gets through."""
    for kind in ("truncated_body", "connection_reset"):
        faults = [
            FaultPlan(probabilities={kind: 1}).decide("GET", f"http://t/{n}", 1) for n in range(50)
        ]
        assert {f.kind for f in faults if f} == {FaultKind(kind)}
        assert all(f is not None and 0 <= f.fraction < 1 for f in faults)
        assert len({f.fraction for f in faults if f}) == 50


def test_retry_after_options_rebuild_from_the_repr() -> None:
    """Fractional seconds and the date format show in the repr, which rebuilds the plan."""
    plan = FaultPlan(retry_after=timedelta(milliseconds=2500), retry_after_format="date")
    assert repr(plan) == "FaultPlan(seed=0, retry_after=2.5, retry_after_format='date')"
    assert eval(repr(plan), {"FaultPlan": FaultPlan}) == plan
    assert FaultPlan(retry_after=0.125).retry_after_header() == "0.125"
