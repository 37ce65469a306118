"""Upsert sinks: one row per key in SQLite and PostgreSQL, however often items are replayed."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import anyio
import pytest
from anyio import wait_all_tasks_blocked
from databases import connect

import flowgraph as fg
from flowgraph._sinks import _sqlite


def query(url: str, sql: str) -> list[tuple[Any, ...]]:
    with connect(url) as connection:
        return [tuple(row) for row in connection.execute(sql).fetchall()]


def execute(url: str, sql: str) -> None:
    with connect(url) as connection:
        connection.execute(sql)
        if url.startswith("sqlite:///"):
            connection.commit()


def store_graph(items: list[Any], sink: fg.Upsert, **options: Any) -> fg.Graph:
    graph = fg.Graph("load")
    graph.chain(graph.source(items, name="items"), graph.sink(sink, **options))
    return graph


async def test_replayed_items_leave_one_row_per_key(database_url: str) -> None:
    """Running the same load twice, then with new values, keeps one row per key, updated."""
    items = [{"id": i, "name": f"n{i}", "score": i * 0.5} for i in range(50)]
    sink = fg.Upsert(database_url, "events")
    graph = store_graph(items, sink, workers=4)
    await graph.run()
    await graph.run()
    assert query(database_url, "SELECT count(*), count(DISTINCT id) FROM events") == [(50, 50)]
    await store_graph([{**item, "name": "new"} for item in items[:10]], sink).run()
    rows = query(database_url, "SELECT id, name, score FROM events ORDER BY id")
    assert rows[:2] == [(0, "new", 0.0), (1, "new", 0.5)]
    assert rows[10:12] == [(10, "n10", 5.0), (11, "n11", 5.5)]


async def test_an_item_updates_only_the_columns_it_has(database_url: str) -> None:
    """On conflict, columns missing from the item keep their values."""
    async with fg.Upsert(database_url, "t") as sink:
        await sink({"id": 1, "a": "x", "b": 2})
        await sink({"id": 1, "b": 3})
        await sink({"id": 2, "b": 4})
        await sink({"id": 2})
    assert query(database_url, "SELECT id, a, b FROM t ORDER BY id") == [(1, "x", 3), (2, None, 4)]


async def test_values_are_stored_with_types_inferred_from_the_first_item(database_url: str) -> None:
    """int, float, str, bytes, bool, JSON, datetime, date, Decimal and UUID columns."""
    when = dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.UTC)
    ident = uuid.UUID(int=7)
    item = {
        "id": 1,
        "f": 1.5,
        "s": "text",
        "b": b"\x00\x01",
        "ok": True,
        "doc": {"k": [1, 2]},
        "at": when,
        "day": when.date(),
        "amount": Decimal("1.10"),
        "ref": ident,
    }
    async with fg.Upsert(database_url, "typed") as sink:
        await sink(item)
    (row,) = query(database_url, "SELECT f, s, b, ok, doc, at, day, amount, ref FROM typed")
    if database_url.startswith("sqlite"):
        expected = (1.5, "text", b"\x00\x01", 1, '{"k":[1,2]}')
        assert row == (*expected, when.isoformat(), "2024-05-06", "1.10", str(ident))
    else:
        assert row == (
            1.5,
            "text",
            b"\x00\x01",
            True,
            {"k": [1, 2]},
            when,
            when.date(),
            Decimal("1.10"),
            ident,
        )


async def test_columns_mapping_creates_the_table_with_those_types_when_opened(
    database_url: str,
) -> None:
    """columns={name: SQL type} creates the table at open, before any item."""
    types = {"id": "BIGINT", "body": "TEXT", "n": "INTEGER"}
    async with fg.Upsert(database_url, "declared", columns=types):
        pass
    if database_url.startswith("sqlite"):
        info = query(database_url, "SELECT name, type, pk FROM pragma_table_info('declared')")
        assert info == [("id", "BIGINT", 1), ("body", "TEXT", 0), ("n", "INTEGER", 0)]
    else:
        info = query(
            database_url,
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_name = 'declared' ORDER BY ordinal_position",
        )
        assert info == [("id", "bigint"), ("body", "text"), ("n", "integer")]


async def test_columns_sequence_writes_only_those_keys(database_url: str) -> None:
    """With columns=[...], other keys of an item are ignored."""
    async with fg.Upsert(database_url, "slim", columns=["id", "name"]) as sink:
        await sink({"id": 1, "name": "a", "payload": {"huge": True}})
    assert query(database_url, "SELECT * FROM slim") == [(1, "a")]


async def test_composite_key_and_a_list_item_in_one_transaction(database_url: str) -> None:
    """key=(a, b) identifies rows by both; a list of mappings is written together."""
    async with fg.Upsert(database_url, "pairs", key=("source", "id")) as sink:
        await sink([{"source": "x", "id": 1, "v": 1}, {"source": "y", "id": 1, "v": 2}])
        await sink([{"source": "x", "id": 1, "v": 3}])
    assert query(database_url, "SELECT source, id, v FROM pairs ORDER BY source") == [
        ("x", 1, 3),
        ("y", 1, 2),
    ]


async def test_one_bad_item_fails_alone_in_a_group_commit(database_url: str) -> None:
    """Items queued together share a transaction; a bad one fails only itself."""
    execute(database_url, "CREATE TABLE checked (id INTEGER PRIMARY KEY, v INTEGER CHECK (v >= 0))")
    items = [{"id": i, "v": -1 if i % 10 == 3 else i} for i in range(40)]
    result = await store_graph(
        items, fg.Upsert(database_url, "checked"), workers=8, on_error="skip"
    ).run()
    assert result.statistics["upsert_checked"].skipped == 4
    assert query(database_url, "SELECT count(*) FROM checked") == [(36,)]


async def test_concurrent_calls_are_committed_in_groups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Calls that arrive while a write runs go into the next transaction together."""
    transactions: list[int] = []
    transact = _sqlite.SQLiteTable.transact

    def counting(self: Any, rows: list[Any], table: Any, key: tuple[str, ...]) -> None:
        transactions.append(len(rows))
        transact(self, rows, table, key)

    monkeypatch.setattr(_sqlite.SQLiteTable, "transact", counting)
    async with fg.Upsert(tmp_path / "g.db", "g") as sink, anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(sink, {"id": i})
    assert sum(transactions) == 20
    assert len(transactions) < 20


