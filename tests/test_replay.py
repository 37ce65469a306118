"""Dead letters retried on the next run: fed back beside new input, removed only once processed.

Real stores (a SQLite file and the throwaway PostgreSQL server), real processes
and signals for the kill and the stop.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from databases import connect

import flowgraph as fg


def discard(item: object) -> None:
    """A sink that keeps nothing."""


START = datetime(2024, 3, 1, tzinfo=UTC)
DAY = timedelta(days=1)


class API:
    """A stand-in for a partner API that is down on some days."""

    def __init__(self) -> None:
        self.down: set[str] = set()
        self.loaded: list[str] = []


def daily(api: API, *, until: datetime) -> fg.Graph:
    """Daily windows from START -> span -> pull (dead-letters what fails) -> load."""
    g = fg.Graph("daily")
    days = g.source(fg.windows(start=START, every=DAY, until=until), name="days", checkpoint=True)

    @g.transform(inline=True)
    def span(window: fg.Window) -> list[str]:
        return [window.start.isoformat(), window.end.isoformat()]

    @g.transform(on_error="dead_letter")
    async def pull(span: list[str]) -> str:
        if span[0] in api.down:
            raise ConnectionError(f"partner API down for {span[0]}")
        return span[0]

    @g.sink
    async def load(day: str) -> None:
        api.loaded.append(day)

    g.chain(days, span, pull, load)
    return g


def day(n: int) -> str:
    return (START + n * DAY).isoformat()


async def letters(url: str) -> list[fg.DeadLetter]:
    return await fg.DeadLetters(url).list()


def stored_letters(url: str) -> list[fg.DeadLetter]:
    return anyio.run(letters, url)


def test_a_window_that_failed_yesterday_is_retried_by_todays_run(
    database_url: str, backend: str
) -> None:
    """Yesterday day 1 failed and was dead-lettered; today's run retries it beside day 2,
    and the letter is gone. The windows' own checkpoint is kept as before."""
    api = API()
    api.down = {day(1)}
    yesterday = fg.run(daily(api, until=START + 2 * DAY), state=database_url, backend=backend)
    assert api.loaded == [day(0)]
    assert [(x.node, x.item) for x in stored_letters(database_url)] == [("pull", [day(1), day(2)])]
    assert yesterday.statistics["pull"].dead_lettered == 1

    api.down.clear()
    api.loaded.clear()
    today = fg.run(
        daily(api, until=START + 3 * DAY),
        state=database_url,
        backend=backend,
        replay_dead_letters=True,
    )
    assert sorted(api.loaded) == [day(1), day(2)]
    assert stored_letters(database_url) == []
    assert today.statistics["pull (dead letters)"].items_out == 1
    assert today.statistics["days"].items_out == 1  # only the new day: the source resumed

    async def checkpoints() -> dict[str, Any]:
        return await fg.Checkpoints(database_url).load("daily")

    assert anyio.run(checkpoints) == {"days": day(3)}


def test_a_letter_whose_item_fails_again_stays_once(database_url: str, backend: str) -> None:
    """Still down today: the letter is replaced by today's (one letter, today's run id);
    tomorrow, with the API back, it goes through."""
    api = API()
    api.down = {day(0)}
    fg.run(daily(api, until=START + DAY), state=database_url, backend=backend)
    [first] = stored_letters(database_url)

    today = fg.run(
        daily(api, until=START + 2 * DAY),
        state=database_url,
        backend=backend,
        replay_dead_letters=True,
    )
    [again] = stored_letters(database_url)
    assert again.item == first.item == [day(0), day(1)]
    assert again.id != first.id
    assert again.run_id == today.run_id
    assert api.loaded == [day(1)]

    api.down.clear()
    fg.run(
        daily(api, until=START + 2 * DAY),
        state=database_url,
        backend=backend,
        replay_dead_letters=True,
    )
    assert stored_letters(database_url) == []
    assert api.loaded == [day(1), day(0)]


