"""File sinks: JSON Lines, CSV and Parquet, each file written atomically when the run ends."""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import flowgraph as fg


def listing(directory: Path) -> list[str]:
    """Every file under *directory*, relative, sorted; hidden temporary files included."""
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


def lines(path: Path) -> list[Any]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def load(sink: Any, items: list[Any], **options: Any) -> fg.Graph:
    graph = fg.Graph("export")
    graph.chain(graph.source(items, name="items"), graph.sink(sink, **options))
    return graph


# -- JSON Lines ---------------------------------------------------------------------------------


async def test_json_lines_appear_only_when_the_sink_closes(tmp_path: Path) -> None:
    """Rows go to a hidden temporary file; the real name appears complete at close."""
    path = tmp_path / "events.jsonl"
    async with fg.JsonLines(path) as sink:
        await sink({"id": 1, "tags": ["a"]})
        await sink([{"id": 2, "at": dt.date(2024, 5, 6)}, {"id": 3, "n": Decimal("1.10")}])
        (temp,) = listing(tmp_path)
        assert temp.startswith(".events.jsonl.")
        assert temp.endswith(".tmp")
    assert listing(tmp_path) == ["events.jsonl"]
    assert lines(path) == [
        {"id": 1, "tags": ["a"]},
        {"id": 2, "at": "2024-05-06"},
        {"id": 3, "n": "1.10"},
    ]
    assert sink.paths == [path]


async def test_json_lines_refuses_what_json_cannot_represent_naming_the_item(
    tmp_path: Path,
) -> None:
    """NaN, infinity and sets fail their item; other items are written."""
    path = tmp_path / "strict.jsonl"
    ident = uuid.UUID(int=1)
    async with fg.JsonLines(path) as sink:
        with pytest.raises(
            ValueError,
            match=rf"^item \{{'id': 1, 'x': nan\}} cannot be written to '{path}': column 'x' holds NaN or infinity, which JSON cannot represent$",
        ):
            await sink({"id": 1, "x": float("nan")})
        with pytest.raises(
            ValueError, match=r"column 's' holds a value JSON cannot encode \(Object of type set"
        ):
            await sink([{"id": 2}, {"id": 3, "s": {1}}])
        await sink({"id": 4, "ref": ident, "at": dt.datetime(2024, 1, 1, 12, tzinfo=dt.UTC)})
    assert lines(path) == [{"id": 4, "ref": str(ident), "at": "2024-01-01T12:00:00+00:00"}]


async def test_a_graph_with_many_workers_writes_every_row_once(tmp_path: Path) -> None:
    """Concurrent calls share one file; every row of every batch lands exactly once."""
    items = [[{"id": i * 10 + j} for j in range(10)] for i in range(100)] + [{"id": -1}]
    sink = fg.JsonLines(tmp_path / "many.jsonl")
    await load(sink, items, workers=4).run()
    ids = sorted(row["id"] for row in lines(tmp_path / "many.jsonl"))
    assert ids == [-1, *range(1000)]


async def test_large_outputs_are_written_while_the_run_goes_on(tmp_path: Path) -> None:
    """Past the buffer (1 MiB), rows are written to the temporary file before the close."""
    async with fg.JsonLines(tmp_path / "big.jsonl") as sink:
        for i in range(3):
            await sink([{"id": i, "blob": "x" * 1000} for _ in range(500)])
        (temp,) = listing(tmp_path)
        assert (tmp_path / temp).stat().st_size > 1 << 20
    assert len(lines(tmp_path / "big.jsonl")) == 1500


# -- CSV ----------------------------------------------------------------------------------------


async def test_csv_has_a_header_and_cells_in_column_order(tmp_path: Path) -> None:
    """Extra keys are ignored, None is empty, dicts are JSON, dates ISO 8601."""
    path = tmp_path / "out.csv"
    sink = fg.CSV(path, columns=["id", "name", "meta", "day"])
    items = [
        {"day": dt.date(2024, 5, 6), "id": 1, "name": "a,b", "meta": {"k": [1]}, "extra": 0},
        [{"id": 2, "name": None, "meta": None, "day": None}],
    ]
    await load(sink, items).run()
    with path.open(newline="") as file:
        assert list(csv.reader(file)) == [
            ["id", "name", "meta", "day"],
            ["1", "a,b", '{"k":[1]}', "2024-05-06"],
            ["2", "", "", ""],
        ]