async def test_a_call_cancelled_while_waiting_is_withdrawn(tmp_path: Path) -> None:
    """A call cancelled before its rows were taken writes nothing."""
    url = f"sqlite:///{tmp_path / 'c.db'}"
    async with fg.Upsert(url, "c") as sink:
        await sink({"id": 0})
        assert sink._group is not None
        lock, release = sink._group.lock, anyio.Event()

        async def hold_the_connection() -> None:
            async with lock:
                await release.wait()

        async with anyio.create_task_group() as tg:
            tg.start_soon(hold_the_connection)
            await wait_all_tasks_blocked()
            with anyio.move_on_after(0.01):
                await sink({"id": 1})
            release.set()
        await sink({"id": 2})
    assert query(url, "SELECT id FROM c ORDER BY id") == [(0,), (2,)]


async def test_item_without_the_key_is_a_clear_error(database_url: str) -> None:
    """A missing or None key names the key, the item and the table."""
    async with fg.Upsert(database_url, "events") as sink:
        with pytest.raises(
            ValueError, match=r"^item \{'name': 'x'\} has no key column 'id' for table 'events'$"
        ):
            await sink({"name": "x"})
        with pytest.raises(
            ValueError,
            match=r"^item \{'id': None\} has None as key column 'id' for table 'events'$",
        ):
            await sink({"id": None})
        with pytest.raises(TypeError, match=r"^Upsert into 'events' takes a mapping .*\(got 3\)$"):
            await sink(3)  # type: ignore[arg-type]


async def test_item_with_a_key_that_is_not_a_column_is_a_clear_error(database_url: str) -> None:
    """Keys the table lacks, or that cannot name a column, are refused before any SQL."""
    async with fg.Upsert(database_url, "events") as sink:
        await sink({"id": 1, "name": "a"})
        with pytest.raises(
            ValueError,
            match=r"^item \{'extra': 1, 'id': 2\} has key\(s\) \['extra'\] that are not columns of table 'events'",
        ):
            await sink({"id": 2, "extra": 1})
        with pytest.raises(
            ValueError,
            match=r"^item \{'': 1, 'id': 3\} has key '', which cannot be a column of table 'events': it is empty$",
        ):
            await sink({"id": 3, "": 1})
    assert query(database_url, "SELECT id FROM events") == [(1,)]


