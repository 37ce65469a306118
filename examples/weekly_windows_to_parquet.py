"""Pull a feed week by week from a watermark into Parquet files, one atomic file per week.

The cookbook's second recipe (docs/cookbook/weekly-windows-to-parquet.md). Each
run pulls the weeks since the last one it finished from a NASA NeoWs-style feed
(``GET /neo/rest/v1/feed?start_date=...&end_date=...&api_key=...``) and writes
each week's near-Earth objects to ``OUT/neo-<monday>.parquet``:

    python examples/weekly_windows_to_parquet.py                  # offline stand-in
    NASA_API_KEY=... python examples/weekly_windows_to_parquet.py \\
        --url https://api.nasa.gov --since 2024-01-01 --out neo   # the real feed

- ``fg.windows`` yields the weeks from ``--since`` (or from the checkpoint) to
  now; the week still under way is pulled with what it has so far, and again,
  whole, by the next run.
- The hourly quota lives in the state store (``OUT/state.db``), so a run
  started right after another does not spend the same hour's budget twice.
- A week whose pull still fails after its retries becomes a dead letter; the
  next run feeds it back in, beside the new weeks (``replay_dead_letters=True``).
- A week's file is written to a hidden temporary file and renamed into place
  before the week counts as done, so a crash leaves whole files or none.

Offline (the default), the feed is flowgraph.testing's FakeAPI behind a
FlakyTransport that makes some requests fail. The API key is read from
``NASA_API_KEY`` (default ``DEMO_KEY``: 30 requests an hour, 50 a day).
"""

from __future__ import annotations

import argparse
import hashlib
import os
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

import flowgraph as fg
from flowgraph.http import HTTPClient, is_transient
from flowgraph.testing import FakeAPI, FaultPlan, FlakyTransport

FEED = "/neo/rest/v1/feed"
Week = dict[str, str]  # the feed's query for one week: {"start_date": ..., "end_date": ...}


def build_graph(
    out: Path,
    *,
    since: datetime,
    base_url: str,
    api_key: str,
    quota: fg.RateLimiter,
    transport: httpx.AsyncBaseTransport | None = None,
    retry: fg.Retry | None = None,
) -> fg.Graph:
    """The weekly job: weeks -> the feed's query -> pull -> one Parquet file per week."""
    graph = fg.Graph("neo-weekly")
    api = HTTPClient(graph, base_url=base_url, timeout=30, transport=transport)
    weeks = graph.source(fg.windows(start=since, every=fg.WEEK), name="weeks", checkpoint=True)

    @graph.transform(inline=True)
    def query(week: fg.Window) -> Week:
        last_day = week.end - timedelta(days=1)  # the feed's end_date is inclusive
        return {"start_date": str(week.start.date()), "end_date": str(last_day.date())}

    @graph.transform(
        workers=2,
        rate=quota,
        retry=retry or fg.Retry(attempts=4, on=is_transient),
        on_error="dead_letter",  # kept in the state store; the next run replays it
    )
    async def pull(week: Week) -> dict[str, Any]:
        response = await api.client.get(FEED, params={**week, "api_key": api_key})
        response.raise_for_status()
        return {"week": week["start_date"], "rows": flatten(week, response.json())}

    @graph.sink
    async def write(pulled: dict[str, Any]) -> None:
        # Returns once the file is renamed into place: only then is the week done.
        path = out / f"neo-{pulled['week']}.parquet"
        async with fg.Parquet(path, exists="replace") as parquet:
            await parquet(pulled["rows"])

    graph.chain(weeks, query, pull, write)
    return graph


