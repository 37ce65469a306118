"""The PostgreSQL state store: schema creation, versions, reconnection, retries, leases."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import anyio
import psycopg
import pytest
from postgres_server import PostgresServer

import flowgraph as fg
from flowgraph._core._exceptions import StoreError
from flowgraph._core._policy import Failure
from flowgraph._stores import open_store
from flowgraph._stores._postgres import PostgresStore, _redact

if TYPE_CHECKING:
    from pathlib import Path

virtual_time = pytest.mark.flowgraph_virtual_time


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


async def test_broken_connection_is_replaced_and_the_call_retried(
    postgres_schema_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """After the server drops the connection, the call in progress reconnects and goes through."""
    async with open_store(postgres_schema_url) as store:
        assert isinstance(store, PostgresStore)
        await store.commit_checkpoints("g", {"s": 1})
        terminate(postgres_schema_url, store._connection.info.backend_pid)
        assert await store.load_checkpoints("g") == {"s": 1}
        await store.add_dead_letter(Failure("n", 1, ValueError(), 1, graph="g"))
        assert await store.count_dead_letters(graph="g") == 1
    [retry] = [r.getMessage() for r in caplog.records if r.name == "flowgraph.stores"]
    assert retry.startswith("PostgreSQL store postgresql://postgres@/postgres?host=%2Ftmp%2F")
    assert re.search(
        r": loading checkpoints failed \(AdminShutdown: terminating connection due to "
        r"administrator command\); retrying in ",
        retry,
    ), retry


async def test_without_retries_a_broken_connection_fails_the_call_once(
    postgres_schema_url: str,
) -> None:
    """With retry_for=0 the call that finds the connection broken fails; the next reconnects."""
    async with open_store(postgres_schema_url, retry_for=0) as store:
        assert isinstance(store, PostgresStore)
        await store.commit_checkpoints("g", {"s": 1})
        terminate(postgres_schema_url, store._connection.info.backend_pid)
        with pytest.raises(
            StoreError,
            match=r"^PostgreSQL store postgresql://\S+: loading checkpoints failed after 1 attempt "
            r"in \S+s; last error: ",
        ):
            await store.load_checkpoints("g")
        assert await store.load_checkpoints("g") == {"s": 1}


def test_password_never_appears_in_the_store_name() -> None:
    """The store's name, used in every message, hides the URL's password."""
    assert _redact("postgresql://u:secret@host/db?sslmode=require") == (
        "postgresql://u:***@host/db?sslmode=require"
    )
    assert _redact("postgres://u@host/db?password=secret&x=1") == (
        "postgres://u@host/db?password=***&x=1"
    )


@pytest.mark.parametrize("mode", [{"read_only": True}, {"create": False}])
async def test_without_create_an_empty_database_is_not_a_store(
    postgres_schema_url: str, mode: dict[str, bool]
) -> None:
    """read_only / create=False never create the tables: a database without them is refused."""
    with pytest.raises(
        StoreError,
        match=r"^the PostgreSQL store is not a flowgraph store: it has no flowgraph tables "
        r"\(in the first schema of its search_path\)$",
    ):
        async with open_store(postgres_schema_url, **mode):
            pass
    with psycopg.connect(postgres_schema_url) as connection:
        assert connection.execute("SELECT to_regclass('flowgraph_schema')").fetchone() == (None,)


async def test_read_only_store_reads_and_the_server_refuses_its_writes(
    postgres_schema_url: str,
) -> None:
    """read_only=True reads; its session is read-only, so even a stray write is refused."""
    async with open_store(postgres_schema_url) as store:
        await store.commit_checkpoints("g", {"s": 1})
    async with open_store(postgres_schema_url, read_only=True) as store:
        assert isinstance(store, PostgresStore)
        assert await store.load_checkpoints("g") == {"s": 1}
        with pytest.raises(StoreError, match=r"is open read-only; committing checkpoints needs"):
            await store.commit_checkpoints("g", {"s": 2})
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            store._connection.execute("DELETE FROM flowgraph_checkpoints")
    async with open_store(postgres_schema_url) as store:
        assert await store.load_checkpoints("g") == {"s": 1}


@virtual_time
async def test_lease_is_one_session_at_a_time(postgres_schema_url: str) -> None:
    """A second store cannot take a graph's lease while the first holds it; after, it can."""
    async with open_store(postgres_schema_url) as first, open_store(postgres_schema_url) as second:
        async with first.open_lease("g"):
            with pytest.raises(
                StoreError,
                match=r"^graph 'g' is already running against PostgreSQL store \S+ \(its lease is "
                rf"held by flowgraph process {os.getpid()} on .+, server process \d+\); two runs "
                r"of one graph on one checkpoint store would overwrite each other's checkpoints: "
                r"stop the other run, or give this one another graph name$",
            ):
                async with second.open_lease("g"):
                    pass
            async with second.open_lease("other graph"):
                pass
        async with second.open_lease("g"):
            pass


@virtual_time
async def test_lease_is_taken_again_after_the_connection_is_replaced(
    postgres_schema_url: str,
) -> None:
    """A lease lost with its session is taken again on the new one, before the next call runs."""
    async with open_store(postgres_schema_url) as first, open_store(postgres_schema_url) as second:
        assert isinstance(first, PostgresStore)
        async with first.open_lease("g"):
            terminate(postgres_schema_url, first._connection.info.backend_pid)
            await first.commit_checkpoints("g", {"s": 1})
            with anyio.fail_after(30), pytest.raises(StoreError, match=r"is already running"):
                async with second.open_lease("g"):
                    pass


def terminate(url: str, pid: int) -> None:
    """End the server session *pid*, as an administrator or a crash of its backend would."""
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))


# -- a server of its own, restarted under a running graph -------------------------------


@pytest.fixture(scope="module")
def own_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server for this module alone, which its tests may restart."""
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()


async def test_checkpoint_commits_ride_out_a_server_restart(
    own_server: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A run whose checkpoints live in PostgreSQL goes on through `pg_ctl restart`, losing nothing.

    Regression test for #13: a 5 s server restart killed the daemon with AdminShutdown.
    """
    graph_name = f"restart_{uuid.uuid4().hex[:8]}"
    got: list[int] = []
    restarted = anyio.Event()

    async def numbers(after: int | None) -> AsyncIterator[fg.Positioned]:
        for i in range(0 if after is None else after + 1, 400):
            await anyio.sleep(0.005)
            yield fg.Positioned(i, i)

    async def sink(x: int) -> None:
        got.append(x)
        if x == 100:
            await anyio.to_thread.run_sync(own_server.restart)
            restarted.set()

    graph = fg.Graph(graph_name)
    graph.chain(graph.source(numbers, checkpoint=True, max_in_flight=20), graph.sink(sink))
    checkpoints = fg.Checkpoints(own_server.url, every=5, interval=0.05)
    with anyio.fail_after(60):
        await graph.run(checkpoints=checkpoints)
    assert restarted.is_set()
    assert sorted(got) == list(range(400))
    assert await checkpoints.load(graph_name) == {"numbers": 399}
    retries = [r.getMessage() for r in caplog.records if r.name == "flowgraph.stores"]
    assert any(": committing checkpoints failed (" in message for message in retries), retries