async def test_a_flow_replays_the_letters_of_each_of_its_graphs(tmp_path: Path) -> None:
    """await flow.run(replay_dead_letters=True): in your own event loop, graph by graph."""
    url = f"sqlite:///{tmp_path / 'state.db'}"
    api = API()
    api.down = {day(0)}
    dead_letters = fg.DeadLetters(url)
    checkpoints = fg.Checkpoints(url)
    await daily(api, until=START + DAY).run(dead_letters=dead_letters, checkpoints=checkpoints)
    assert len(await letters(url)) == 1
    api.down.clear()
    flow = fg.Flow()
    flow.add(daily(api, until=START + DAY))
    result = await flow.run(
        replay_dead_letters=True, dead_letters=dead_letters, checkpoints=checkpoints
    )
    assert api.loaded == [day(0)]
    assert result["daily"].statistics["pull (dead letters)"].items_out == 1
    assert await letters(url) == []


async def test_without_a_checkpoint_store_letters_are_still_removed(tmp_path: Path) -> None:
    """Only a dead-letter store: the replay tracks its items all the same."""
    dead_letters = fg.DeadLetters(tmp_path / "state.db")
    broken = True
    kept: list[int] = []

    async def work(x: int) -> int:
        if broken:
            raise ConnectionError("down")
        return x

    async def keep(x: int) -> None:
        kept.append(x)

    g = fg.Graph("plain")
    g.chain(g.source(range(3), name="src"), g.transform(work, on_error="dead_letter"), g.sink(keep))
    await g.run(dead_letters=dead_letters)
    broken = False
    flow = fg.Flow()
    flow.add(g)
    await flow.run(replay_dead_letters=True, dead_letters=dead_letters)
    assert sorted(kept) == [0, 0, 1, 1, 2, 2]  # replayed, and new input again
    assert await dead_letters.list() == []

    class InMemory:
        async def handle(self, failure: fg.Failure) -> None: ...

    with pytest.raises(
        fg.GraphError,
        match=r"^replay_dead_letters=True needs the dead letters in a store: pass state= or "
        r"dead_letters=fg.DeadLetters\(...\) \(got dead_letters=<.*InMemory object at .*>\)$",
    ):
        await flow.run(replay_dead_letters=True, dead_letters=InMemory())
    assert len(kept) == 6  # refused before any graph ran


def test_without_letters_the_graph_runs_as_it_is(tmp_path: Path) -> None:
    """Nothing stored: no extra node, the run is the plain run."""
    api = API()
    result = fg.run(
        daily(api, until=START + DAY), state=tmp_path / "state.db", replay_dead_letters=True
    )
    assert list(result.statistics) == ["days", "span", "pull", "load"]


def test_replaying_needs_a_store_of_dead_letters() -> None:
    """No state= and no DeadLetters: refused before anything runs."""
    api = API()
    with pytest.raises(
        fg.GraphError,
        match=r"^replay_dead_letters=True needs the dead letters in a store: pass state= or "
        r"dead_letters=fg.DeadLetters\(...\) \(got dead_letters=None\)$",
    ):
        fg.run(daily(api, until=START + DAY), replay_dead_letters=True)
    assert api.loaded == []


def test_a_letter_of_a_node_the_graph_no_longer_has_is_refused(tmp_path: Path) -> None:
    """The graph changed: a clear error naming the letter and the fix, before any input."""
    url = f"sqlite:///{tmp_path / 'state.db'}"
    old = fg.Graph("daily")

    def gone(x: int) -> None:
        raise ZeroDivisionError(x)

    old.connect(old.source([1], name="src"), old.sink(gone, on_error="dead_letter"))
    fg.run(old, state=url)
    api = API()
    with pytest.raises(
        fg.GraphError,
        match=r"^dead letter 1 is from node 'gone', which graph 'daily' does not have: purge it "
        r"\(flowgraph dlq purge --graph daily --node gone\) or run without replaying$",
    ):
        fg.run(daily(api, until=START + DAY), state=url, replay_dead_letters=True)
    assert api.loaded == []
    assert len(stored_letters(url)) == 1


