"""The SQLite state store: file handling, WAL, schema versions, shared files."""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
import textwrap
import threading
from contextlib import closing
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from flowgraph._core._exceptions import GraphError, StoreError
from flowgraph._core._policy import Failure
from flowgraph._stores import open_store
from flowgraph._stores._connect import connect_sqlite
from flowgraph._stores._sql import SCHEMA_VERSION
from flowgraph._stores._sqlite import SQLiteStore

if TYPE_CHECKING:
    from pathlib import Path

virtual_time = pytest.mark.flowgraph_virtual_time


def pragma(path: Path, name: str) -> object:
    with closing(sqlite3.connect(path)) as connection:
        return connection.execute(f"PRAGMA {name}").fetchone()[0]


async def test_file_is_created_in_wal_mode_with_schema_version(tmp_path: Path) -> None:
    """Opening a missing file creates it, in WAL mode, stamped with the schema version."""
    path = tmp_path / "state.db"
    async with open_store(path) as store:
        assert isinstance(store, SQLiteStore)
        assert store.path == path
    assert pragma(path, "journal_mode") == "wal"
    assert pragma(path, "user_version") == 2


async def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    """A path in a directory that does not exist fails with the directory named."""
    path = tmp_path / "nope" / "state.db"
    with pytest.raises(
        StoreError,
        match=rf"^cannot open the SQLite store {path}: directory {path.parent} does not exist$",
    ):
        async with open_store(path):
            pass


async def test_file_that_is_not_sqlite_is_refused(tmp_path: Path) -> None:
    """A file that is not a SQLite database raises StoreError naming it."""
    path = tmp_path / "notes.txt"
    path.write_text("hello, this is not a database" * 100)
    with pytest.raises(StoreError, match=rf"^cannot open the SQLite store {path}: "):
        async with open_store(path):
            pass


async def test_newer_schema_version_is_refused(tmp_path: Path) -> None:
    """A file written by a newer flowgraph is refused rather than misread."""
    path = tmp_path / "state.db"
    async with open_store(path):
        pass
    with closing(sqlite3.connect(path)) as connection:
        connection.execute("PRAGMA user_version = 99")
        connection.commit()
    with pytest.raises(
        StoreError,
        match=rf"^the SQLite store {path} has schema version 99, but this flowgraph supports "
        r"only up to 2; upgrade flowgraph to use it$",
    ):
        async with open_store(path):
            pass


async def test_two_stores_on_one_file_lose_nothing(tmp_path: Path) -> None:
    """Two store objects writing one file at once wait for each other's lock."""
    path = tmp_path / "state.db"
    async with open_store(path) as a, open_store(path) as b:

        async def write(store: object, n: int) -> None:
            assert isinstance(store, SQLiteStore)
            await store.add_dead_letter(Failure("n", n, ValueError(), 1))
            await store.commit_checkpoints("g", {f"s{n}": n})

        async with anyio.create_task_group() as tg:
            for n in range(40):
                tg.start_soon(write, a if n % 2 else b, n)
        assert await a.count_dead_letters() == 40
        assert len(await b.load_checkpoints("g")) == 40


