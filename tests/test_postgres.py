"""The PostgreSQL state store: schema creation, versions, reconnection."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import psycopg
import pytest

from flowgraph._core._exceptions import StoreError
from flowgraph._core._policy import Failure
from flowgraph._stores import open_store
from flowgraph._stores._postgres import PostgresStore

if TYPE_CHECKING:
    from pathlib import Path


async def test_stores_opening_together_create_the_schema_once(postgres_schema_url: str) -> None:
    """Several stores opening a fresh database at once all succeed and share one schema."""
    stores: list[PostgresStore] = []

    async def connect() -> None:
        stores.append(await PostgresStore.connect(postgres_schema_url))

    try:
        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(connect)
        for n, store in enumerate(stores):
            await store.commit_checkpoints("g", {f"s{n}": n})
        assert len(await stores[0].load_checkpoints("g")) == 5
    finally:
        for store in stores:
            await store.aclose()
    with psycopg.connect(postgres_schema_url) as connection:
        assert connection.execute("SELECT version FROM flowgraph_schema").fetchall() == [(2,)]


async def test_newer_schema_version_is_refused(postgres_schema_url: str) -> None:
    """A database written by a newer flowgraph is refused rather than misread."""
    async with open_store(postgres_schema_url):
        pass
    with psycopg.connect(postgres_schema_url, autocommit=True) as connection:
        connection.execute("UPDATE flowgraph_schema SET version = 99")
    with pytest.raises(
        StoreError,
        match=r"^the PostgreSQL store has schema version 99, but this flowgraph supports "
        r"only up to 2; upgrade flowgraph to use it$",
    ):
        async with open_store(postgres_schema_url):
            pass


async def test_unreachable_server_is_a_store_error(tmp_path: Path) -> None:
    """A server that cannot be reached raises StoreError, without the URL's password."""
    url = f"postgresql://u:secret@/db?host={tmp_path}&port=1&connect_timeout=2"
    with pytest.raises(StoreError, match=r"^cannot connect to the PostgreSQL store: ") as info:
        async with open_store(url):
            pass
    assert "secret" not in str(info.value)


async def test_broken_connection_is_replaced_on_next_call(postgres_schema_url: str) -> None:
    """After the server drops the connection, one call fails and the next reconnects."""
    async with open_store(postgres_schema_url) as store:
        assert isinstance(store, PostgresStore)
        await store.commit_checkpoints("g", {"s": 1})
        pid = store._connection.info.backend_pid
        with psycopg.connect(postgres_schema_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(StoreError, match=r"^PostgreSQL store: "):
            await store.load_checkpoints("g")
        await store.add_dead_letter(Failure("n", 1, ValueError(), 1, graph="g"))
        assert await store.load_checkpoints("g") == {"s": 1}
        assert await store.count_dead_letters(graph="g") == 1
