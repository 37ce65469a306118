"""The StateStore protocol, run against SQLite and PostgreSQL alike."""

from __future__ import annotations

import datetime
import os
import re
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from databases import connect

import flowgraph._stores
from flowgraph._core._exceptions import StoreError
from flowgraph._core._policy import Failure
from flowgraph._stores import DeadLetter, StateStore, open_store

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from flowgraph._stores import JSONValue

REPO = Path(flowgraph._stores.__file__).resolve().parents[2]


class QuotaError(Exception):
    """A user-defined error, to check qualified type names."""


@dataclass(frozen=True)
class Row:
    """A user-defined item that only pickle can store."""

    key: int
    tags: frozenset[str]


def failure(item: Any = None, *, node: str = "parse", graph: str = "g", **kw: Any) -> Failure:
    """Build a Failure whose error carries a real traceback."""
    error: BaseException = kw.pop("error", ValueError("bad row"))
    try:
        raise error
    except BaseException as exc:
        error = exc
    return Failure(
        node=node, item=item, error=error, graph=graph, attempts=kw.pop("attempts", 1), **kw
    )


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[StateStore]:
    async with open_store(database_url) as opened:
        yield opened


async def run_python(code: str, *args: str) -> int:
    """Run *code* in a fresh Python process with flowgraph importable; return its exit code."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = await anyio.run_process(
        [sys.executable, "-c", textwrap.dedent(code), *args], env=env, check=False
    )
    assert process.stderr == b"", process.stderr.decode()
    return process.returncode


async def test_store_satisfies_protocol(store: StateStore) -> None:
    """Both stores are StateStores."""
    assert isinstance(store, StateStore)


async def test_dead_letter_round_trip_json(store: StateStore) -> None:
    """A dead letter comes back with its item, error, traceback and metadata."""
    item = {"id": 7, "name": "ünï", "nested": [1, 2.5, None, True]}
    sent = failure(item, error=QuotaError("over quota"), attempts=3, run_id="run-1", time=1234.5)
    id_ = await store.add_dead_letter(sent)
    got = await store.get_dead_letter(id_)
    assert got is not None
    assert got == DeadLetter(
        id=id_,
        graph="g",
        node="parse",
        run_id="run-1",
        item=item,
        error_type=f"{__name__}.QuotaError",
        message="over quota",
        traceback=got.traceback,
        attempts=3,
        time=1234.5,
        serializer="json",
    )
    assert got.traceback.startswith("Traceback (most recent call last):")
    assert got.traceback.endswith("QuotaError: over quota\n")


async def test_dead_letter_round_trip_pickle(store: StateStore) -> None:
    """With serializer='pickle', any picklable item comes back equal and of its own type."""
    item = (Row(1, frozenset({"a"})), {3: b"\x00\xff"})
    id_ = await store.add_dead_letter(failure(item), serializer="pickle")
    got = await store.get_dead_letter(id_)
    assert got is not None
    assert got.item == item
    assert got.serializer == "pickle"
    assert got.error_type == "ValueError"


async def test_unserialisable_item_is_refused_with_remedy(store: StateStore) -> None:
    """An item JSON cannot hold raises StoreError naming node, type and remedy; nothing is kept."""
    with pytest.raises(
        StoreError,
        match=r"^cannot dead-letter the item of type object from node 'parse' as JSON: "
        r"Object of type object is not JSON serializable; "
        r"pass serializer='pickle' to store any picklable object$",
    ):
        await store.add_dead_letter(failure(object()))
    assert await store.count_dead_letters() == 0


async def test_item_that_json_would_change_is_refused(store: StateStore) -> None:
    """A tuple would come back as a list, so JSON refuses it rather than alter it."""
    with pytest.raises(
        StoreError,
        match=r"^cannot dead-letter the item of type tuple from node 'parse' as JSON: "
        r"JSON would not give it back unchanged \(tuples become lists, non-string keys "
        r"become strings\); pass serializer='pickle' to store any picklable object$",
    ):
        await store.add_dead_letter(failure((1, 2)))


async def test_unpicklable_item_is_refused(store: StateStore) -> None:
    """An item pickle cannot hold raises StoreError naming the node and the type."""
    with pytest.raises(
        StoreError, match=r"^cannot dead-letter the item of type function from node 'parse': "
    ):
        await store.add_dead_letter(failure(lambda: None), serializer="pickle")
    assert await store.count_dead_letters() == 0


async def test_unknown_serializer_is_rejected(store: StateStore) -> None:
    """Only 'json' and 'pickle' are serializers."""
    with pytest.raises(ValueError, match=r"^serializer must be 'json' or 'pickle' \(got 'xml'\)$"):
        await store.add_dead_letter(failure(1), serializer="xml")  # type: ignore[arg-type]


async def test_awkward_error_text_is_kept(store: StateStore) -> None:
    """NUL bytes and lone surrogates in an error message are stored escaped, not dropped."""
    id_ = await store.add_dead_letter(failure(error=ValueError("a\x00b\udcffc")))
    got = await store.get_dead_letter(id_)
    assert got is not None
    assert got.message == "a\\x00b\\udcffc"


async def test_list_filters_and_order(store: StateStore) -> None:
    """Filters combine with AND, results come oldest first, limit caps them."""
    ids = [
        await store.add_dead_letter(failure(1, graph="g1", node="a", run_id="r1")),
        await store.add_dead_letter(failure(2, graph="g1", node="b", run_id="r1")),
        await store.add_dead_letter(failure(3, graph="g2", node="a", run_id="r2")),
        await store.add_dead_letter(
            failure(4, graph="g1", node="a", run_id="r2", error=QuotaError())
        ),
    ]
    assert ids == sorted(ids)

    async def items(**filters: Any) -> list[Any]:
        return [letter.item for letter in await store.list_dead_letters(**filters)]

    assert await items() == [1, 2, 3, 4]
    assert await items(graph="g1") == [1, 2, 4]
    assert await items(graph="g1", node="a") == [1, 4]
    assert await items(run_id="r2") == [3, 4]
    assert await items(error_type=f"{__name__}.QuotaError") == [4]
    assert await items(graph="g1", limit=2) == [1, 2]
    assert await items(limit=0) == []
    assert await items(graph="nope") == []
    assert await store.count_dead_letters(graph="g1", node="a") == 2
    assert await store.count_dead_letters(error_type="ValueError") == 3
    with pytest.raises(ValueError, match=r"^limit must be >= 0 \(got -1\)$"):
        await store.list_dead_letters(limit=-1)


async def test_remove_and_purge(store: StateStore) -> None:
    """remove deletes one letter; purge deletes what matches and says how many."""
    first = await store.add_dead_letter(failure(1, node="a"))
    for n in range(3):
        await store.add_dead_letter(failure(n, node="b"))
    await store.add_dead_letter(failure(9, node="a", graph="other"))

    assert await store.remove_dead_letter(first) is True
    assert await store.remove_dead_letter(first) is False
    assert await store.get_dead_letter(first) is None
    assert await store.purge_dead_letters(node="b") == 3
    assert await store.purge_dead_letters(node="b") == 0
    assert await store.count_dead_letters() == 1
    assert await store.purge_dead_letters() == 1
    assert await store.list_dead_letters() == []


async def test_ids_are_not_reused_after_purge(store: StateStore) -> None:
    """A new dead letter never takes the id of a removed one."""
    old = await store.add_dead_letter(failure(1))
    await store.purge_dead_letters()
    assert await store.add_dead_letter(failure(2)) > old


async def test_checkpoints_commit_and_reload(store: StateStore) -> None:
    """Any JSON position round-trips; a later commit updates only the sources it names."""
    positions: dict[str, JSONValue] = {
        "offsets": 41,
        "cursor": "eyJwYWdlIjo5fQ==",
        "watermark": 1717171717.25,
        "composite": {"page": 9, "ids": [1, 2], "done": False, "next": None},
    }
    assert await store.load_checkpoints("g") == {}
    assert await store.load_checkpoint("g", "offsets") is None
    await store.commit_checkpoints("g", positions)
    assert await store.load_checkpoints("g") == positions
    await store.commit_checkpoints("g", {"offsets": 42})
    assert await store.load_checkpoints("g") == {**positions, "offsets": 42}
    assert await store.load_checkpoint("g", "offsets") == 42
    assert await store.load_checkpoints("other") == {}
    await store.commit_checkpoints("g", {})


async def test_non_json_position_is_refused(store: StateStore) -> None:
    """A position that JSON would not return unchanged raises StoreError and commits nothing."""
    await store.commit_checkpoints("g", {"a": 1})
    bad: dict[str, Any] = {"a": 2, "b": datetime.date(2024, 1, 1)}
    with pytest.raises(
        StoreError,
        match=r"^checkpoint position of source 'b' in graph 'g' must be a JSON value "
        r"\(got datetime\.date\): Object of type date is not JSON serializable$",
    ):
        await store.commit_checkpoints("g", bad)
    assert await store.load_checkpoints("g") == {"a": 1}


async def test_multi_source_commit_is_atomic(store: StateStore) -> None:
    """If the database rejects one source's row, no source of that commit moves."""
    await store.commit_checkpoints("g", {"a": 1, "b": 1})
    bad: dict[Any, JSONValue] = {"a": 2, None: 2}
    with pytest.raises(StoreError):
        await store.commit_checkpoints("g", bad)
    assert await store.load_checkpoints("g") == {"a": 1, "b": 1}


