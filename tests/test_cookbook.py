"""The cookbook's recipes do what their pages promise: complete, correct output, and the guarantees.

Each recipe is a script in ``examples/`` and a page in ``docs/cookbook/``.
tests/test_examples.py runs every script once as it is; here each one's
output is checked in full (rows in the table, files written, every window
pulled once), and the behaviour its page states is provoked: faults and rate
limits, reruns, a failed week retried on the next run, a crash and a restart.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import pytest
from databases import connect
from test_docs import PAGES

import flowgraph as fg
from flowgraph.testing import FaultPlan, FlakyTransport, ScheduledFault, VirtualClock

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
COOKBOOK = ROOT / "docs" / "cookbook"
RECIPES = {
    "crawl-to-sqlite.md": "crawl_to_sqlite.py",
    "weekly-windows-to-parquet.md": "weekly_windows_to_parquet.py",
    "scale-the-middle.md": "scale_the_middle.py",
    "postgres-etl.md": "postgres_etl.py",
    "scheduled-jobs.md": "scheduled_jobs.py",
}


def example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` as a module, as a reader would use its functions."""
    spec = importlib.util.spec_from_file_location(f"cookbook_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and pickle look modules up by name
    spec.loader.exec_module(module)
    return module


def script(name: str, *args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run ``examples/<name>.py`` with *args* as a reader would; return its output."""
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


crawl = example("crawl_to_sqlite")
weekly = example("weekly_windows_to_parquet")


# -- the pages ------------------------------------------------------------------------------


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", page.read_text(), re.MULTILINE | re.DOTALL)


def test_every_recipe_has_a_page_in_the_site_and_the_docs_harness_runs_it() -> None:
    """Each recipe's page is in mkdocs' nav, linked from the index and collected by test_docs."""
    nav = (ROOT / "mkdocs.yml").read_text().partition("\nnav:\n")[2].partition("\nplugins:")[0]
    index = (COOKBOOK / "index.md").read_text()
    for page, script_name in RECIPES.items():
        assert f": cookbook/{page}\n" in nav
        assert f"]({page})" in index
        assert COOKBOOK / page in PAGES
        assert f"examples/{script_name}" in (COOKBOOK / page).read_text()
    assert COOKBOOK / "index.md" in PAGES


def imports(tree: ast.AST) -> set[tuple[str, str, str | None]]:
    """Every ``(module, name, alias)`` that *tree* imports, in ``if TYPE_CHECKING:`` too."""
    found: set[tuple[str, str, str | None]] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            found |= {(node.module or "", alias.name, alias.asname) for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {("", alias.name, alias.asname) for alias in node.names}
    return found


def is_import(statement: ast.stmt) -> bool:
    if isinstance(statement, ast.If):
        return all(map(is_import, statement.body))
    return isinstance(statement, ast.Import | ast.ImportFrom)


@pytest.mark.parametrize(("page", "script_name"), RECIPES.items())
def test_the_code_a_page_shows_is_the_examples_code(page: str, script_name: str) -> None:
    """A block headed ``# From examples/x.py`` is the script's code, word for word.

    Its imports are some of the script's; every other statement is in the script as shown.
    """
    source = (EXAMPLES / script_name).read_text()
    shown = [block for block in python_blocks(COOKBOOK / page) if block.startswith("# From ")]
    assert len(shown) == 1, f"{page} should show examples/{script_name} in one block"
    header, _, code = shown[0].partition("\n")
    assert header == f"# From examples/{script_name}"
    tree = ast.parse(code)
    assert imports(tree) <= imports(ast.parse(source))
    statements = [statement for statement in tree.body if not is_import(statement)]
    assert len(statements) >= 3
    lines = code.splitlines()
    for statement in statements:
        first = min(
            [statement.lineno, *(d.lineno for d in getattr(statement, "decorator_list", []))]
        )
        assert statement.end_lineno is not None
        text = "\n".join(lines[first - 1 : statement.end_lineno])
        assert f"\n{text}\n" in source, text


# -- 1. a paginated REST crawl into SQLite ---------------------------------------------------


def table(db: Path, query: str) -> list[tuple[Any, ...]]:
    with connect(f"sqlite:///{db}") as connection:
        return list(connection.execute(query).fetchall())


def test_crawl_stores_every_brewery_once_and_a_rerun_changes_nothing(tmp_path: Path) -> None:
    """Through faults: the table holds each brewery once, as cleaned; a second run adds nothing."""
    first = script("crawl_to_sqlite", "--breweries", "230", "--db", "b.db", cwd=tmp_path)
    columns = ", ".join(crawl.COLUMNS)
    rows = table(tmp_path / "b.db", f"SELECT {columns} FROM breweries ORDER BY id")
    expected = sorted(
        (tuple(crawl.to_row(brewery).values()) for brewery in crawl.fake_breweries(230)),
        key=lambda row: row[0],
    )
    assert rows == expected
    assert "5 pages in" in first  # 50 a page: 50, 50, 50, 50, 30
    assert "the server rate-limited 0 of them" in first
    assert first.rstrip().endswith("230 rows (230 new)")
    injected = re.search(r"faults injected: (.*)", first)
    assert injected is not None
    assert injected[1] != "none"
    second = script("crawl_to_sqlite", "--breweries", "230", "--db", "b.db", cwd=tmp_path)
    assert second.rstrip().endswith("230 rows (0 new)")
    assert table(tmp_path / "b.db", f"SELECT {columns} FROM breweries ORDER BY id") == rows


def test_crawl_keeps_to_its_rate_and_waits_what_retry_after_asks(
    backend: str, tmp_path: Path
) -> None:
    """No second holds more requests than the rate; a 429's Retry-After is waited in full."""
    api, transport = crawl.stand_in(300, seed=5)
    graph = crawl.build_graph(
        str(tmp_path / "b.db"), base_url="https://b.test", transport=transport, per_page=20, rate=4
    )
    result = VirtualClock(backend).run(graph.run)
    assert result.statistics["pages"].items_out == 15
    assert table(tmp_path / "b.db", "SELECT count(*) FROM breweries") == [(300,)]
    times = sorted(record.time for record in transport.records)
    assert all(round(later - first, 9) >= 1 for first, later in zip(times, times[4:], strict=False))
    limited = [record for record in transport.records if record.fault == "rate_limited"]
    assert limited, transport.describe()
    for record in limited:
        same_page = transport.records.filter(query=dict(record.request.url.params))
        (retried,) = [other for other in same_page if other.attempt == record.attempt + 1]
        assert retried.time - record.time >= 0.5  # the stand-in's Retry-After
    assert api.statistics().rate_limited == 0


# -- 2. weekly windows from a watermark to Parquet ------------------------------------------


def week_starts(since: datetime, count: int) -> list[str]:
    return [(since + timedelta(weeks=n)).date().isoformat() for n in range(count)]


class WeeklyJob:
    """The weekly recipe's pieces, run as a scheduler would: one job after another.

    The first week starts at the midnight 4 weeks and 3.5 to 4.5 days ago, so that no week
    ends near the time of the test. trio's virtual clock may jump ahead while a worker thread
    is busy: a real-time grace of 50 ms keeps it from doing so.
    """

    def __init__(
        self,
        tmp_path: Path,
        backend: str,
        faults: Callable[[list[str]], FaultPlan] | None = None,
    ) -> None:
        self.out = tmp_path / "neo"
        self.out.mkdir()
        self.state = f"sqlite:///{tmp_path / 'state.db'}"
        self.clock = VirtualClock(backend, autojump_threshold=0.05)
        since = datetime.now(UTC) - timedelta(weeks=4, days=3, hours=12)
        self.since = since.replace(hour=0, minute=0, second=0, microsecond=0)
        self.weeks = week_starts(self.since, 5)  # four finished weeks, and one open
        self.api, flaky = weekly.stand_in(seed=3)
        self.transport = flaky if faults is None else FlakyTransport(self.api, faults(self.weeks))
        self.graph = weekly.build_graph(
            self.out,
            since=self.since,
            base_url="https://neo.test",
            api_key="test-key",
            quota=weekly.quota_for("test-key", self.state),
            transport=self.transport,
            retry=fg.Retry(attempts=4, initial=0.5, on=Exception),
        )

    def run(self) -> fg.RunResult:
        backend, options = self.clock.anyio_backend
        result: fg.RunResult = weekly.job(
            self.graph, self.state, backend=backend, backend_options=options
        )
        return result

    def pulled(self) -> Counter[str]:
        """How many times each week was served (status 200), by its first day."""
        served = [r for r in self.api.requests if r.status_code == 200]
        return Counter(r.request.url.params["start_date"] for r in served)

    def files(self) -> list[str]:
        return sorted(path.name for path in self.out.glob("*.parquet"))

    def check_file(self, first_day: str) -> None:
        """The week's file holds exactly the feed's objects of its seven days."""
        import pyarrow.parquet as pq

        start = datetime.fromisoformat(first_day)
        week = {"start_date": first_day, "end_date": f"{(start + timedelta(days=6)).date()}"}
        days = [(start + timedelta(days=n)).date() for n in range(7)]
        body = {"near_earth_objects": {d.isoformat(): weekly.fake_objects(d) for d in days}}
        rows = pq.read_table(self.out / f"neo-{first_day}.parquet").to_pylist()
        assert rows == weekly.flatten(week, body)


def test_weekly_job_pulls_each_week_once_and_the_open_week_again_when_complete(
    backend: str, tmp_path: Path
) -> None:
    """Run, a week passes, run: finished weeks once each, the open week again, whole."""
    job = WeeklyJob(tmp_path, backend)
    result = job.run()
    weeks = job.weeks
    assert "pull (dead letters)" not in result.statistics  # nothing failed before
    assert result.statistics["pull"].items_out == 5
    assert job.pulled() == Counter(weeks)
    assert job.files() == [f"neo-{start}.parquet" for start in weeks]
    for start in weeks[:4]:
        job.check_file(start)

    job.clock.run(anyio.sleep, fg.WEEK)
    job.run()
    weeks.append(week_starts(job.since, 6)[-1])
    assert job.pulled() == Counter(weeks) + Counter([weeks[4]])  # last week's, now whole
    assert job.files() == [f"neo-{start}.parquet" for start in weeks]
    job.check_file(weeks[4])
    assert table(tmp_path / "state.db", "SELECT name FROM flowgraph_quotas") == [("api.nasa.gov",)]


def test_a_week_that_failed_is_pulled_by_the_next_run(backend: str, tmp_path: Path) -> None:
    """An outage past the retries leaves a dead letter and no file; the next run replays it,
    beside the open week, and the letter is gone once the week's file is in place."""

    def outage(weeks: list[str]) -> FaultPlan:
        second_week = {"start_date": weeks[1]}
        fault = ScheduledFault(
            "server_error", attempts=range(1, 5), path=weekly.FEED, query=second_week
        )
        return FaultPlan(schedule=[fault])

    job = WeeklyJob(tmp_path, backend, outage)
    broken = job.weeks[1]
    result = job.run()
    assert result.statistics["pull"].dead_lettered == 1
    assert f"neo-{broken}.parquet" not in job.files()
    assert len(job.transport.records.filter(query={"start_date": broken})) == 4
    (letter,) = anyio.run(fg.DeadLetters(job.state).list)
    assert (letter.node, letter.item["start_date"]) == ("pull", broken)

    result = job.run()
    assert result.statistics["pull (dead letters)"].items_out == 1
    assert result.statistics["weeks"].items_out == 1  # the open week, again
    assert result.statistics["pull"].dead_lettered == 0
    assert len(job.transport.records.filter(query={"start_date": broken})) == 5
    assert len(job.files()) == 5
    job.check_file(broken)
    assert anyio.run(fg.DeadLetters(job.state).list) == []


def test_a_failed_run_resumes_after_the_last_finished_week(backend: str, tmp_path: Path) -> None:
    """A run that dies half-way: the restart pulls from the checkpoint on, and no file is torn."""
    job = WeeklyJob(tmp_path, backend, lambda weeks: FaultPlan())
    weeks = job.weeks
    blocker = job.out / f"neo-{weeks[2]}.parquet"
    blocker.mkdir()  # the third week's file cannot be put in place: the sink fails
    with pytest.raises(fg.NodeError, match=r"^node 'write' failed on item "):
        job.run()
    assert not [path for path in job.out.iterdir() if path.name.startswith(".")]
    (position,) = anyio.run(fg.Checkpoints(job.state).load, "neo-weekly").values()
    resumed_at = datetime.fromisoformat(position).date().isoformat()
    assert weeks[0] < resumed_at <= weeks[2]  # the first week at least, never the broken one
    before = job.pulled()

    blocker.rmdir()
    job.run()
    again = job.pulled() - before
    assert again == Counter(start for start in weeks if start >= resumed_at)
    assert job.files() == [f"neo-{start}.parquet" for start in weeks]
    for start in weeks[:4]:
        job.check_file(start)


def test_weekly_script_resumes_from_its_state(tmp_path: Path) -> None:
    """The script, run twice: five weeks, then only the open one, into the same files."""
    since = (datetime.now(UTC) - timedelta(weeks=4, days=3, hours=12)).date().isoformat()
    first = script("weekly_windows_to_parquet", "--since", since, "--out", "neo", cwd=tmp_path)
    assert first.startswith("weeks: 5 new, 0 that failed before\nweeks pulled: 5 in")
    second = script("weekly_windows_to_parquet", "--since", since, "--out", "neo", cwd=tmp_path)
    assert second.startswith("weeks: 1 new, 0 that failed before\nweeks pulled: 1 in")
    assert len(list((tmp_path / "neo").glob("neo-*.parquet"))) == 5


# -- 4. PostgreSQL ETL -----------------------------------------------------------------------


def facts(url: str, etl: ModuleType) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The target table, and what it should hold: every source row through ``fact``."""
    columns = ", ".join(etl.COLUMNS)
    with connect(url) as connection:
        cursor = connection.cursor(row_factory=__import__("psycopg").rows.dict_row)
        source = cursor.execute('SELECT * FROM "Raw Orders" ORDER BY id').fetchall()
        loaded = connection.execute(f'SELECT {columns} FROM "Order Facts" ORDER BY id').fetchall()
    expected = [tuple(etl.fact(row).values()) for row in source]
    return [tuple(row) for row in loaded], expected


def test_etl_loads_every_order_cleaned_then_only_new_ones(
    postgres_schema_url: str, backend: str, tmp_path: Path
) -> None:
    """Each run copies the orders added since the last one; the target matches the source."""
    etl = example("postgres_etl")
    url = postgres_schema_url
    first = script(
        "postgres_etl",
        "--rows",
        "3000",
        "--backend",
        backend,
        cwd=tmp_path,
        env={"DATABASE_URL": url},
    )
    assert "3000 new orders in 'Raw Orders'; read 3000" in first
    assert re.search(r"loaded 3000 rows into 'Order Facts' in [\d.]+s: [\d,]+ rows/s", first)
    loaded, expected = facts(url, etl)
    assert len(loaded) == 3000
    assert loaded == expected
    assert expected[0][2:5] == ("FR", 74, "Livraison tres rapide, merci ! #1")  # 2 x 0.37

    second = script(
        "postgres_etl", "--url", url, "--rows", "4500", "--backend", backend, cwd=tmp_path
    )
    assert "1500 new orders in 'Raw Orders'; read 1500" in second
    loaded, expected = facts(url, etl)
    assert len(loaded) == 4500
    assert loaded == expected


def test_etl_without_a_database_says_how_to_get_one(tmp_path: Path) -> None:
    """No URL: nothing starts, and the output says what to pass."""
    env = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "postgres_etl.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert proc.returncode == 0
    assert proc.stdout.startswith("postgres_etl.py needs a PostgreSQL database: pass --url")


def wait_for_dead_clients(url: str) -> None:
    """Wait until PostgreSQL has ended a killed client's sessions (a last COMMIT may land)."""
    deadline = time.monotonic() + 10
    query = (
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
    )
    while True:
        with connect(url) as connection:
            if connection.execute(query).fetchone()[0] == 0:
                return
        assert time.monotonic() < deadline, "sessions outlived the killed process"
        time.sleep(0.01)


def checkpoint(url: str) -> int | None:
    with connect(url) as connection:
        if connection.execute("SELECT to_regclass('flowgraph_checkpoints')").fetchone()[0] is None:
            return None
        row = connection.execute(
            "SELECT position FROM flowgraph_checkpoints WHERE graph = 'orders-etl'"
        ).fetchone()
    return None if row is None else int(json.loads(row[0]))


@pytest.mark.timeout(120)
def test_etl_killed_mid_run_resumes_and_loads_each_order_once(
    postgres_schema_url: str, tmp_path: Path
) -> None:
    """kill -9 after some batches: the restart reads from the checkpoint; no row lost or doubled."""
    etl = example("postgres_etl")
    url, rows = postgres_schema_url, 40_000
    command = [sys.executable, str(EXAMPLES / "postgres_etl.py"), "--url", url, "--rows", str(rows)]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while (position := checkpoint(url)) is None:
            assert process.poll() is None, "the ETL finished before a checkpoint could be seen"
            assert time.monotonic() < deadline, "no checkpoint was committed"
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        assert process.wait(10) == -signal.SIGKILL
    finally:
        if process.poll() is None:  # pragma: no cover
            process.kill()
            process.wait(10)
    assert position < rows, "the ETL finished before it could be killed"
    wait_for_dead_clients(url)
    resumed = checkpoint(url)
    assert resumed is not None

    output = script("postgres_etl", "--url", url, "--rows", str(rows), cwd=tmp_path)
    read = int(re.search(r"read (\d+) through", output)[1])  # type: ignore[index]
    assert read == rows - resumed
    loaded, expected = facts(url, etl)
    assert len(loaded) == rows
    assert loaded == expected
