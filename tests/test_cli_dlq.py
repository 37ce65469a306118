"""``flowgraph dlq`` never creates a store or a table, names what is not a store, and lists
around a corrupt row. Regression tests for #13.5."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path

import anyio
import pytest
from databases import connect

import flowgraph as fg
from flowgraph._cli import main

COMMANDS = [
    ["dlq", "list"],
    ["dlq", "show", "1"],
    ["dlq", "purge", "--yes"],
    ["dlq", "replay", "graphs:graph"],
]
GRAPHS = """
import flowgraph as fg

graph = fg.Graph("g")
graph.sink(lambda item: None, name="a")
"""


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def tables(path: Path) -> list[str]:
    with closing(sqlite3.connect(path)) as connection:
        return [row[0] for row in connection.execute("SELECT name FROM sqlite_master")]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "graphs.py").write_text(GRAPHS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[1])
def test_a_database_without_flowgraph_tables_is_not_a_store_and_stays_as_it_was(
    project: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    """Pointed at another database, every dlq command exits 2 and creates nothing in it."""
    path = project / "app.db"
    with closing(sqlite3.connect(path)) as connection:
        connection.execute("CREATE TABLE notes (body TEXT)")
        connection.commit()
    before = path.read_bytes()
    code, out, err = run(capsys, *command, "--store", f"sqlite:///{path}")
    assert (code, out) == (2, "")
    assert err == (
        f"flowgraph: error: --store: the SQLite store {path} is not a flowgraph store: "
        "it has no flowgraph tables\n"
    )
    assert path.read_bytes() == before
    assert tables(path) == ["notes"]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[1])
def test_another_applications_user_version_is_not_a_newer_flowgraph(
    project: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    """user_version 7 set by another application: "not a flowgraph store", not "upgrade"."""
    path = project / "app.db"
    with closing(sqlite3.connect(path)) as connection:
        connection.execute("CREATE TABLE notes (body TEXT)")
        connection.execute("PRAGMA user_version = 7")
        connection.commit()
    code, out, err = run(capsys, *command, "--store", str(path))
    assert (code, out) == (2, "")
    assert err == (
        f"flowgraph: error: --store: the SQLite store {path} is not a flowgraph store: its "
        "user_version is 7, set by another application, and it has no flowgraph tables\n"
    )
    assert tables(path) == ["notes"]


def test_an_empty_file_is_not_a_store(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A 0-byte file is refused with exit 2 and stays empty."""
    path = project / "state.db"
    path.write_bytes(b"")
    code, _, err = run(capsys, "dlq", "list", "--store", str(path))
    assert code == 2
    assert err.startswith(
        f"flowgraph: error: --store: the SQLite store {path} is not a flowgraph store: "
        "the file is empty (0 bytes)"
    )
    assert path.read_bytes() == b""


def test_postgres_schema_without_tables_is_not_a_store(
    postgres_schema_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """On PostgreSQL too, dlq never creates the flowgraph tables."""
    code, _, err = run(capsys, "dlq", "list", "--store", postgres_schema_url)
    assert code == 2
    assert err == (
        "flowgraph: error: --store: the PostgreSQL store is not a flowgraph store: it has no "
        "flowgraph tables (in the first schema of its search_path)\n"
    )
    with connect(postgres_schema_url) as connection:
        row = connection.execute("SELECT to_regclass('flowgraph_dead_letters')").fetchone()
    assert row == (None,)


@pytest.fixture
def store_with_a_corrupt_row(project: Path) -> str:
    """A store of three dead letters whose second item is no longer valid JSON."""
    url = f"sqlite:///{project / 'state.db'}"

    async def fill() -> None:
        async with fg.open_store(url) as store:
            for n in range(3):
                await store.add_dead_letter(fg.Failure("a", {"n": n}, ValueError("v"), 1, "g"))

    anyio.run(fill)
    with connect(url) as connection:
        connection.execute("UPDATE flowgraph_dead_letters SET item = ? WHERE id = 2", (b"{",))
        connection.commit()
    return url


def test_one_corrupt_row_is_reported_and_the_rest_listed(
    store_with_a_corrupt_row: str, project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``dlq list``: the corrupt row gets an error line naming it, the others are listed, exit 1."""
    path = project / "state.db"
    before = path.read_bytes()
    code, out, err = run(capsys, "dlq", "list", "--store", store_with_a_corrupt_row)
    assert code == 1
    assert err == (
        f"flowgraph: error: SQLite store {path}: dead letter 2 is corrupt: cannot deserialise "
        "its item (json): JSONDecodeError: Expecting property name enclosed in double quotes: "
        "line 1 column 2 (char 1)\n"
    )
    lines = out.splitlines()
    assert [line.split()[0] for line in lines[1:-1]] == ["1", "3"]
    assert lines[-1] == "2 dead letters, 1 unreadable (see above)"
    code, out, _ = run(capsys, "dlq", "list", "--store", store_with_a_corrupt_row, "--json")
    assert code == 1
    assert [letter["id"] for letter in json.loads(out)] == [1, 3]
    assert path.read_bytes() == before


def test_show_of_a_corrupt_row_names_it(
    store_with_a_corrupt_row: str, project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``dlq show`` of the corrupt row fails naming the store and the row."""
    code, out, err = run(capsys, "dlq", "show", "2", "--store", store_with_a_corrupt_row)
    assert (code, out) == (1, "")
    assert err.startswith(
        f"flowgraph: error: SQLite store {project / 'state.db'}: dead letter 2 is corrupt: "
    )