async def test_cancelled_commit_is_all_or_nothing(store: StateStore) -> None:
    """A commit cancelled at any moment leaves every source moved or none."""
    sources = [f"s{n}" for n in range(200)]
    for attempt, delay in enumerate([0, 0.0005, 0.002, 0.01, 0.05]):
        graph = f"g{attempt}"
        with anyio.move_on_after(delay):
            await store.commit_checkpoints(graph, dict.fromkeys(sources, attempt))
        assert len(await store.load_checkpoints(graph)) in (0, len(sources))


async def test_concurrent_writers_lose_nothing(store: StateStore) -> None:
    """Fifty tasks writing through one store at once all get distinct, stored ids."""
    ids: list[int] = []

    async def write(n: int) -> None:
        ids.append(await store.add_dead_letter(failure(n, run_id=str(n))))
        await store.commit_checkpoints("g", {f"s{n}": n, "shared": n})

    async with anyio.create_task_group() as tg:
        for n in range(50):
            tg.start_soon(write, n)

    assert len(set(ids)) == 50
    letters = await store.list_dead_letters()
    assert sorted(letter.item for letter in letters) == list(range(50))
    checkpoints = await store.load_checkpoints("g")
    assert len(checkpoints) == 51
    assert checkpoints["shared"] in range(50)


