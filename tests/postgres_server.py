"""Pytest plugin: a real, throwaway PostgreSQL server for the test session.

Fixtures:
    postgres_url: session-scoped ``postgresql://`` URL of a server started with
        ``initdb`` + ``pg_ctl`` in a temporary directory, listening only on a
        Unix socket there, stopped and deleted at the end of the session.
        Set ``FLOWGRAPH_TEST_POSTGRES_URL`` to use an existing server instead.
    postgres_schema_url: the same server, with a fresh schema first on the
        ``search_path`` for one test, dropped afterwards.

PostgreSQL refuses to run as root, so under root the server runs as the
``postgres`` user (created by Debian's ``postgresql`` package) via ``runuser``
or ``setpriv``. Without server binaries, the tests using these fixtures skip.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn
from urllib.parse import quote

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

_SETTINGS = """
listen_addresses = ''
unix_socket_directories = '{socket_dir}'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 50
"""


def _find_binaries() -> Path | None:
    """Return the directory holding ``initdb`` and ``pg_ctl``, or ``None``."""
    candidates = []
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).resolve().parent)
    versions = glob.glob("/usr/lib/postgresql/*/bin")
    versions.sort(key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0)
    candidates.extend(Path(p) for p in reversed(versions))
    for directory in candidates:
        if (directory / "initdb").is_file() and (directory / "pg_ctl").is_file():
            return directory
    return None


def _unavailable(reason: str) -> NoReturn:
    """Skip PostgreSQL tests, or fail them where CI promises a server."""
    if os.environ.get("FLOWGRAPH_REQUIRE_POSTGRES"):
        pytest.fail(f"FLOWGRAPH_REQUIRE_POSTGRES is set but {reason}")
    pytest.skip(reason)


def _as_server_user() -> tuple[list[str], pwd.struct_passwd | None]:
    """Return the command prefix that drops root, and the user it switches to."""
    if os.geteuid() != 0:
        return [], None
    try:
        user = pwd.getpwnam("postgres")
    except KeyError:
        _unavailable("running as root and there is no 'postgres' user to run PostgreSQL as")
    if shutil.which("runuser"):
        return ["runuser", "-u", user.pw_name, "--"], user
    if shutil.which("setpriv"):
        ids = [f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups"]
        return ["setpriv", *ids, "--"], user
    _unavailable("running as root and neither runuser nor setpriv is available")


def _run(command: list[str], cwd: Path) -> None:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
        )


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """Start a throwaway PostgreSQL server for the session and yield its URL."""
    existing = os.environ.get("FLOWGRAPH_TEST_POSTGRES_URL")
    if existing:
        yield existing
        return
    binaries = _find_binaries()
    if binaries is None:
        _unavailable(
            "PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or in "
            "/usr/lib/postgresql/*/bin; install PostgreSQL to run these tests"
        )
    prefix, user = _as_server_user()
    base = Path(tempfile.mkdtemp(prefix="flowgraph-pg-"))
    if user is not None:
        os.chown(base, user.pw_uid, user.pw_gid)
    data = base / "data"
    pg_ctl = [*prefix, str(binaries / "pg_ctl"), "-D", str(data)]
    started = False
    try:
        _run(
            [
                *prefix,
                str(binaries / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
            cwd=base,
        )
        with (data / "postgresql.conf").open("a") as conf:
            conf.write(_SETTINGS.format(socket_dir=base))
        try:
            _run([*pg_ctl, "-l", str(base / "server.log"), "-w", "-t", "30", "start"], cwd=base)
        except RuntimeError as exc:
            log = (base / "server.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{exc}\nserver log:\n{log}") from None
        started = True
        yield f"postgresql://postgres@/postgres?host={quote(str(base), safe='')}&port=5432"
    finally:
        if started:
            _run([*pg_ctl, "-m", "immediate", "-w", "stop"], cwd=base)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def postgres_schema_url(postgres_url: str) -> Iterator[str]:
    """Yield *postgres_url* with a fresh schema of its own first on ``search_path``."""
    pytest.importorskip("psycopg")
    import psycopg
    from psycopg import sql

    schema = f"test_{uuid.uuid4().hex}"
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    separator = "&" if "?" in postgres_url else "?"
    yield f"{postgres_url}{separator}options={quote(f'-csearch_path={schema}', safe='')}"
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
