"""The SQLite state store: file handling, WAL, schema versions, shared files."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from typing import TYPE_CHECKING

import anyio
import pytest

from flowgraph._core._exceptions import StoreError
from flowgraph._core._policy import Failure
from flowgraph._stores import open_store
from flowgraph._stores._sqlite import SQLiteStore

if TYPE_CHECKING:
    from pathlib import Path


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


async def test_busy_file_times_out_with_store_error(tmp_path: Path) -> None:
    """A write lock held longer than the timeout fails the write with StoreError."""
    path = tmp_path / "state.db"
    store = await SQLiteStore.connect(path, timeout=0.05)
    async with store:
        with closing(sqlite3.connect(path, isolation_level=None)) as other:
            other.execute("BEGIN IMMEDIATE")
            with pytest.raises(StoreError, match=r"database is locked$"):
                await store.commit_checkpoints("g", {"s": 1})
            other.execute("ROLLBACK")
        await store.commit_checkpoints("g", {"s": 1})
        assert await store.load_checkpoints("g") == {"s": 1}