async def test_missing_key_fails_the_node_naming_the_item(tmp_path: Path) -> None:
    """In a run, the error reaches the caller as a NodeError for the sink and the item."""
    graph = store_graph([{"nope": 1}], fg.Upsert(tmp_path / "e.db", "events"))
    with pytest.raises(fg.NodeError, match=r"upsert_events.*\{'nope': 1\}") as info:
        await graph.run()
    assert isinstance(info.value.__cause__, ValueError)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"table": ""}, r"^table name '' is empty$"),
        ({"table": ".events"}, r"^schema '' is empty$"),
        (
            {"table": ("a", "b", "c")},
            r"^table must be 'name', 'schema.name' or a \('schema', 'name'\) tuple \(got \('a', 'b', 'c'\)\)$",
        ),
        ({"table": "nul\0"}, r"^table name 'nul\\x00' contains a NUL character$"),
        ({"key": 7}, r"^key column 7 must be a string \(got int\)$"),
        ({"key": ()}, r"^key columns must name at least one column$"),
        ({"key": ("a", "a"), "columns": ["a"]}, r"^key columns name \['a'\] more than once$"),
        ({"columns": ["id", ""]}, r"^column '' is empty$"),
        ({"columns": "id"}, r"^columns must be a list of names \(got 'id'\)$"),
        (
            {"columns": {"id": "TEXT); DROP TABLE x; --"}},
            r"^SQL type of column 'id' is malformed: 'TEXT\); DROP TABLE x; --'$",
        ),
        ({"columns": ["name"]}, r"^key column\(s\) \['id'\] must be among columns= \['name'\]$"),
        ({"url": "mysql://x"}, r"^Upsert needs a database URL: unsupported state store URL"),
        (
            {"url": "postgresql://h/db", "table": "t" * 64},
            r"^table name 't{64}' is longer than 63 bytes, and PostgreSQL would truncate it to another name$",
        ),
    ],
)
def test_bad_names_are_refused_at_declaration(options: dict[str, Any], message: str) -> None:
    """Names a database would refuse or silently change are refused when the sink is declared."""
    arguments: dict[str, Any] = {"url": "x.db", "table": "events", **options}
    with pytest.raises(fg.GraphError, match=message):
        fg.Upsert(arguments.pop("url"), arguments.pop("table"), **arguments)


async def test_existing_table_without_the_key_column_is_refused_when_opened(
    database_url: str,
) -> None:
    """A table that lacks the key column fails at open, saying what to pass."""
    execute(database_url, "CREATE TABLE legacy (uid INTEGER PRIMARY KEY, v TEXT)")
    with pytest.raises(
        fg.StoreError,
        match=r"^table 'legacy' has no key column\(s\) \['id'\]; pass key= naming the columns",
    ):
        async with fg.Upsert(database_url, "legacy"):
            pass  # pragma: no cover
    async with fg.Upsert(database_url, "legacy", key="uid") as sink:
        await sink({"uid": 1, "v": "a"})
        await sink({"uid": 1, "v": "b"})
    assert query(database_url, "SELECT uid, v FROM legacy") == [(1, "b")]


async def test_existing_table_without_a_unique_key_fails_with_the_database_error(
    database_url: str,
) -> None:
    """ON CONFLICT needs a unique constraint on the key; the error names table and item."""
    execute(database_url, "CREATE TABLE loose (id INTEGER, v TEXT)")
    async with fg.Upsert(database_url, "loose") as sink:
        with pytest.raises(
            fg.StoreError, match=r"^upsert into 'loose' failed on item \{'id': 1, 'v': 'a'\}: "
        ):
            await sink({"id": 1, "v": "a"})


async def test_a_call_outside_a_run_or_async_with_is_refused(tmp_path: Path) -> None:
    """The connection exists only while the sink is open."""
    sink = fg.Upsert(tmp_path / "x.db", "events")
    with pytest.raises(RuntimeError, match=r"^Upsert into 'events' is not open"):
        await sink({"id": 1})


async def test_schema_qualified_table_in_sqlite(tmp_path: Path) -> None:
    """'schema.table' is quoted part by part."""
    url = f"sqlite:///{tmp_path / 'q.db'}"
    async with fg.Upsert(url, "main.events") as sink:
        await sink({"id": 1})
    assert query(url, "SELECT id FROM events") == [(1,)]