async def test_csv_rows_without_a_column_or_with_bytes_are_refused(tmp_path: Path) -> None:
    """A missing column or a bytes value fails the item, naming the row and the column."""
    path = tmp_path / "out.csv"
    async with fg.CSV(path, columns=["id", "name"]) as sink:
        with pytest.raises(
            ValueError,
            match=rf"^row 1 of item \[\{{'id': 1, 'name': 'a'\}}, \{{'id': 2\}}\] has no column\(s\) \['name'\] for '{path}'; give every column a value \(None for empty\)$",
        ):
            await sink([{"id": 1, "name": "a"}, {"id": 2}])
        with pytest.raises(
            ValueError,
            match=r"column 'name' holds bytes, which CSV cannot hold: decode them to text first$",
        ):
            await sink({"id": 3, "name": b"raw"})
        with pytest.raises(
            TypeError, match=r"^row 0 of item \[3\] is not a mapping of columns to values$"
        ):
            await sink([3])  # type: ignore[list-item]
        with pytest.raises(
            TypeError,
            match=r"^CSV takes a mapping of columns to values, or a list of them \(got 'x'\)$",
        ):
            await sink("x")  # type: ignore[arg-type]
        await sink({"id": 4, "name": "d"})
    assert path.read_bytes() == b"id,name\r\n4,d\r\n"


# -- Parquet ------------------------------------------------------------------------------------


async def test_parquet_widens_its_schema_until_the_first_row_group_is_written(
    tmp_path: Path,
) -> None:
    """int then float becomes double; a None-only column takes a later value's type."""
    path = tmp_path / "t.parquet"
    async with fg.Parquet(path) as sink:
        await sink([{"id": 1, "v": 1, "s": None}])
        await sink({"id": 2, "v": 2.5, "s": "x"})
        await sink({"id": 3})
    table = pq.read_table(path)
    assert table.schema.field("v").type == pa.float64()
    assert table.to_pylist() == [
        {"id": 1, "v": 1.0, "s": None},
        {"id": 2, "v": 2.5, "s": "x"},
        {"id": 3, "v": None, "s": None},
    ]


async def test_parquet_refuses_rows_that_do_not_fit_the_written_schema(tmp_path: Path) -> None:
    """Once a row group is written the schema is fixed; misfits fail their item only."""
    path = tmp_path / "fixed.parquet"
    async with fg.Parquet(path, row_group_size=3) as sink:
        await sink({"id": 1, "name": "a"})
        with pytest.raises(
            ValueError,
            match=rf"^item \{{'id': 'one'\}} cannot be written to '{path}': its columns do not fit the file's: Unable to merge: Field id has incompatible types: int64 vs string",
        ):
            await sink({"id": "one"})
        await sink([{"id": 2, "name": "b"}, {"id": 3, "name": "c"}])
        with pytest.raises(
            ValueError,
            match=rf"^item \{{'id': 4, 'name': 'd', 'zzz': 1\}} cannot be written to '{path}': column\(s\) \['zzz'\] are not in the file's schema$",
        ):
            await sink({"id": 4, "name": "d", "zzz": 1})
        with pytest.raises(
            ValueError, match=r"cannot be written to .*: column 'id' holds string, the file int64$"
        ):
            await sink({"id": "five", "name": "e"})
        with pytest.raises(
            ValueError,
            match=r"cannot be written to .*: column 'name' holds double, the file string$",
        ):
            await sink({"id": 6, "name": 6.5})
        await sink([{"id": 7}, {"id": 8, "name": None}])
    assert pq.read_table(path).to_pylist() == [
        {"id": 1, "name": "a"},
        {"id": 2, "name": "b"},
        {"id": 3, "name": "c"},
        {"id": 7, "name": None},
        {"id": 8, "name": None},
    ]
    assert pq.ParquetFile(path).metadata.num_row_groups == 2


