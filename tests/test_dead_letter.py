"""Dead letters: failed items are kept with their error, listed, and replayed without loss or duplicates."""

from __future__ import annotations

import os
import sys
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import flowgraph as fg

# Real time on purpose: the store works in threads, and a virtual clock jumps
# to the next timer while a thread is busy. Backoffs here are milliseconds.
FAST_RETRY: dict[str, Any] = {"initial": 0.001, "cap": 0.002, "seed": 1}


def pipeline(
    fails: dict[int, int], *, attempts: int, items: int
) -> tuple[fg.Graph, Counter[int], Counter[int]]:
    """A graph whose transform fails item i the first fails[i] times it sees it."""
    g = fg.Graph("dlq")
    calls: Counter[int] = Counter()
    delivered: Counter[int] = Counter()

    async def flaky(x: int) -> int:
        calls[x] += 1
        if calls[x] <= fails.get(x, 0):
            raise ConnectionError(f"try {calls[x]} of {x}")
        return x

    async def store(x: int) -> None:
        delivered[x] += 1

    g.chain(
        g.source(range(items), name="src"),
        g.transform(
            flaky,
            workers=4,
            retry=fg.Retry(attempts=attempts, **FAST_RETRY),
            on_error="dead_letter",
        ),
        g.sink(store),
    )
    return g, delivered, calls


async def test_failed_items_are_stored_with_their_error(tmp_path: Path) -> None:
    """A dead letter keeps node, item, error type and message, traceback, attempts and run id."""
    g, delivered, _ = pipeline({3: 99, 7: 99}, attempts=2, items=10)
    dlq = fg.DeadLetters(tmp_path / "state.db")
    result = await g.run(dead_letters=dlq)
    assert sorted(delivered) == [0, 1, 2, 4, 5, 6, 8, 9]
    assert result.statistics["flaky"].dead_lettered == 2
    letters = await dlq.list()
    assert sorted(letter.item for letter in letters) == [3, 7]
    letter = next(x for x in letters if x.item == 3)
    assert (letter.graph, letter.node, letter.run_id) == ("dlq", "flaky", result.run_id)
    assert (letter.error_type, letter.message, letter.attempts) == (
        "ConnectionError",
        "try 2 of 3",
        2,
    )
    assert "ConnectionError: try 2 of 3" in letter.traceback


async def test_unserialisable_item_fails_the_run_instead_of_vanishing(tmp_path: Path) -> None:
    """An item JSON cannot hold is a clear error, never a silent drop."""
    g = fg.Graph("g")

    async def boom(x: Any) -> None:
        raise ValueError("no")

    g.chain(g.source([{1, 2}], name="src"), g.sink(boom, on_error="dead_letter"))
    with pytest.raises(fg.StoreError, match=r"serializer='pickle'"):
        await g.run(dead_letters=fg.DeadLetters(tmp_path / "s.db"))


async def test_pickle_serializer_keeps_items_json_cannot(tmp_path: Path) -> None:
    """serializer='pickle' stores sets, tuples and other Python objects."""
    g = fg.Graph("g")

    async def boom(x: Any) -> None:
        raise ValueError("no")

    g.chain(g.source([{1, 2}, (3, 4)], name="src"), g.sink(boom, on_error="dead_letter"))
    dlq = fg.DeadLetters(tmp_path / "s.db", serializer="pickle")
    await g.run(dead_letters=dlq)
    assert [letter.item for letter in await dlq.list()] == [{1, 2}, (3, 4)]


async def test_replay_removes_letters_that_succeed_and_keeps_the_rest(tmp_path: Path) -> None:
    """Replay after a fix delivers the items downstream and removes their letters only."""
    fails = {2: 99, 5: 99, 8: 99}
    g, delivered, _ = pipeline(fails, attempts=1, items=10)
    dlq = fg.DeadLetters(f"sqlite:///{tmp_path}/state.db")
    await g.run(dead_letters=dlq)
    assert sorted(x.item for x in await dlq.list()) == [2, 5, 8]

    del fails[2], fails[5]  # "fix" two of them
    replay = await dlq.replay(g)
    assert (replay.replayed, len(replay.succeeded), len(replay.failed)) == (3, 2, 1)
    assert [x.item for x in await dlq.list()] == [8]
    assert sorted(delivered) == [0, 1, 2, 3, 4, 5, 6, 7, 9]
    assert delivered[2] == delivered[5] == 1