def test_a_letter_of_a_source_stays_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A source takes no input: its letter is not replayed, and not lost either."""
    url = f"sqlite:///{tmp_path / 'state.db'}"
    g = fg.Graph("g")

    async def broken() -> AsyncIterator[int]:
        for n in range(0):
            yield n
        raise OSError("feed unreachable")

    g.connect(g.source(broken, name="feed", on_error="dead_letter"), g.sink(discard, name="s"))
    fg.run(g, state=url)
    caplog.set_level(logging.WARNING, logger="flowgraph")
    fg.run(g, state=url, replay_dead_letters=True)
    assert (
        "dead letter 1 is from source 'feed', which takes no input: not replayed, it stays in the store"
        in caplog.messages
    )
    assert [x.id for x in stored_letters(url)] == [1, 2]


def test_copy_is_the_same_graph_to_extend_apart() -> None:
    """Graph.copy keeps nodes, options, edges, routes, hooks and barriers; additions stay apart."""
    g = fg.Graph("g", workers=3)
    src = g.source(range(4), name="src")
    evens = g.sink(discard, name="evens")
    odds = g.sink(discard, name="odds", retry=fg.Retry(attempts=2))
    g.route(src, by=lambda x: x % 2, to={0: evens, 1: odds})
    g.on(fg.RunStarted)(print)
    g.after(evens, odds, name="both")(lambda statistics: None)
    copy = g.copy()
    assert copy.name == "g"
    assert copy.edges == g.edges
    assert copy.nodes["odds"].options == g.nodes["odds"].options
    assert copy.route_of("src") is not None
    assert copy.hooks == g.hooks
    assert copy.barriers == g.barriers
    copy.connect(copy.source([9], name="more"), "evens")
    assert "more" not in g.nodes
    assert g.upstream("evens") == ["src"]


# -- a kill or a stop in the middle of a replay ------------------------------------------------

N = 300
SCRIPT = r'''
import json, sqlite3, sys

import anyio
import anyio.to_thread

import flowgraph as fg

config = json.loads(sys.argv[1])
URL = config["url"]


class Done:
    """INSERT without a key: every delivery is a row, so duplicates show."""

    async def __aenter__(self):
        self.limiter = anyio.CapacityLimiter(1)
        self.connection = await anyio.to_thread.run_sync(self.connect, limiter=self.limiter)
        return self

    def connect(self):
        if URL.startswith("sqlite:///"):
            self.sql = "INSERT INTO done (item) VALUES (?)"
            return sqlite3.connect(URL[10:], isolation_level=None, check_same_thread=False, timeout=30)
        import psycopg

        self.sql = "INSERT INTO done (item) VALUES (%s)"
        return psycopg.connect(URL, autocommit=True)

    async def __aexit__(self, *exc_info):
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self.connection.close, limiter=self.limiter)

    async def __call__(self, item):
        await anyio.to_thread.run_sync(self.connection.execute, self.sql, (item,), limiter=self.limiter)


graph = fg.Graph("replayed")


@graph.transform(workers=4, on_error="dead_letter")
async def work(item):
    await anyio.sleep(config["delay"])
    return item


graph.chain(graph.source([], name="new"), work, graph.sink(Done(), name="done"))
print("starting", flush=True)
result = fg.run(
    graph,
    state=URL,
    replay_dead_letters=True,
    handle_signals=True,
    grace=10,
    checkpoint_every=10,
    backend=config["backend"],
)
print(json.dumps({"stopped": result.stopped}), flush=True)
'''


def fill_letters(url: str) -> None:
    """N dead letters of node 'work' of graph 'replayed', items 0..N-1."""
    g = fg.Graph("replayed")

    async def work(item: int) -> int:
        raise ConnectionError("down")

    g.chain(
        g.source(range(N), name="new"),
        g.transform(work, on_error="dead_letter"),
        g.sink(discard, name="done"),
    )
    fg.run(g, state=url)
    with connect(url) as db:
        db.execute("CREATE TABLE done (item BIGINT NOT NULL)")


def done_items(url: str) -> Counter[int]:
    with connect(url) as db:
        return Counter(row[0] for row in db.execute("SELECT item FROM done").fetchall())


def start_replay(tmp_path: Path, url: str, backend: str) -> subprocess.Popen[bytes]:
    """Start the replay script; its stderr goes to ``replay.err``."""
    script = tmp_path / "replay.py"
    script.write_text(SCRIPT)
    config = json.dumps({"url": url, "backend": backend, "delay": 0.02})
    with (tmp_path / "replay.err").open("wb") as err:
        return subprocess.Popen(
            [sys.executable, str(script), config], stdout=subprocess.DEVNULL, stderr=err
        )


def stderr(tmp_path: Path) -> str:
    return (tmp_path / "replay.err").read_text()[-3000:]


def wait_for_progress(process: subprocess.Popen[bytes], url: str, tmp_path: Path) -> None:
    deadline = time.monotonic() + 30
    while sum(done_items(url).values()) < 50:
        if process.poll() is not None:
            pytest.fail(f"replay exited early:\n{stderr(tmp_path)}")
        if time.monotonic() > deadline:
            pytest.fail(f"the replay made no progress in 30 s:\n{stderr(tmp_path)}")
        time.sleep(0.01)


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["kill", "stop"])
def test_a_kill_or_a_stop_in_the_middle_loses_no_letter(
    tmp_path: Path, database_url: str, backend: str, signum: signal.Signals
) -> None:
    """Interrupted half-way, every letter's item is processed or its letter is still stored;
    after a graceful stop, exactly one of the two. The next run finishes the rest."""
    fill_letters(database_url)
    process = start_replay(tmp_path, database_url, backend)
    try:
        wait_for_progress(process, database_url, tmp_path)
        process.send_signal(signum)
        process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    if signum == signal.SIGTERM:
        assert process.returncode == 0, stderr(tmp_path)
    kept = {letter.item for letter in stored_letters(database_url)}
    done = done_items(database_url)
    assert kept | set(done) == set(range(N))  # no letter lost
    assert 0 < len(done) < N
    if signum == signal.SIGTERM:
        assert kept.isdisjoint(done)  # the last commit covered every item drained
        assert max(done.values()) == 1

    finish = start_replay(tmp_path, database_url, backend)
    assert finish.wait(60) == 0, stderr(tmp_path)
    assert stored_letters(database_url) == []
    assert set(done_items(database_url)) == set(range(N))


def test_the_cli_replays_with_a_flag(tmp_path: Path) -> None:
    """flowgraph run --replay-dead-letters: the letters go through; without a store, exit 2."""
    (tmp_path / "jobs.py").write_text(
        textwrap.dedent(
            """
            import os
            import flowgraph as fg

            graph = fg.Graph("jobs")

            def work(x):
                if os.environ.get("BROKEN"):
                    raise ValueError(x)
                return x

            graph.chain(
                graph.source(range(3), name="src"),
                graph.transform(work, on_error="dead_letter"),
                graph.sink(print, name="sink"),
            )
            """
        )
    )
    url = f"sqlite:///{tmp_path / 'state.db'}"

    def flowgraph(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "flowgraph", "run", "jobs:graph", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            env={**__import__("os").environ, **env},
            timeout=60,
        )

    broken = flowgraph("--state", url, BROKEN="1")
    assert broken.returncode == 0, broken.stderr
    assert len(stored_letters(url)) == 3
    fixed = flowgraph("--state", url, "--replay-dead-letters")
    assert fixed.returncode == 0, fixed.stderr
    assert "work (dead letters)" in fixed.stdout
    assert stored_letters(url) == []
    usage = flowgraph("--replay-dead-letters")
    assert usage.returncode == 2
    assert usage.stderr.strip() == (
        "flowgraph: error: --replay-dead-letters needs the store that holds them: "
        "pass --state URL or --dead-letters URL"
    )
