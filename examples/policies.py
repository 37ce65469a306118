"""Retry, rate limits and dead letters against a simulated flaky API (no network).

Run it: python examples/policies.py
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

import anyio

import flowgraph as fg

rng = random.Random(42)


class Flaky(Exception):
    """A transient failure, like a 503 or a dropped connection."""


graph = fg.Graph("policies")
api_budget = fg.RateLimiter(fg.Rate(200, per=1.0))  # shared by every node calling the API


@graph.source
async def ids():
    for n in range(100):
        yield n


@graph.transform(
    workers=8,
    retry=fg.Retry(attempts=4, initial=0.01, cap=0.1, on=Flaky),
    rate=api_budget,
    timeout=2.0,
    on_error="dead_letter",
)
async def fetch(n: int) -> dict[str, int]:
    await anyio.sleep(0.001)
    if n % 25 == 7:
        raise ValueError(f"record {n} is malformed")  # not retried: dead-lettered at once
    if rng.random() < 0.3:
        raise Flaky(f"transient failure fetching {n}")
    return {"id": n, "value": n * n}


stored: list[dict[str, int]] = []


@graph.sink
async def store(record: dict[str, int]) -> None:
    stored.append(record)


graph.chain(ids, fetch, store)


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        dead_letters = fg.DeadLetters(Path(tmp) / "state.db")
        result = await graph.run(dead_letters=dead_letters)
        stats = result.statistics["fetch"]
        print(
            f"stored {len(stored)} records; {stats.retries} retries; "
            f"{stats.dead_lettered} dead-lettered"
        )
        for letter in await dead_letters.list():
            print(f"  #{letter.id}: item {letter.item} {letter.error_type}: {letter.message}")
        assert len(stored) + stats.dead_lettered == 100


if __name__ == "__main__":
    anyio.run(main)