async def test_state_survives_reopening(database_url: str) -> None:
    """Dead letters and checkpoints written before close are there after reopening."""
    async with open_store(database_url) as first:
        id_ = await first.add_dead_letter(failure({"k": 1}))
        await first.commit_checkpoints("g", {"src": 10})
    async with open_store(database_url) as second:
        letter = await second.get_dead_letter(id_)
        assert letter is not None
        assert letter.item == {"k": 1}
        assert await second.load_checkpoints("g") == {"src": 10}


async def test_state_survives_process_killed(database_url: str) -> None:
    """What a process committed is still there after it dies by SIGKILL without closing."""
    code = """
        import os, signal, sys, anyio
        from flowgraph._core._policy import Failure
        from flowgraph._stores import open_store

        async def main():
            async with open_store(sys.argv[1]) as store:
                await store.add_dead_letter(Failure("n", [1, 2], KeyError("k"), 2, graph="g"))
                await store.commit_checkpoints("g", {"src": {"page": 3}})
                os.kill(os.getpid(), signal.SIGKILL)

        anyio.run(main)
    """
    assert await run_python(code, database_url) == -9
    async with open_store(database_url) as store:
        [letter] = await store.list_dead_letters(graph="g")
        assert (letter.item, letter.error_type, letter.message, letter.attempts) == (
            [1, 2],
            "KeyError",
            "'k'",
            2,
        )
        assert await store.load_checkpoints("g") == {"src": {"page": 3}}