async def test_replay_filters_by_node_and_error_type(tmp_path: Path) -> None:
    """Only the letters matching the filters are replayed."""
    g, _, _ = pipeline({1: 99}, attempts=1, items=3)
    dlq = fg.DeadLetters(tmp_path / "s.db")
    await g.run(dead_letters=dlq)
    assert (await dlq.replay(g, error_type="KeyError")).replayed == 0
    assert (await dlq.replay(g, node="flaky", error_type="ConnectionError")).replayed == 1


async def test_replay_into_a_node_the_graph_lacks_is_refused(tmp_path: Path) -> None:
    """A letter from another version of the graph names the missing node."""
    g, _, _ = pipeline({1: 99}, attempts=1, items=3)
    dlq = fg.DeadLetters(tmp_path / "s.db")
    await g.run(dead_letters=dlq)
    other = fg.Graph("dlq")

    async def sink(x: int) -> None:
        pass

    other.chain(other.source([1], name="src"), other.sink(sink))
    with pytest.raises(
        fg.GraphError,
        match=r"^dead letter 1 is from node 'flaky', which graph 'dlq' does not have$",
    ):
        await dlq.replay(other)


async def test_purge_removes_matching_letters(tmp_path: Path) -> None:
    """purge() removes what matches and says how many."""
    g, _, _ = pipeline({1: 99, 2: 99}, attempts=1, items=3)
    dlq = fg.DeadLetters(tmp_path / "s.db")
    await g.run(dead_letters=dlq)
    assert await dlq.purge(node="other") == 0
    assert await dlq.purge(node="flaky") == 2
    assert await dlq.list() == []


def test_dead_letters_validate_their_options(tmp_path: Path) -> None:
    """Bad serializer or store are refused at construction."""
    with pytest.raises(
        fg.GraphError, match=r"^serializer must be 'json' or 'pickle' \(got 'yaml'\)$"
    ):
        fg.DeadLetters(tmp_path / "s.db", serializer="yaml")  # type: ignore[arg-type]
    with pytest.raises(
        fg.GraphError, match=r"^store must be a URL, a path or a StateStore \(got 3\)$"
    ):
        fg.DeadLetters(3)  # type: ignore[arg-type]


async def test_dead_letters_survive_a_process_restart(tmp_path: Path) -> None:
    """Letters written by one process are replayed by another."""
    db = tmp_path / "state.db"
    script = textwrap.dedent(
        f"""
        import flowgraph as fg
        g = fg.Graph("restart")
        async def parse(x):
            raise ValueError(f"bad {{x}}")
        async def sink(x):
            pass
        g.chain(g.source([1, 2, 3], name="src"), g.transform(parse, on_error="dead_letter"), g.sink(sink))
        fg.run(g, dead_letters=fg.DeadLetters({str(db)!r}))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    await anyio.run_process([sys.executable, "-c", script], env=env)

    g = fg.Graph("restart")
    got: list[int] = []

    async def parse(x: int) -> int:
        return x * 10

    async def sink(x: int) -> None:
        got.append(x)

    g.chain(g.source([], name="src"), g.transform(parse), g.sink(sink))
    replay = await fg.DeadLetters(db).replay(g)
    assert len(replay.succeeded) == 3
    assert sorted(got) == [10, 20, 30]
    assert await fg.DeadLetters(db).list() == []


@settings(max_examples=25)
@given(
    fails=st.dictionaries(st.integers(0, 29), st.integers(1, 4), max_size=15),
    attempts=st.integers(1, 4),
)
async def test_nothing_lost_nothing_duplicated_under_random_failures(
    tmp_path_factory: pytest.TempPathFactory, fails: dict[int, int], attempts: int
) -> None:
    """Retries deliver what they can, dead letters hold exactly the rest, replay delivers it."""
    db = tmp_path_factory.mktemp("dlq") / "state.db"
    g, delivered, _ = pipeline(fails, attempts=attempts, items=30)
    dlq = fg.DeadLetters(db)
    with anyio.fail_after(30):
        await g.run(dead_letters=dlq)
    dead = {x for x, k in fails.items() if k >= attempts}
    assert sorted(delivered) == sorted(set(range(30)) - dead)
    assert all(count == 1 for count in delivered.values())
    assert sorted(letter.item for letter in await dlq.list()) == sorted(dead)

    fails.clear()  # the fix
    replay = await dlq.replay(g)
    assert len(replay.succeeded) == len(dead)
    assert sorted(delivered) == list(range(30))
    assert all(count == 1 for count in delivered.values())
    assert await dlq.list() == []