def flatten(week: Week, body: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per object and day: the feed nests objects by day, and sends numbers as text."""
    return [
        to_row(week, day, neo)
        for day, objects in sorted(body["near_earth_objects"].items())
        for neo in objects
    ]


def to_row(week: Week, day: str, neo: dict[str, Any]) -> dict[str, Any]:
    approach = neo["close_approach_data"][0]  # the feed gives the approach of that day
    return {
        "week": week["start_date"],
        "day": day,
        "id": neo["id"],
        "name": neo["name"],
        "hazardous": neo["is_potentially_hazardous_asteroid"],
        "diameter_km": neo["estimated_diameter"]["kilometers"]["estimated_diameter_max"],
        "approach_at": datetime.fromtimestamp(approach["epoch_date_close_approach"] / 1000, UTC),
        "miss_km": float(approach["miss_distance"]["kilometers"]),
        "km_per_s": float(approach["relative_velocity"]["kilometers_per_second"]),
    }


def quota_for(api_key: str, state: str) -> fg.RateLimiter:
    """NASA's hourly limit (and DEMO_KEY's daily one), kept in the state store."""
    windows = [fg.Rate(30, per=fg.HOUR), fg.Rate(50, per=fg.DAY)]
    if api_key != "DEMO_KEY":
        windows = [fg.Rate(1000, per=fg.HOUR)]
    return fg.RateLimiter(*windows, store=state, name="api.nasa.gov")


def job(graph: fg.Graph, state: str, **options: Any) -> fg.RunResult:
    """One scheduled run: the new weeks, and beside them the weeks that failed last time."""
    return fg.run(graph, state=state, replay_dead_letters=True, **options)


# -- the offline stand-in -------------------------------------------------------------------


def stand_in(*, seed: int = 5) -> tuple[FakeAPI, FlakyTransport]:
    """A fake NeoWs feed (any dates, up to 7 days a request), behind a flaky transport."""
    api = FakeAPI()

    @api.route("GET", FEED)
    def feed(request: httpx.Request) -> Any:
        params = request.url.params
        if "api_key" not in params:
            return httpx.Response(403, json={"error": {"code": "API_KEY_MISSING"}})
        start, end = (
            date.fromisoformat(params["start_date"]),
            date.fromisoformat(params["end_date"]),
        )
        if not 0 <= (end - start).days <= 6:
            return httpx.Response(400, json={"error_message": "The Feed date limit is only 7 Days"})
        days = [start + timedelta(days=n) for n in range((end - start).days + 1)]
        objects = {day.isoformat(): fake_objects(day) for day in days}
        return {"element_count": sum(map(len, objects.values())), "near_earth_objects": objects}

    plan = FaultPlan(
        seed=seed,
        probabilities={"read_timeout": 0.15, "server_error": 0.15, "rate_limited": 0.1},
        max_consecutive=2,  # 4 attempts always get through; a longer outage is a dead letter
        retry_after=0.2,
    )
    return api, FlakyTransport(api, plan)


def fake_objects(day: date) -> list[dict[str, Any]]:
    """The objects passing Earth on *day*: 3 to 12 of them, the same on every call."""
    digest = hashlib.sha256(day.isoformat().encode()).digest()
    noon = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
    return [
        {
            "id": f"{2_000_000 + day.toordinal() % 10_000 * 16 + n}",
            "name": f"({day.year} {chr(65 + digest[n] % 26)}{chr(65 + digest[n + 1] % 26)}{n})",
            "is_potentially_hazardous_asteroid": digest[n] % 7 == 0,
            "estimated_diameter": {
                "kilometers": {"estimated_diameter_max": round(0.01 + digest[n] / 300, 4)}
            },
            "close_approach_data": [
                {
                    "epoch_date_close_approach": int(
                        (noon + timedelta(minutes=digest[n + 2] * 5)).timestamp() * 1000
                    ),
                    "miss_distance": {"kilometers": f"{digest[n + 3] * 250_000 + 1e5:.4f}"},
                    "relative_velocity": {"kilometers_per_second": f"{5 + digest[n] / 12:.6f}"},
                }
            ],
        }
        for n in range(3 + digest[0] % 10)
    ]


# -- the script -----------------------------------------------------------------------------


def this_monday() -> datetime:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=today.weekday())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--url", help="the feed's base URL (default: an offline stand-in)")
    parser.add_argument("--out", type=Path, default=Path("neo"), help="output directory (neo)")
    parser.add_argument(
        "--since",
        type=date.fromisoformat,
        default=(this_monday() - timedelta(weeks=4)).date(),
        help="the first week's Monday, YYYY-MM-DD (default: four weeks ago)",
    )
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    args = parser.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    state = f"sqlite:///{args.out / 'state.db'}"
    api_key = os.environ.get("NASA_API_KEY", "DEMO_KEY")
    transport = None if args.url else stand_in()[1]
    graph = build_graph(
        args.out,
        since=datetime.combine(args.since, datetime.min.time(), UTC),
        base_url=args.url or "https://api.nasa.test",
        api_key=api_key,
        quota=quota_for(api_key, state),
        transport=transport,
    )
    result = job(graph, state, backend=args.backend)
    pulled, new = result.statistics["pull"], result.statistics["weeks"].items_out
    replay = result.statistics.get("pull (dead letters)")  # there when a week failed before
    files = sorted(args.out.glob("neo-*.parquet"))
    print(f"weeks: {new} new, {replay.items_out if replay else 0} that failed before")
    print(
        f"weeks pulled: {pulled.items_in} in {result.elapsed:.1f}s (retries: {pulled.retries}); "
        f"failed: {pulled.dead_lettered} (kept for the next run)"
    )
    print(f"files in {args.out}: {len(files)} (..., {', '.join(f.name for f in files[-2:])})")
    if transport is not None:
        faults = ", ".join(f"{kind} {n}" for kind, n in sorted(transport.fault_counts.items()))
        print(f"requests: {len(transport.records)}, faults injected: {faults or 'none'}")


if __name__ == "__main__":
    main()