def test_repr_and_node_name() -> None:
    """The repr is the call that rebuilds it; the node is named after the table."""
    sink = fg.Upsert(
        "sqlite:///d.db", "raw.events", key=("a", "b"), columns={"a": "TEXT", "b": "INT"}
    )
    assert repr(sink) == (
        "Upsert('sqlite:///d.db', 'raw.events', key=('a', 'b'), columns={'a': 'TEXT', 'b': 'INT'})"
    )
    assert fg.Graph("g").sink(sink).name == "upsert_raw_events"
    dotted = fg.Upsert("x.db", ("my.schema", "t"))
    assert repr(dotted) == "Upsert('x.db', ('my.schema', 't'), key='id')"


# -- one bad item fails alone (#13) ----------------------------------------------------------

BAD_VALUES: dict[str, tuple[dict[str, Any], str]] = {
    "datetime in a dict": (
        {"doc": {"at": dt.datetime(2024, 1, 1)}},
        r"column 'doc' holds a value JSON cannot encode \(Object of type datetime is not JSON serializable\)",
    ),
    "set in a list": (
        {"doc": [{1, 2}]},
        r"column 'doc' holds a value JSON cannot encode \(Object of type set is not JSON serializable\)",
    ),
    "NaN in a dict": (
        {"doc": {"x": float("nan")}},
        r"column 'doc' holds NaN or infinity, which JSON cannot represent",
    ),
    "infinity in a list": (
        {"doc": [float("inf")]},
        r"column 'doc' holds NaN or infinity, which JSON cannot represent",
    ),
}
TYPES = {"id": "BIGINT", "n": "BIGINT", "doc": "TEXT"}


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
async def test_a_value_that_cannot_be_stored_faithfully_is_refused_naming_the_item(
    database_url: str, case: str
) -> None:
    """JSON that Python would write as invalid text, or cannot encode, fails the item clearly."""
    values, reason = BAD_VALUES[case]
    bad = {"id": 7, **values}
    async with fg.Upsert(database_url, "docs", columns={**TYPES, "doc": "JSONB"}) as sink:
        with pytest.raises(
            ValueError,
            match=rf"^item \{{'doc': .*, 'id': 7\}} cannot be written to table 'docs': {reason}$",
        ):
            await sink(bad)
        await sink({"id": 8, "doc": {"ok": [1.5]}})
    assert query(database_url, "SELECT id FROM docs") == [(8,)]


async def test_nan_in_a_sqlite_column_is_refused_because_sqlite_stores_null(tmp_path: Path) -> None:
    """SQLite turns a float NaN into NULL: refused rather than stored as something else."""
    url = f"sqlite:///{tmp_path / 'nan.db'}"
    async with fg.Upsert(url, "t", columns={"id": "INTEGER", "x": "REAL"}) as sink:
        with pytest.raises(
            ValueError,
            match=r"^item \{'id': 1, 'x': nan\} cannot be written to table 't': column 'x' is NaN, which SQLite would store as NULL$",
        ):
            await sink({"id": 1, "x": float("nan")})
        await sink({"id": 2, "x": float("inf")})
    assert query(url, "SELECT id, x FROM t") == [(2, float("inf"))]


def bad_item(key: int) -> dict[str, Any]:
    """An item whose group write fails: in the encoder (JSON) or in the driver (an int too big)."""
    if key % 2:
        return {"id": key, "doc": {"when": {1, 2}}}
    # sqlite3 raises OverflowError (not a sqlite3.Error); PostgreSQL refuses it for BIGINT.
    return {"id": key, "n": 2**70}


