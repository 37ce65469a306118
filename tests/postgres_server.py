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


class PostgresServer:
    """A throwaway server in a temporary directory: ``initdb``, then ``pg_ctl`` start/restart/stop.

    It listens only on a Unix socket in its directory, so several can run at
    once. Tests that need a server of their own (to restart it) use this; the
    others share the session's ``postgres_url``.
    """

    def __init__(self) -> None:
        binaries = _find_binaries()
        if binaries is None:
            _unavailable(
                "PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or in "
                "/usr/lib/postgresql/*/bin; install PostgreSQL to run these tests"
            )
        self.binaries = binaries
        self.prefix, self.user = _as_server_user()
        self.base = Path(tempfile.mkdtemp(prefix="flowgraph-pg-"))
        self.data = self.base / "data"
        self.started = False
        self.url = (
            f"postgresql://postgres@/postgres?host={quote(str(self.base), safe='')}&port=5432"
        )

    def start(self) -> str:
        """Create the cluster and start the server; return its URL."""
        if self.user is not None:
            os.chown(self.base, self.user.pw_uid, self.user.pw_gid)
        initdb = [*self.prefix, str(self.binaries / "initdb"), "-D", str(self.data)]
        options = ["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"]
        _run([*initdb, *options], cwd=self.base)
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(_SETTINGS.format(socket_dir=self.base))
        self._pg_ctl("-w", "-t", "30", "start")
        self.started = True
        return self.url

    def restart(self, mode: str = "fast") -> None:
        """Restart the server: *mode* ``fast`` ends every session with AdminShutdown."""
        self._pg_ctl("-m", mode, "-w", "-t", "30", "restart")

    def stop(self) -> None:
        """Stop the server (if started) and delete its directory."""
        try:
            if self.started:
                self._pg_ctl("-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    def _pg_ctl(self, *args: str) -> None:
        # The log file keeps the server's output off pg_ctl's pipes, which _run waits to close.
        log = self.base / "server.log"
        pg_ctl = [*self.prefix, str(self.binaries / "pg_ctl"), "-D", str(self.data), "-l", str(log)]
        try:
            _run([*pg_ctl, *args], cwd=self.base)
        except RuntimeError as exc:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{exc}\nserver log:\n{tail}") from None


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """Start a throwaway PostgreSQL server for the session and yield its URL."""
    existing = os.environ.get("FLOWGRAPH_TEST_POSTGRES_URL")
    if existing:
        yield existing
        return
    server = PostgresServer()
    try:
        yield server.start()
    finally:
        server.stop()


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