class Retries(logging.Handler):
    """Collects the store's retry warnings; *third* is set by the third."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []
        self.third = anyio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
        if len(self.messages) == 3:
            self.third.set()


@virtual_time
async def test_locked_file_is_retried_until_the_lock_goes(tmp_path: Path) -> None:
    """A commit that finds the file locked retries with backoff, then succeeds once it is free."""
    path = tmp_path / "state.db"
    retries = Retries()
    logging.getLogger("flowgraph.stores").addHandler(retries)
    store = await SQLiteStore.connect(path, timeout=0.01)
    try:
        async with store:
            with closing(
                sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            ) as other:
                other.execute("BEGIN IMMEDIATE")

                async def release_after_three_retries() -> None:
                    await retries.third.wait()
                    other.execute("ROLLBACK")

                async with anyio.create_task_group() as tg:
                    tg.start_soon(release_after_three_retries)
                    await store.commit_checkpoints("g", {"s": 1})
            assert await store.load_checkpoints("g") == {"s": 1}
    finally:
        logging.getLogger("flowgraph.stores").removeHandler(retries)
    assert len(retries.messages) == 3
    assert retries.messages[0].startswith(
        f"SQLite store {path}: committing checkpoints failed (database is locked); retrying in "
    )


@virtual_time
async def test_file_locked_longer_than_retry_for_fails_with_a_store_error(tmp_path: Path) -> None:
    """A write lock held past retry_for fails the commit with one StoreError saying so."""
    path = tmp_path / "state.db"
    store = await SQLiteStore.connect(path, timeout=0.01, retry_for=30)
    async with store:
        with closing(sqlite3.connect(path, isolation_level=None)) as other:
            other.execute("BEGIN IMMEDIATE")
            started = anyio.current_time()
            with pytest.raises(
                StoreError,
                match=rf"^SQLite store {path}: committing checkpoints failed after \d+ attempts "
                r"in 30s; last error: database is locked$",
            ):
                await store.commit_checkpoints("g", {"s": 1})
            assert anyio.current_time() - started == pytest.approx(30)
            other.execute("ROLLBACK")
        await store.commit_checkpoints("g", {"s": 1})
        assert await store.load_checkpoints("g") == {"s": 1}


async def test_retry_for_zero_fails_at_once(tmp_path: Path) -> None:
    """retry_for=0 turns retries off: the first busy answer is the error."""
    path = tmp_path / "state.db"
    async with open_store(path, retry_for=0) as store:
        with closing(sqlite3.connect(path, isolation_level=None)) as other:
            other.execute("BEGIN IMMEDIATE")
            assert isinstance(store, SQLiteStore)
            store._connection.execute("PRAGMA busy_timeout = 10")
            with pytest.raises(
                StoreError,
                match=rf"^SQLite store {path}: adding a dead letter failed after 1 attempt in "
                r"[0-9.e-]+s; last error: database is locked$",
            ):
                await store.add_dead_letter(Failure("n", 1, ValueError(), 1))
            other.execute("ROLLBACK")


@pytest.mark.parametrize(
    ("retry_for", "message"),
    [
        (-1, r"^retry_for must be >= 0 \(got -1\)$"),
        (float("nan"), r"^retry_for must be >= 0 \(got nan\)$"),
        (float("inf"), r"^retry_for must be finite \(got inf\)$"),
        ("5", r"^retry_for must be a number of seconds or a timedelta \(got '5'\)$"),
    ],
)
async def test_retry_for_must_be_finite_and_not_negative(
    tmp_path: Path, retry_for: Any, message: str
) -> None:
    """A bad retry_for is refused before anything opens."""
    with pytest.raises(GraphError, match=message):
        async with open_store(tmp_path / "state.db", retry_for=retry_for):
            pass
    assert not (tmp_path / "state.db").exists()


# -- files that are not flowgraph stores ------------------------------------------------


async def test_empty_file_is_not_a_fresh_store(tmp_path: Path) -> None:
    """A file truncated to 0 bytes is refused, not silently made into a new store.

    Regression test for #13: a truncated state file restarted every source from
    the beginning without a word.
    """
    path = tmp_path / "state.db"
    async with open_store(path) as store:
        await store.commit_checkpoints("g", {"s": 1})
    path.write_bytes(b"")
    with pytest.raises(
        StoreError,
        match=rf"^the SQLite store {path} is not a flowgraph store: the file is empty \(0 bytes\); "
        r"if it was truncated, its checkpoints and dead letters are gone: delete it to start afresh$",
    ):
        async with open_store(path):
            pass
    assert path.read_bytes() == b""


async def test_another_applications_database_is_not_a_store(tmp_path: Path) -> None:
    """A database whose user_version another application set is refused and left untouched."""
    path = tmp_path / "app.db"
    with closing(sqlite3.connect(path)) as connection:
        connection.execute("CREATE TABLE notes (body TEXT)")
        connection.execute("PRAGMA user_version = 7")
        connection.commit()
    before = path.read_bytes()
    for mode in ({}, {"read_only": True}, {"create": False}):
        with pytest.raises(
            StoreError,
            match=rf"^the SQLite store {path} is not a flowgraph store: its user_version is 7, "
            r"set by another application, and it has no flowgraph tables$",
        ):
            async with open_store(path, **mode):
                pass
    assert path.read_bytes() == before
    assert pragma(path, "journal_mode") == "delete"


async def test_a_plain_database_can_hold_the_state_beside_its_tables(tmp_path: Path) -> None:
    """A database with tables of its own and user_version 0 gets the flowgraph tables beside them."""
    path = tmp_path / "data.db"
    with closing(sqlite3.connect(path)) as connection:
        connection.execute("CREATE TABLE rows (id INTEGER PRIMARY KEY)")
        connection.commit()
    async with open_store(path) as store:
        await store.commit_checkpoints("g", {"s": 1})
    assert pragma(path, "user_version") == SCHEMA_VERSION
    with closing(sqlite3.connect(path)) as connection:
        assert connection.execute("SELECT count(*) FROM rows").fetchone() == (0,)


async def test_without_create_a_database_without_flowgraph_tables_is_refused(
    tmp_path: Path,
) -> None:
    """create=False and read_only=True never add tables to a database that lacks them."""
    path = tmp_path / "data.db"
    with closing(sqlite3.connect(path)) as connection:
        connection.execute("CREATE TABLE rows (id INTEGER PRIMARY KEY)")
        connection.commit()
    before = path.read_bytes()
    for mode in ({"read_only": True}, {"create": False}):
        with pytest.raises(
            StoreError,
            match=rf"^the SQLite store {path} is not a flowgraph store: it has no flowgraph tables$",
        ):
            async with open_store(path, **mode):
                pass
    assert path.read_bytes() == before
    missing = tmp_path / "missing.db"
    with pytest.raises(
        StoreError, match=rf"^cannot open the SQLite store {missing}: no such file$"
    ):
        async with open_store(missing, create=False):
            pass
    assert not missing.exists()


async def test_read_only_store_reads_and_refuses_writes(tmp_path: Path) -> None:
    """read_only=True reads everything and refuses every write, changing nothing in the file."""
    path = tmp_path / "state.db"
    async with open_store(path) as store:
        await store.add_dead_letter(Failure("n", 1, ValueError("bad"), 1, graph="g"))
        await store.commit_checkpoints("g", {"s": 1})
    before = path.read_bytes()
    async with open_store(path, read_only=True) as store:
        assert [d.item for d in await store.list_dead_letters()] == [1]
        assert await store.load_checkpoints("g") == {"s": 1}
        with pytest.raises(
            StoreError,
            match=rf"^SQLite store {path} is open read-only; committing checkpoints needs a "
            r"writable store$",
        ):
            await store.commit_checkpoints("g", {"s": 2})
        with pytest.raises(
            StoreError,
            match=r"is open read-only; taking the lease of graph 'g' needs a writable store$",
        ):
            async with store.open_lease("g"):
                pass
    assert path.read_bytes() == before


def test_processes_creating_one_new_store_together_all_succeed(tmp_path: Path) -> None:
    """Several processes opening a store that does not exist yet never see it half made."""
    path = tmp_path / "state.db"
    code = """
        import sys, anyio
        from flowgraph._stores import open_store

        async def main():
            async with open_store(sys.argv[1]) as store:
                await store.commit_checkpoints("g", {sys.argv[2]: 1})

        anyio.run(main)
    """
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code), str(path), f"p{n}"],
            stderr=subprocess.PIPE,
        )
        for n in range(6)
    ]
    for process in processes:
        _, stderr = process.communicate(timeout=30)
        assert process.returncode == 0, stderr.decode()
    with closing(sqlite3.connect(path)) as connection:
        rows = connection.execute("SELECT source FROM flowgraph_checkpoints ORDER BY source")
        assert rows.fetchall() == [(f"p{n}",) for n in range(6)]
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith("state.db")] == []


def test_connections_opening_one_new_file_together_all_enter_wal(tmp_path: Path) -> None:
    """SQLite skips the busy timeout while it changes the journal mode: opening waits anyway.

    Several sinks and stores on one new file open it at the same moment; each of
    them must get its connection, not "database is locked".
    """
    errors: list[BaseException] = []

    def open_and_write(path: Path, table: str, start: threading.Barrier) -> None:
        start.wait()
        try:
            with closing(connect_sqlite(path)) as connection:
                connection.execute(f"CREATE TABLE IF NOT EXISTS {table} (x)")
                connection.execute(f"INSERT INTO {table} VALUES (1)")
        except BaseException as exc:
            errors.append(exc)

    for attempt in range(25):
        path = tmp_path / f"{attempt}.db"
        start = threading.Barrier(6)
        threads = [
            threading.Thread(target=open_and_write, args=(path, f"t{n}", start)) for n in range(6)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert pragma(path, "journal_mode") == "wal"