async def test_parquet_hive_partitions_are_read_back_by_pyarrow_datasets(tmp_path: Path) -> None:
    """partition_by writes day=.../file.parquet per value; pyarrow restores the column."""
    sink = fg.Parquet(tmp_path / "events.parquet", partition_by="day", columns=["id", "day"])
    items = [
        [{"id": i, "day": f"2024-05-0{i % 2 + 1}", "noise": i} for i in range(6)],
        {"id": 6, "day": None},
        {"id": 7, "day": "a/b c"},
    ]
    await load(sink, items).run()
    assert listing(tmp_path) == [
        "day=2024-05-01/events.parquet",
        "day=2024-05-02/events.parquet",
        "day=__HIVE_DEFAULT_PARTITION__/events.parquet",
        "day=a%2Fb%20c/events.parquet",
    ]
    assert pq.read_table(tmp_path / "day=2024-05-01/events.parquet").column_names == ["id"]
    table = ds.dataset(tmp_path, format="parquet", partitioning="hive").to_table()
    got = sorted((row["id"], row["day"]) for row in table.to_pylist())
    assert got == [
        (0, "2024-05-01"),
        (1, "2024-05-02"),
        (2, "2024-05-01"),
        (3, "2024-05-02"),
        (4, "2024-05-01"),
        (5, "2024-05-02"),
        (6, None),
        (7, "a/b c"),
    ]


async def test_parquet_without_pyarrow_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Declaring a Parquet sink without pyarrow says which extra to install."""
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(
        ImportError, match=r"^fg.Parquet needs pyarrow: pip install 'flowgraph\[parquet\]'$"
    ):
        fg.Parquet("x.parquet")


def test_import_flowgraph_does_not_load_pyarrow() -> None:
    """pyarrow loads only when a Parquet sink is declared."""
    code = "import sys, flowgraph; print('pyarrow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- atomicity, second runs, patterns -----------------------------------------------------------


class Boom(Exception):
    pass


@pytest.mark.parametrize(
    "make",
    [
        lambda p: fg.JsonLines(p, exists="replace"),
        lambda p: fg.CSV(p, columns=["id"], exists="replace"),
        lambda p: fg.Parquet(p, exists="replace", row_group_size=2),
    ],
    ids=["jsonl", "csv", "parquet"],
)
async def test_a_failed_run_renames_nothing_and_leaves_no_temporary_file(
    tmp_path: Path, make: Any
) -> None:
    """A node failing mid-run: the temporary file is removed, the old file is untouched."""
    path = tmp_path / "out.data"
    path.write_bytes(b"old")
    graph = fg.Graph("failing")

    async def rows(n: int) -> list[dict[str, int]]:
        if n == 5:
            raise Boom
        return [{"id": n}]

    sink = graph.sink(make(path))
    graph.chain(graph.source(range(10), name="numbers"), graph.transform(rows), sink)
    with pytest.raises(fg.NodeError, match=r"^node 'rows' failed on item 5"):
        await graph.run()
    assert listing(tmp_path) == ["out.data"]
    assert path.read_bytes() == b"old"


async def test_a_cancelled_run_renames_nothing(tmp_path: Path) -> None:
    """Cancellation discards the temporary files like an error does."""
    graph = fg.Graph("cancelled")

    async def endless() -> Any:
        i = 0
        while True:
            yield {"id": i}
            i += 1

    graph.chain(graph.source(endless), graph.sink(fg.JsonLines(tmp_path / "x.jsonl")))
    with anyio.move_on_after(0.2):
        await graph.run()
    assert listing(tmp_path) == []


async def test_a_graceful_stop_commits_what_was_written(tmp_path: Path) -> None:
    """run.stop() drains the items emitted, then the file is renamed into place with them."""
    graph = fg.Graph("stopped")
    emitted = anyio.Event()

    async def endless() -> Any:
        i = 0
        while True:
            yield {"id": i}
            i += 1
            if i == 50:
                emitted.set()
            await anyio.lowlevel.checkpoint()

    graph.chain(graph.source(endless), graph.sink(fg.JsonLines(tmp_path / "x.jsonl")))
    async with fg.open_run(graph) as run:
        await emitted.wait()
        run.stop()
    assert run.result.stopped
    ids = [row["id"] for row in lines(tmp_path / "x.jsonl")]
    assert ids == list(range(len(ids)))
    assert len(ids) >= 50


async def test_a_second_run_into_a_fixed_path_is_refused_before_it_starts(tmp_path: Path) -> None:
    """exists="error": FileExistsError when the sink opens; the first file is untouched."""
    path = tmp_path / "once.jsonl"
    sink = fg.JsonLines(path)
    await load(sink, [{"id": 1}]).run()
    with pytest.raises(
        FileExistsError,
        match=rf"^JsonLines: {path} already exists; pass exists='replace' to replace it when the run finishes, or put \{{run\}} in the path for a new file per run$",
    ):
        await load(sink, [{"id": 2}]).run()
    assert lines(path) == [{"id": 1}]
    await load(fg.JsonLines(path, exists="replace"), [{"id": 3}]).run()
    assert lines(path) == [{"id": 3}]


async def test_run_placeholder_writes_a_new_file_per_run(tmp_path: Path) -> None:
    """{run} names files after the run's start time; runs never collide and sort in order."""
    sink = fg.CSV(tmp_path / "export-{run}.csv", columns=["id"])
    for i in range(3):
        await load(sink, [{"id": i}]).run()
    names = listing(tmp_path)
    assert len(names) == 3
    assert [(tmp_path / n).read_bytes() for n in names] == [
        b"id\r\n0\r\n",
        b"id\r\n1\r\n",
        b"id\r\n2\r\n",
    ]
    assert all(re.fullmatch(r"export-20\d{6}T\d{12}Z-[0-9a-f]{6}\.csv", n) for n in names)