async def test_several_processes_writing_lose_nothing(database_url: str) -> None:
    """Processes sharing one store, writing at the same time, lose no dead letter."""
    code = """
        import sys, anyio
        from flowgraph._core._policy import Failure
        from flowgraph._stores import open_store

        async def main():
            async with open_store(sys.argv[1]) as store:
                for n in range(20):
                    await store.add_dead_letter(Failure("n", n, ValueError(), 1, graph=sys.argv[2]))
                    await store.commit_checkpoints("g", {sys.argv[2]: n})

        anyio.run(main)
    """
    async with open_store(database_url):
        pass
    codes: list[int] = []

    async def one(name: str) -> None:
        codes.append(await run_python(code, database_url, name))

    async with anyio.create_task_group() as tg:
        for name in ("p1", "p2", "p3"):
            tg.start_soon(one, name)
    assert codes == [0, 0, 0]
    async with open_store(database_url) as store:
        for name in ("p1", "p2", "p3"):
            assert [x.item for x in await store.list_dead_letters(graph=name)] == list(range(20))
        assert await store.load_checkpoints("g") == {"p1": 19, "p2": 19, "p3": 19}


async def test_closed_store_refuses_calls(database_url: str) -> None:
    """After aclose, calls raise StoreError; closing again does nothing."""
    async with open_store(database_url) as store:
        await store.aclose()
        with pytest.raises(StoreError, match=r"^the state store is closed$"):
            await store.count_dead_letters()
        await store.aclose()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "mysql://localhost/db",
            r"^unsupported state store URL scheme 'mysql'; use one of: "
            r"sqlite:///relative/path\.db, sqlite:////absolute/path\.db, a file path, postgresql://\.\.\.$",
        ),
        ("sqlite://state.db", r"^a SQLite store URL needs a path after three slashes: "),
        ("sqlite:///", r"^a SQLite store URL needs a path after three slashes: "),
        ("", r"^empty state store URL; use one of: "),
    ],
)
async def test_bad_url_is_rejected(url: str, message: str) -> None:
    """A URL of an unknown scheme or shape raises ValueError naming the accepted forms."""
    with pytest.raises(ValueError, match=message):
        async with open_store(url):
            pass


async def test_url_forms_for_sqlite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """sqlite:///relative, sqlite:////absolute, a bare path and a PathLike all open SQLite."""
    monkeypatch.chdir(tmp_path)
    targets: list[str | Path] = [
        "sqlite:///rel.db",
        f"sqlite:///{tmp_path}/abs.db",
        "bare.db",
        tmp_path / "p.db",
    ]
    for target in targets:
        async with open_store(target) as store:
            await store.commit_checkpoints("g", {"s": 1})
    for name in ["rel.db", "abs.db", "bare.db", "p.db"]:
        async with open_store(tmp_path / name) as store:
            assert await store.load_checkpoints("g") == {"s": 1}


async def test_postgres_url_without_psycopg_explains_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without psycopg, a PostgreSQL URL raises ImportError with the pip command."""
    monkeypatch.setitem(sys.modules, "psycopg", None)
    monkeypatch.delitem(sys.modules, "flowgraph._stores._postgres", raising=False)
    with pytest.raises(
        ImportError,
        match=r"^PostgreSQL state stores need psycopg 3: pip install 'flowgraph\[postgres\]'$",
    ):
        async with open_store("postgres://localhost/db"):
            pass


# -- what a store reads back is checked ------------------------------------------------


def write_raw(url: str, sql: str, *params: Any) -> None:
    """Change the database behind the store's back, as corruption or another tool would."""
    mark = "?" if url.startswith("sqlite") else "%s"
    with connect(url) as connection:
        connection.execute(sql.replace("?", mark), params)
        if url.startswith("sqlite"):
            connection.commit()


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (
            "{not json",
            r"Expecting property name enclosed in double quotes: line 1 column 2 \(char 1\)",
        ),
        ("NaN", r"NaN is not JSON"),
        ('{"a": Infinity}', r"Infinity is not JSON"),
    ],
)
async def test_corrupt_position_is_a_store_error_naming_the_row(
    store: StateStore, database_url: str, text: str, why: str
) -> None:
    """A stored position that is not JSON raises StoreError naming store, graph and source.

    Regression test for #13: a raw JSONDecodeError escaped from load_checkpoints.
    """
    await store.commit_checkpoints("g", {"good": 1, "bad": 2})
    write_raw(
        database_url,
        "UPDATE flowgraph_checkpoints SET position = ? WHERE graph = ? AND source = ?",
        text,
        "g",
        "bad",
    )
    message = (
        rf"^{re.escape(str(store))}: the checkpoint of source 'bad' in graph 'g' is corrupt, "
        rf"not a JSON value \({re.escape(repr(text))}\): {why}$"
    )
    with pytest.raises(StoreError, match=message):
        await store.load_checkpoints("g")
    with pytest.raises(StoreError, match=message):
        await store.load_checkpoint("g", "bad")
    assert await store.load_checkpoint("g", "good") == 1


