"""CopyInto: COPY rows and batches into a real PostgreSQL; with a key, replays are upserts."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest
from databases import connect

import flowgraph as fg

FAST_RETRY: dict[str, Any] = {"initial": 0.001, "cap": 0.002, "seed": 1}


def query(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with connect(url) as connection:
        return [tuple(row) for row in connection.execute(sql, params).fetchall()]


def execute(url: str, sql: str) -> None:
    with connect(url) as connection:
        connection.execute(sql)


@pytest.fixture
def url(postgres_schema_url: str) -> str:
    """A fresh schema holding ``events (id BIGINT PRIMARY KEY, name TEXT, body JSONB)``."""
    execute(
        postgres_schema_url, "CREATE TABLE events (id BIGINT PRIMARY KEY, name TEXT, body JSONB)"
    )
    return postgres_schema_url


def rows(n: int, start: int = 0, name: str = "n") -> list[dict[str, Any]]:
    return [{"id": i, "name": f"{name}{i}", "body": {"i": i}} for i in range(start, start + n)]


async def test_rows_and_batches_are_loaded_with_their_values(url: str) -> None:
    """A mapping is one row, a list is a batch; None is NULL, extra keys are ignored."""
    async with fg.CopyInto(url, "events", columns=["id", "name", "body"]) as sink:
        await sink({"id": 1, "name": "one", "body": {"k": [1, 2.5, None]}, "ignored": 1})
        await sink(
            [{"id": 2, "name": None, "body": None}, {"id": 3, "name": "tab\there", "body": [1]}]
        )
        await sink([])
    assert query(url, "SELECT id, name, body FROM events ORDER BY id") == [
        (1, "one", {"k": [1, 2.5, None]}),
        (2, None, None),
        (3, "tab\there", [1]),
    ]


async def test_without_a_key_a_replayed_batch_is_loaded_twice(url: str) -> None:
    """At least once: COPY appends, so a replay duplicates (a table without a key shows it)."""
    execute(url, "CREATE TABLE log (id BIGINT, name TEXT)")
    async with fg.CopyInto(url, "log", columns=["id", "name"]) as sink:
        await sink(rows(3))
        await sink(rows(3))
    assert query(url, "SELECT id, count(*) FROM log GROUP BY id ORDER BY id") == [
        (0, 2),
        (1, 2),
        (2, 2),
    ]


async def test_with_a_key_replays_rewrite_rows_and_the_last_row_of_a_batch_wins(url: str) -> None:
    """Exactly once in effect: staging table + ON CONFLICT; duplicates in a batch keep the last."""
    async with fg.CopyInto(url, "events", columns=["id", "name", "body"], key="id") as sink:
        await sink(rows(100))
        await sink(rows(100))
        await sink([*rows(10, start=95, name="new"), {"id": 0, "name": "first", "body": None}])
        await sink(
            [{"id": 0, "name": "second", "body": None}, {"id": 0, "name": "last", "body": {}}]
        )
    assert query(url, "SELECT count(*), count(DISTINCT id) FROM events") == [(105, 105)]
    assert query(
        url, "SELECT id, name, body FROM events WHERE id IN (0, 94, 95, 104) ORDER BY id"
    ) == [
        (0, "last", {}),
        (94, "n94", {"i": 94}),
        (95, "new95", {"i": 95}),
        (104, "new104", {"i": 104}),
    ]


async def test_composite_key_and_a_key_of_every_column(postgres_schema_url: str) -> None:
    """key=(a, b) upserts by both; when every column is key, a replay does nothing."""
    url = postgres_schema_url
    execute(url, "CREATE TABLE pairs (a TEXT, b INT, v INT, PRIMARY KEY (a, b))")
    execute(url, "CREATE TABLE seen (a TEXT, b INT, UNIQUE (b, a))")
    async with (
        fg.CopyInto(url, "pairs", columns=["a", "b", "v"], key=("a", "b")) as pairs,
        fg.CopyInto(url, "seen", columns=["a", "b"], key=["a", "b"]) as seen,
    ):
        await pairs([{"a": "x", "b": 1, "v": 1}, {"a": "y", "b": 1, "v": 2}])
        await pairs({"a": "x", "b": 1, "v": 3})
        await seen([{"a": "x", "b": 1}, {"a": "x", "b": 1}])
        await seen({"a": "x", "b": 1})
    assert query(url, "SELECT a, b, v FROM pairs ORDER BY a") == [("x", 1, 3), ("y", 1, 2)]
    assert query(url, "SELECT a, b FROM seen") == [("x", 1)]


async def test_a_key_matches_a_unique_index_in_any_order_ignoring_include_columns(
    postgres_schema_url: str,
) -> None:
    """key= names the columns of a unique index, in any order; INCLUDE columns are not key."""
    url = postgres_schema_url
    execute(url, 'CREATE TABLE wide ("Zone" TEXT, "at" INT, note TEXT)')
    execute(url, 'CREATE UNIQUE INDEX wide_key ON wide ("at", "Zone") INCLUDE (note)')
    async with fg.CopyInto(url, "wide", columns=["Zone", "at", "note"], key=["Zone", "at"]) as sink:
        await sink([{"Zone": "eu", "at": 1, "note": "a"}, {"Zone": "eu", "at": 1, "note": "b"}])
    assert query(url, "SELECT * FROM wide") == [("eu", 1, "b")]
    with pytest.raises(
        fg.StoreError,
        match=r"no primary key or unique constraint on exactly \['Zone', 'at', 'note'\]",
    ):
        async with fg.CopyInto(
            url, "wide", columns=["Zone", "at", "note"], key=["Zone", "at", "note"]
        ):
            pass  # pragma: no cover


async def test_a_failing_batch_fails_as_a_batch_naming_the_item(url: str) -> None:
    """One bad row rolls back its whole batch; the error names the batch; later batches load."""
    execute(url, "ALTER TABLE events ADD CONSTRAINT positive CHECK (id >= 0)")
    batch = [*rows(3), {"id": -1, "name": "bad", "body": None}]
    for key in (None, "id"):
        async with fg.CopyInto(url, "events", columns=["id", "name", "body"], key=key) as sink:
            with pytest.raises(
                fg.StoreError,
                match=r"^COPY into 'events' failed on item \[\{'body': \{'i': 0\}, 'id': 0, 'name': 'n0'\}, .*\.\.\.: CheckViolation: new row for relation \"events\" violates check constraint \"positive\"\n",
            ) as info:
                await sink(batch)
            assert query(url, "SELECT count(*) FROM events") == [(0,)]
            await sink(rows(2, start=10))
        execute(url, "DELETE FROM events")
    assert info.value.__cause__ is not None


async def test_bad_rows_are_clear_errors_naming_the_row_and_the_item(url: str) -> None:
    """A row without a column, a row that is not a mapping, NaN in JSON, an item of the wrong type."""
    async with fg.CopyInto(url, "events", columns=["id", "name", "body"], key="id") as sink:
        with pytest.raises(
            ValueError,
            match=r"^row 1 of item \[\{'body': None, 'id': 1, 'name': 'a'\}, \{'id': 2\}\] has no column\(s\) \['name', 'body'\] for table 'events'; give every column a value \(None for NULL\)$",
        ):
            await sink([{"id": 1, "name": "a", "body": None}, {"id": 2}])
        with pytest.raises(
            TypeError,
            match=r"^row 0 of item \[\(1, 'a', None\)\] is not a mapping of columns to values$",
        ):
            await sink([(1, "a", None)])  # type: ignore[list-item]
        with pytest.raises(
            ValueError,
            match=r"^item \{'body': \{'x': nan\}, 'id': 3, 'name': 'c'\} cannot be written to table 'events': column 'body' holds NaN or infinity, which JSON cannot represent$",
        ):
            await sink({"id": 3, "name": "c", "body": {"x": float("nan")}})
        with pytest.raises(
            TypeError,
            match=r"^CopyInto 'events' takes a mapping of columns to values, or a list of them \(got 'abc'\)$",
        ):
            await sink("abc")  # type: ignore[arg-type]
        await sink({"id": 4, "name": "d", "body": None})
    assert query(url, "SELECT id FROM events") == [(4,)]


async def test_batches_handed_over_together_still_fail_alone(url: str) -> None:
    """Calls queued while a load runs go to the thread together; each is its own transaction."""
    execute(url, "ALTER TABLE events ADD CONSTRAINT positive CHECK (id >= 0)")
    batches = [rows(5, start=10 * n) for n in range(6)]
    batches[3] = [*batches[3], {"id": -1, "name": "bad", "body": None}]
    outcomes: dict[int, BaseException | None] = {}

    async def load(sink: fg.CopyInto, number: int) -> None:
        try:
            await sink(batches[number])
        except fg.StoreError as exc:
            outcomes[number] = exc
        else:
            outcomes[number] = None

    async with fg.CopyInto(url, "events", columns=["id", "name", "body"], key="id") as sink:
        assert sink._group is not None
        group = sink._group
        async with anyio.create_task_group() as tg:
            await group.lock.acquire()
            for number in range(6):
                tg.start_soon(load, sink, number)
            await anyio.wait_all_tasks_blocked()
            assert len(group.pending) == 6
            group.lock.release()
    assert [n for n, exc in sorted(outcomes.items()) if exc is not None] == [3]
    loaded = [row[0] for row in query(url, "SELECT id FROM events ORDER BY id")]
    assert loaded == [10 * n + i for n in (0, 1, 2, 4, 5) for i in range(5)]


async def test_a_batch_in_a_graph_is_retried_and_dead_lettered_as_one_item(
    url: str, tmp_path: Path
) -> None:
    """retry= and on_error= apply to the batch: a bad batch is one dead letter, others load."""
    execute(url, "ALTER TABLE events ADD CONSTRAINT positive CHECK (id >= 0)")
    batches = [
        rows(10, start=0),
        [*rows(9, start=10), {"id": -5, "name": "x", "body": None}],
        rows(10, start=20),
    ]
    graph = fg.Graph("bulk")
    sink = graph.sink(
        fg.CopyInto(url, "events", columns=["id", "name", "body"], key="id"),
        retry=fg.Retry(attempts=2, **FAST_RETRY),
        on_error="dead_letter",
    )
    graph.chain(graph.source(batches, name="batches"), sink)
    dead_letters = fg.DeadLetters(tmp_path / "state.db")
    result = await graph.run(dead_letters=dead_letters)
    stats = result.statistics["copy_events"]
    assert (stats.dead_lettered, stats.retries) == (1, 1)
    async with dead_letters:
        (letter,) = await dead_letters.list()
    assert letter.item == batches[1]
    assert letter.attempts == 2
    assert query(url, "SELECT min(id), max(id), count(*) FROM events") == [(0, 29, 20)]


async def test_a_broken_connection_fails_one_call_and_the_next_reconnects(url: str) -> None:
    """After the server drops the session, the call fails with StoreError; a retry succeeds."""
    async with fg.CopyInto(url, "events", columns=["id", "name", "body"], key="id") as sink:
        await sink(rows(2))
        pid = sink._open_connection.connection.info.backend_pid
        assert query(url, "SELECT pg_terminate_backend(%s)", pid) == [(True,)]
        with pytest.raises(fg.StoreError, match=r"^COPY into 'events' failed on item "):
            await sink(rows(2, start=2))
        await sink(rows(2, start=2))
    assert query(url, "SELECT count(*) FROM events") == [(4,)]


async def test_hostile_schema_table_and_column_names_are_quoted_never_executed(
    postgres_schema_url: str,
) -> None:
    """Quotes, semicolons, spaces and capitals in every name are kept as names."""
    url = postgres_schema_url
    schema = f'Sch "{uuid.uuid4().hex[:8]}"; DROP TABLE victim; --'
    table = "Tab'le; DROP TABLE victim"
    columns = ['Key "Id"', "va;lue", "Upper Case"]
    q = ['"' + name.replace('"', '""') + '"' for name in (schema, table, *columns)]
    execute(url, "CREATE TABLE victim (id INT)")
    execute(url, f"CREATE SCHEMA {q[0]}")
    try:
        execute(
            url, f"CREATE TABLE {q[0]}.{q[1]} ({q[2]} INT PRIMARY KEY, {q[3]} TEXT, {q[4]} TEXT)"
        )
        for key in (None, columns[0]):
            async with fg.CopyInto(url, (schema, table), columns=columns, key=key) as sink:
                await sink(
                    [{columns[0]: 1, columns[1]: "a'); DROP TABLE victim; --", columns[2]: "b"}]
                )
        got = query(url, f"SELECT {q[2]}, {q[3]}, {q[4]} FROM {q[0]}.{q[1]}")
        assert got == [(1, "a'); DROP TABLE victim; --", "b")]
        assert query(url, "SELECT count(*) FROM victim") == [(0,)]
    finally:
        execute(url, f"DROP SCHEMA {q[0]} CASCADE")


@pytest.mark.parametrize(
    ("setup", "options", "message"),
    [
        ("", {"table": "nope"}, r"^table 'nope' does not exist; CopyInto loads an existing table$"),
        ("", {"columns": ["id", "size"]}, r"^table 'events' has no column\(s\) \['size'\]$"),
        (
            "CREATE TABLE loose (id INT, name TEXT)",
            {"table": "loose", "key": "id", "columns": ["id", "name"]},
            r"^table 'loose' has no primary key or unique constraint on exactly \['id'\], which key= needs for ON CONFLICT$",
        ),
        (
            "CREATE TABLE partial (id INT, name TEXT, UNIQUE (id, name))",
            {"table": "partial", "key": "id", "columns": ["id", "name"]},
            r"^table 'partial' has no primary key or unique constraint on exactly \['id'\]",
        ),
    ],
)
async def test_a_table_that_cannot_take_the_load_is_refused_when_the_sink_opens(
    url: str, setup: str, options: dict[str, Any], message: str
) -> None:
    """Missing table, missing column, or no unique constraint for key=: StoreError before any row."""
    if setup:
        execute(url, setup)
    arguments: dict[str, Any] = {"table": "events", "columns": ["id"], **options}
    sink = fg.CopyInto(url, arguments.pop("table"), **arguments)
    with pytest.raises(fg.StoreError, match=message):
        async with sink:
            pass  # pragma: no cover


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            {"url": "sqlite:///x.db"},
            r"^CopyInto needs a postgresql:// URL \(got 'sqlite:///x.db'\)$",
        ),
        (
            {"url": "mysql://h/db"},
            r"^CopyInto needs a postgresql:// URL: unsupported state store URL scheme 'mysql'",
        ),
        ({"columns": []}, r"^columns must name at least one column$"),
        ({"columns": ["a", "a"]}, r"^columns name \['a'\] more than once$"),
        ({"columns": "a"}, r"^columns must be a list of names \(got 'a'\)$"),
        ({"key": "b"}, r"^key column\(s\) \['b'\] must be among columns= \['a'\]$"),
        ({"table": "x" * 64}, r"^table name 'x{64}' is longer than 63 bytes"),
    ],
)
def test_bad_declarations_are_refused(arguments: dict[str, Any], message: str) -> None:
    """Wrong database, empty or repeated columns, a key outside the columns: GraphError."""
    given: dict[str, Any] = {
        "url": "postgresql://h/db",
        "table": "t",
        "columns": ["a"],
        **arguments,
    }
    with pytest.raises(fg.GraphError, match=message):
        fg.CopyInto(given.pop("url"), given.pop("table"), **given)


async def test_a_call_outside_a_run_or_async_with_is_refused() -> None:
    """The connection exists only while the sink is open."""
    with pytest.raises(RuntimeError, match=r"^CopyInto 'events' is not open"):
        await fg.CopyInto("postgresql://h/db", "events", columns=["id"])({"id": 1})


async def test_without_psycopg_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Opening without psycopg installed says which extra to install."""
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(
        ImportError, match=r"^CopyInto needs psycopg 3: pip install 'flowgraph\[postgres\]'$"
    ):
        async with fg.CopyInto("postgresql://h/db", "events", columns=["id"]):
            pass  # pragma: no cover


def test_repr_and_node_name() -> None:
    """The repr rebuilds the sink; the node is named after the table."""
    sink = fg.CopyInto("postgresql://h/db", "raw.events", columns=["id", "v"], key="id")
    assert (
        repr(sink) == "CopyInto('postgresql://h/db', 'raw.events', columns=['id', 'v'], key='id')"
    )
    assert fg.Graph("g").sink(sink).name == "copy_raw_events"
    pair = fg.CopyInto("postgresql://h/db", ("a.b", "t"), columns=["x", "y"], key=("x", "y"))
    assert (
        repr(pair)
        == "CopyInto('postgresql://h/db', ('a.b', 't'), columns=['x', 'y'], key=('x', 'y'))"
    )