async def test_column_fields_route_rows_to_one_file_per_value(tmp_path: Path) -> None:
    """{day} sends each row to its day's file, created with its directories on demand."""
    sink = fg.JsonLines(tmp_path / "{kind}" / "{day}.jsonl")
    rows = [{"kind": "a", "day": dt.date(2024, 5, d), "id": d} for d in (1, 2, 1)]
    await load(sink, [rows, {"kind": "b", "day": "x", "id": 9}]).run()
    assert listing(tmp_path) == ["a/2024-05-01.jsonl", "a/2024-05-02.jsonl", "b/x.jsonl"]
    assert [r["id"] for r in lines(tmp_path / "a/2024-05-01.jsonl")] == [1, 1]
    assert sorted(sink.paths) == sorted(tmp_path / n for n in listing(tmp_path))


async def test_column_fields_refuse_values_that_would_change_the_directory(tmp_path: Path) -> None:
    """A value with a slash, '..' or nothing at all, or a missing column, fails the item."""
    async with fg.JsonLines(tmp_path / "{day}.jsonl") as sink:
        with pytest.raises(
            ValueError,
            match=r"^item \{'day': '\.\./up'\} has day='\.\./up', which cannot be part of a file path$",
        ):
            await sink({"day": "../up"})
        with pytest.raises(
            ValueError, match=r"^item \{'day': ''\} has day='', which cannot be part"
        ):
            await sink({"day": ""})
        with pytest.raises(
            ValueError, match=r"^item \{'id': 1\} has no column 'day', which the path names$"
        ):
            await sink({"id": 1})
    assert listing(tmp_path) == []


async def test_a_routed_file_that_exists_fails_the_item_routed_to_it(tmp_path: Path) -> None:
    """With fields, exists="error" is checked when a file's first row arrives."""
    (tmp_path / "a.jsonl").write_text("keep")
    async with fg.JsonLines(tmp_path / "{k}.jsonl") as sink:
        await sink({"k": "b"})
        with pytest.raises(FileExistsError, match=r"a\.jsonl already exists"):
            await sink({"k": "a"})
    assert listing(tmp_path) == ["a.jsonl", "b.jsonl"]
    assert (tmp_path / "a.jsonl").read_text() == "keep"