async def test_one_corrupt_dead_letter_fails_alone(store: StateStore, database_url: str) -> None:
    """A corrupt row is a StoreError naming store and row; with errors=[] the rest still list."""
    ids = [await store.add_dead_letter(failure(n)) for n in range(3)]
    write_raw(
        database_url, "UPDATE flowgraph_dead_letters SET item = ? WHERE id = ?", b"{oops", ids[1]
    )
    message = (
        rf"^{re.escape(str(store))}: dead letter {ids[1]} is corrupt: cannot deserialise its "
        r"item \(json\): JSONDecodeError: Expecting property name enclosed in double quotes: "
        r"line 1 column 2 \(char 1\)$"
    )
    with pytest.raises(StoreError, match=message):
        await store.list_dead_letters()
    with pytest.raises(StoreError, match=message):
        await store.get_dead_letter(ids[1])
    errors: list[StoreError] = []
    assert [d.item for d in await store.list_dead_letters(errors=errors)] == [0, 2]
    assert [str(e) for e in errors] == [message[1:-1].replace("\\", "")]


# -- leases: one run per graph per store ------------------------------------------------


@pytest.mark.flowgraph_virtual_time
async def test_a_graph_lease_is_held_by_one_store_at_a_time(database_url: str) -> None:
    """While one store holds a graph's lease, another fails to take it; other graphs are free."""
    async with open_store(database_url) as first, open_store(database_url) as second:
        async with first.open_lease("g"):
            with pytest.raises(
                StoreError,
                match=rf"^graph 'g' is already running against {re.escape(str(second))} \(its "
                rf"lease is held by (flowgraph )?process {os.getpid()} on ",
            ):
                async with second.open_lease("g"):
                    pass
            async with second.open_lease("h"), second.open_lease("a graph/with odd name"):
                pass
        async with second.open_lease("g"):
            pass


LEASE_HOLDER = """
    import sys, anyio
    from flowgraph._stores import open_store

    async def main():
        async with open_store(sys.argv[1]) as store, store.open_lease("g"):
            print("held", flush=True)
            await anyio.sleep(float(sys.argv[2]))

    anyio.run(main)
"""


def test_a_lease_dies_with_its_holder(database_url: str) -> None:
    """Between real processes: a second holder is refused; after kill -9, a restart gets it at once."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def start(hold: float) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(LEASE_HOLDER), database_url, str(hold)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )

    first = start(60)
    try:
        assert first.stdout is not None
        assert first.stdout.readline() == "held\n"
        second = start(0)
        _, stderr = second.communicate(timeout=30)
        assert second.returncode == 1
        assert re.search(
            rf"StoreError: graph 'g' is already running against .* \(its lease is held by "
            rf"(flowgraph )?process {first.pid} on ",
            stderr,
        ), stderr
        first.kill()
        first.wait(10)
        started = time.monotonic()
        third = start(0)
        out, stderr = third.communicate(timeout=30)
        assert (third.returncode, out) == (0, "held\n"), stderr
        assert time.monotonic() - started < 10
    finally:
        first.kill()
        first.communicate()
