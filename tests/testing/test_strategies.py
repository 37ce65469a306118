from __future__ import annotations

import contextlib
import json
import random
import re
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowgraph.testing import (
    FakeAPI,
    FaultKind,
    FaultPlan,
    FlakyTransport,
    Latency,
    ScheduledFault,
)
from flowgraph.testing.strategies import fault_plans, latencies, scheduled_faults

FAILURES = [kind for kind in FaultKind if kind.is_failure]


@given(plan=fault_plans(kinds=["read_timeout", "server_error"], max_probability=0.3))
def test_drawn_plans_stay_within_their_kinds_and_probability(plan: FaultPlan) -> None:
    """Plans inject only the requested kinds, with summed probability at most the bound."""
    assert set(plan.probabilities) <= {FaultKind.READ_TIMEOUT, FaultKind.SERVER_ERROR}
    assert sum(plan.probabilities.values()) <= 0.3 + 1e-9
    assert {entry.kind for entry in plan.schedule} <= {
        FaultKind.READ_TIMEOUT,
        FaultKind.SERVER_ERROR,
    }
    assert plan.max_consecutive is None


@given(plan=fault_plans())
def test_drawn_plans_rebuild_from_their_repr(plan: FaultPlan) -> None:
    """The repr of every drawn plan, seed included, rebuilds it, so failures can be replayed."""
    namespace = {"FaultPlan": FaultPlan, "Latency": Latency, "ScheduledFault": ScheduledFault}
    assert eval(repr(plan), namespace) == plan


@given(latency=latencies(max_seconds=0.5), seed=st.integers())
def test_drawn_latencies_are_non_negative(latency: Latency, seed: int) -> None:
    """Every drawn latency distribution samples non-negative delays."""
    assert latency.sample(random.Random(seed)) >= 0


@settings(max_examples=30)
@given(plan=fault_plans(kinds=FAILURES, max_probability=1.0, max_consecutive_failures=2))
async def test_no_url_fails_more_than_max_consecutive_times_in_a_row(plan: FaultPlan) -> None:
    """Under max_consecutive_failures=k every URL succeeds at least once in any k+1 requests."""
    transport = FlakyTransport(lambda request: httpx.Response(200, json={}), plan)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:
        for path in ("/a", "/b"):
            for _ in range(12):
                with contextlib.suppress(httpx.TransportError):
                    await client.get(path)
    for path in ("/a", "/b"):
        faults = [r.fault for r in transport.records if r.url.endswith(path)]
        assert all(any(f is None for f in faults[i : i + 3]) for i in range(len(faults) - 2))


@given(data=st.data(), bound=st.integers(0, 7))
def test_bounded_plans_schedule_faults_only_within_the_bound(
    data: st.DataObject, bound: int
) -> None:
    """A schedule wins over max_consecutive, so bounded plans schedule only attempts <= k."""
    plan = data.draw(fault_plans(max_consecutive_failures=bound))
    assert plan.max_consecutive == bound
    assert all(max(entry.attempts) <= bound for entry in plan.schedule)


async def fetch_json(client: httpx.AsyncClient, url: str, attempts: int) -> Any:
    """A minimal retrying client: up to *attempts* tries on transport errors, 5xx/429, bad JSON."""
    for _ in range(attempts - 1):
        try:
            response = await client.get(url)
            if response.status_code == 200:
                return response.json()
        except (httpx.TransportError, json.JSONDecodeError):
            pass
    response = await client.get(url)
    response.raise_for_status()
    return response.json()


@settings(max_examples=25)
@given(plan=fault_plans(max_probability=0.8, max_consecutive_failures=3))
async def test_retrying_crawl_gets_every_record_exactly_once_under_any_plan(
    plan: FaultPlan,
) -> None:
    """With k+1 attempts per page, a crawl survives any plan with at most k consecutive failures."""
    api = FakeAPI(records=30, page_size=4)
    transport = FlakyTransport(httpx.ASGITransport(app=api), plan)
    records: list[dict[str, Any]] = []
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:
        url: str | None = "/items/cursor"
        while url is not None:
            body = await fetch_json(client, url, attempts=4)
            records += body["items"]
            url = body["next"]
    assert records == api.all_records(), transport.describe()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: fault_plans(max_probability=1.5),
            "max_probability must be between 0 and 1 (got 1.5)",
        ),
        (
            lambda: fault_plans(max_consecutive_failures=-1),
            "max_consecutive_failures must be >= 0 or None (got -1)",
        ),
        (lambda: fault_plans(kinds=["nope"]), "unknown fault kind 'nope'; expected one of: "),
        (lambda: scheduled_faults([]), "kinds must name at least one fault kind (got none)"),
        (lambda: scheduled_faults(last_attempt=0), "last_attempt must be >= 1 (got 0)"),
        (lambda: latencies(max_seconds=0), "max_seconds must be > 0 (got 0)"),
    ],
)
def test_strategies_reject_invalid_arguments(call: Any, message: str) -> None:
    """Strategy arguments are validated eagerly with messages that say what is allowed."""
    with pytest.raises(ValueError, match=rf"^{re.escape(message)}"):
        call()