async def test_a_missing_directory_is_refused_when_the_sink_opens(tmp_path: Path) -> None:
    """The directory before any field must exist; a typo never creates a tree."""
    sink = fg.JsonLines(tmp_path / "nope" / "{day}" / "x.jsonl")
    with pytest.raises(
        FileNotFoundError, match=rf"^JsonLines: directory {tmp_path / 'nope'} does not exist$"
    ):
        async with sink:
            pass  # pragma: no cover


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: fg.JsonLines("x.jsonl", exists="append"),  # type: ignore[arg-type]
            r"^exists must be 'error' or 'replace' \(got 'append'\)$",
        ),
        (
            lambda: fg.JsonLines("out/{a.b}.jsonl"),
            r"^path 'out/\{a.b\}.jsonl' has the field \{a.b\}; fields name a column or \{run\}$",
        ),
        (lambda: fg.JsonLines("out/{"), r"^path 'out/\{' is not a valid pattern: "),
        (lambda: fg.JsonLines("out/"), r"^path 'out/' must name a file, not a directory$"),
        (lambda: fg.CSV("x.csv", columns="id"), r"^columns must be a list of names \(got 'id'\)$"),
        (lambda: fg.CSV("x.csv", columns=[]), r"^columns must name at least one column$"),
        (
            lambda: fg.Parquet("x.parquet", row_group_size=0),
            r"^row_group_size must be an int >= 1 \(got 0\)$",
        ),
        (
            lambda: fg.Parquet("x.parquet", partition_by=["a", "a"]),
            r"^partition columns name \['a'\] more than once$",
        ),
    ],
)
def test_bad_declarations_are_refused(make: Any, message: str) -> None:
    """Malformed paths, policies and columns: GraphError when declared."""
    with pytest.raises(fg.GraphError, match=message):
        make()


async def test_a_call_outside_a_run_is_refused(tmp_path: Path) -> None:
    """The files exist only while the sink is open."""
    with pytest.raises(RuntimeError, match=r"^JsonLines '.*x.jsonl' is not open"):
        await fg.JsonLines(tmp_path / "x.jsonl")({"id": 1})


def test_reprs_rebuild_the_sinks_and_nodes_are_named_after_the_file() -> None:
    """The repr is the call; the node name comes from the file name."""
    sinks = [
        fg.JsonLines("out/e-{run}.jsonl"),
        fg.CSV("out/e.csv", columns=["id"], exists="replace"),
        fg.Parquet("out/e.parquet", partition_by="day", columns=["id", "day"], row_group_size=10),
    ]
    assert [repr(s) for s in sinks] == [
        "JsonLines('out/e-{run}.jsonl', exists='error')",
        "CSV('out/e.csv', columns=['id'], exists='replace')",
        "Parquet('out/e.parquet', partition_by='day', columns=['id', 'day'], exists='error', row_group_size=10)",
    ]
    graph = fg.Graph("g")
    assert [graph.sink(s).name for s in sinks] == ["jsonl_e_run", "csv_e", "parquet_e"]


# -- kill -9 ------------------------------------------------------------------------------------

WRITER = r"""
import sys
import anyio
import anyio.lowlevel
import flowgraph as fg

path, backend, rows, hang = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "hang"


async def main():
    async with fg.JsonLines(path, exists="replace") as sink:
        for i in range(rows):
            await sink([{"id": i, "pad": "x" * 200} for _ in range(10)])
        print("written", flush=True)
        if hang:
            await anyio.sleep(60)


anyio.run(main, backend=backend)
"""


