"""Crawl a flaky, rate-limited HTTP API with flowgraph.http: every record exactly once.

No network: the API is flowgraph.testing's FakeAPI, served in-process, behind a
FlakyTransport that makes 28% of the requests fail (connection errors,
timeouts, 5xx, 429 with Retry-After, bodies cut short). Point ``HTTPClient`` at
a real ``base_url`` and drop ``transport=`` to crawl a real API the same way.

* ``ids``: a source walking the cursor-paginated listing with ``paginate``. A
  source that raises fails the run, so it retries each page itself.
* ``detail``: a ``fetch`` transform, one request per record, 16 at a time, with
  the node's ``Retry`` (which honours ``Retry-After``) and a ``Rate``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx

import flowgraph as fg
from flowgraph.http import HTTPClient, fetch, is_transient, paginate
from flowgraph.testing import FakeAPI, FaultPlan, FlakyTransport

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

RECORDS = 400

api = FakeAPI(records=RECORDS, page_size=100)
plan = FaultPlan(
    seed=7,
    probabilities={
        "connect_error": 0.05,
        "read_timeout": 0.05,
        "server_error": 0.10,
        "rate_limited": 0.03,
        "truncated_body": 0.05,
    },
    max_consecutive=3,  # no URL fails more than 3 times in a row: 4 attempts always suffice
)
transport = FlakyTransport(httpx.ASGITransport(app=api), plan)

graph = fg.Graph("flaky_api")
client = HTTPClient(graph, base_url="http://fake.api", transport=transport)
retry = fg.Retry(attempts=5, initial=0.02, cap=0.5, on=is_transient)
received: dict[int, dict[str, Any]] = {}


@graph.source
async def ids() -> AsyncIterator[int]:
    async for record in paginate(client, "/items/cursor", style="cursor", retry=retry):
        yield record["id"]


detail = graph.transform(
    fetch(client, "/items/{}"), name="detail", workers=16, retry=retry, rate=fg.Rate(400, per=1.0)
)


@graph.sink
async def keep(record: dict[str, Any]) -> None:
    if record["id"] in received:
        raise RuntimeError(f"record {record['id']} arrived twice")
    received[record["id"]] = record


graph.chain(ids, detail, keep)

if __name__ == "__main__":
    result = fg.run(graph)
    assert sorted(received.values(), key=lambda r: r["id"]) == api.all_records()
    faults = ", ".join(f"{kind} {n}" for kind, n in sorted(transport.fault_counts.items()))
    print(f"{len(received)} records, each exactly once, in {result.elapsed:.2f}s")
    print(f"{len(transport.records)} requests; faults injected: {faults}")
    print(f"retries by node 'detail': {result.statistics['detail'].retries}")