@pytest.mark.parametrize("bad_key", [13, 14], ids=["encoder", "driver"])
async def test_one_bad_item_in_a_group_fails_alone_whatever_raised(
    database_url: str, bad_key: int
) -> None:
    """Calls queued behind a held connection share one flush; only the bad one raises."""
    items = [{"id": i, "n": i} for i in range(20)]
    items[bad_key] = bad_item(bad_key)
    outcomes: dict[int, BaseException | None] = {}

    async def write(sink: fg.Upsert, item: dict[str, Any]) -> None:
        try:
            await sink(item)
        except Exception as exc:
            outcomes[item["id"]] = exc
        else:
            outcomes[item["id"]] = None

    async with fg.Upsert(database_url, "grouped", columns=TYPES) as sink:
        assert sink._group is not None
        group = sink._group
        lock = group.lock
        async with anyio.create_task_group() as tg:
            await lock.acquire()
            for item in items:
                tg.start_soon(write, sink, item)
            await wait_all_tasks_blocked()
            assert len(group.pending) == 20
            lock.release()
    failed = {key: exc for key, exc in outcomes.items() if exc is not None}
    assert list(failed) == [bad_key]
    if bad_key == 13:
        assert str(failed[bad_key]) == (
            "item {'doc': {'when': {1, 2}}, 'id': 13} cannot be written to table 'grouped': "
            "column 'doc' holds a value JSON cannot encode (Object of type set is not JSON serializable)"
        )
    else:
        driver = "OverflowError" if database_url.startswith("sqlite") else "NumericValueOutOfRange"
        assert str(failed[bad_key]).startswith(
            f"upsert into 'grouped' failed on item {{'id': 14, 'n': {2**70}}}: {driver}: "
        )
    rows = query(database_url, "SELECT id FROM grouped ORDER BY id")
    assert rows == [(i,) for i in range(20) if i != bad_key]


@pytest.mark.parametrize("on_error", ["skip", "dead_letter", "raise"])
async def test_one_bad_item_fails_alone_under_each_on_error_policy(
    database_url: str, tmp_path: Path, on_error: Literal["skip", "dead_letter", "raise"]
) -> None:
    """Good items are written; exactly the bad one is skipped, dead-lettered or raised (#13)."""
    items: list[dict[str, Any]] = [{"id": i, "n": i} for i in range(200)]
    # JSON-serialisable, so the dead-letter store keeps it; the driver refuses it in a group.
    bad = items[57] = {"id": 57, "n": 2**70}
    graph = fg.Graph("load")
    sink = graph.sink(fg.Upsert(database_url, "alone", columns=TYPES), workers=8, on_error=on_error)
    graph.chain(graph.source(items, name="items"), sink)
    dead_letters = fg.DeadLetters(tmp_path / "state.db")
    if on_error == "raise":
        with pytest.raises(fg.NodeError) as info:
            await graph.run(dead_letters=dead_letters)
        assert info.value.item == bad
        assert isinstance(info.value.__cause__, fg.StoreError)
        assert str(info.value.__cause__).startswith(
            "upsert into 'alone' failed on item {'id': 57, 'n': 1180591620717411303424}: "
        )
        return
    result = await graph.run(dead_letters=dead_letters)
    assert query(database_url, "SELECT count(*) FROM alone") == [(199,)]
    if on_error == "skip":
        assert result.statistics[sink.name].skipped == 1
    else:
        async with dead_letters:
            letters = await dead_letters.list()
        assert [(letter.item, letter.error_type) for letter in letters] == [
            (bad, "flowgraph.StoreError")
        ]


# -- injection: names are quoted, never executed ---------------------------------------------

HOSTILE = {
    "table": 'evil"; DROP TABLE victim; --',
    "key": "Key With Spaces",
    "column": "col'); DROP TABLE victim; --\"",
}


async def test_hostile_table_and_column_names_are_quoted_never_executed(database_url: str) -> None:
    """Quotes, semicolons, spaces and capitals are stored as names; the victim table survives."""
    execute(database_url, "CREATE TABLE victim (id INTEGER)")
    table, key, column = HOSTILE["table"], HOSTILE["key"], HOSTILE["column"]
    async with fg.Upsert(database_url, table, key=key) as sink:
        await sink({key: 1, column: "a", "CamelCase": 1})
        await sink([{key: 1, column: "b"}, {key: 2, column: "c", "CamelCase": 2}])
    assert query(database_url, "SELECT count(*) FROM victim") == [(0,)]
    quoted = '"' + table.replace('"', '""') + '"'
    rows = query(database_url, f"SELECT * FROM {quoted} ORDER BY 1")
    assert rows == [(1, "b", 1), (2, "c", 2)]
    if database_url.startswith("sqlite"):
        names = [row[1] for row in query(database_url, f"PRAGMA table_info({quoted})")]
    else:
        names = [
            row[0]
            for row in query(
                database_url,
                "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass("
                + "'"
                + quoted.replace("'", "''")
                + "') AND attnum > 0 ORDER BY attnum",
            )
        ]
    assert names == [key, column, "CamelCase"]