def test_kill_9_never_leaves_a_partial_file_under_the_real_name(
    tmp_path: Path, backend: str
) -> None:
    """SIGKILL mid-run: only a hidden temporary file; a complete rerun writes the whole file."""
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    out = tmp_path / "data"
    out.mkdir()
    path = out / "rows.jsonl"
    process = subprocess.Popen(
        [sys.executable, str(script), str(path), backend, "1000", "hang"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == "written\n"
        (temp,) = listing(out)
        assert (out / temp).stat().st_size > 1 << 20, "some rows reached the disk before the kill"
        os.kill(process.pid, signal.SIGKILL)
        assert process.wait(10) == -signal.SIGKILL
    finally:
        if process.poll() is None:  # pragma: no cover
            process.kill()
            process.wait(10)
        assert process.stdout is not None
        process.stdout.close()
    assert not path.exists()
    assert listing(out) == [temp]
    started = time.monotonic()
    subprocess.run(
        [sys.executable, str(script), str(path), backend, "1000", "done"], check=True, timeout=60
    )
    assert time.monotonic() - started < 60
    assert len(lines(path)) == 10_000


async def test_a_failed_parquet_file_with_row_groups_written_is_removed_cleanly(
    tmp_path: Path,
) -> None:
    """The writer of a discarded file is closed before the file is removed; nothing is left."""
    sink = fg.Parquet(tmp_path / "p.parquet", row_group_size=1)

    async def fail_after_writing() -> None:
        async with sink:
            await sink([{"id": 1}, {"id": 2}])
            assert len(listing(tmp_path)) == 1
            raise Boom

    with pytest.raises(Boom):
        await fail_after_writing()
    assert listing(tmp_path) == []


async def test_a_file_whose_only_item_was_refused_is_not_written(tmp_path: Path) -> None:
    """A destination created for an item that then failed holds no row: no empty file appears."""
    async with fg.Parquet(tmp_path / "{k}.parquet", row_group_size=1) as sink:
        await sink({"k": "a", "n": 1})
        with pytest.raises(ValueError, match=r"column 'n' holds string, the file int64$"):
            await sink([{"k": "a", "n": "x"}, {"k": "b", "n": "y"}])
    assert listing(tmp_path) == ["a.parquet"]
    assert pq.read_table(tmp_path / "a.parquet").to_pylist() == [{"k": "a", "n": 1}]


CELLS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(),
)
ROWS = st.lists(st.fixed_dictionaries({"id": st.integers(0, 10**6), "v": CELLS}), max_size=5)


@settings(max_examples=30)
@given(items=st.lists(st.one_of(ROWS, ROWS.filter(bool).map(lambda rows: rows[0])), max_size=8))
async def test_json_lines_read_back_every_row_in_order(tmp_path: Path, items: list[Any]) -> None:
    """Any mix of rows and batches reads back as the same rows in the same order."""
    path = tmp_path / "prop.jsonl"
    async with fg.JsonLines(path, exists="replace") as sink:
        for item in items:
            await sink(item)
    expected = [row for item in items for row in ([item] if isinstance(item, dict) else item)]
    assert (lines(path) if path.exists() else []) == expected
    assert listing(tmp_path) == (["prop.jsonl"] if expected else [])
    path.unlink(missing_ok=True)


@settings(max_examples=30)
@given(items=st.lists(st.one_of(ROWS, ROWS.filter(bool).map(lambda rows: rows[0])), max_size=8))
async def test_csv_reads_back_every_cell_in_order(tmp_path: Path, items: list[Any]) -> None:
    """Any text, numbers and None read back with the csv module as written (None as empty)."""
    path = tmp_path / "prop.csv"
    async with fg.CSV(path, columns=["id", "v"], exists="replace") as sink:
        for item in items:
            await sink(item)
    rows = [row for item in items for row in ([item] if isinstance(item, dict) else item)]
    expected = [["id", "v"]] + [[str(r["id"]), "" if r["v"] is None else str(r["v"])] for r in rows]
    if rows:
        with path.open(newline="") as file:
            assert list(csv.reader(file)) == expected
    assert listing(tmp_path) == (["prop.csv"] if rows else [])
    path.unlink(missing_ok=True)
