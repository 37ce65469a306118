"""The ``flowgraph`` command, run for real in subprocesses (help and drawing in-process)."""

from __future__ import annotations

import ast
import concurrent.futures
import inspect
import json
import os
import pty
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import anyio
import pytest

import flowgraph as fg
from flowgraph import _cli as cli
from flowgraph._runner._signals import DUPLICATE_WINDOW

GRAPHS = textwrap.dedent(
    """
    import os
    import time
    import anyio
    import flowgraph as fg

    graph = fg.Graph("tiny")

    @graph.source
    async def numbers():
        for i in range(50):
            yield i

    @graph.transform(workers=4)
    def double(x):
        return 2 * x

    @graph.sink
    async def collect(x):
        pass

    graph.chain(numbers, double, collect)

    def make_graph():
        return graph

    def needs_argument(size):
        return graph

    def make_number():
        return 7

    def make_broken():
        return {}["graph"]

    class namespace:
        graph = graph

    answer = 42

    failing = fg.Graph("failing")

    @failing.source
    def items():
        yield from range(10)

    @failing.transform
    async def boom(x):
        if x == 3:
            raise ValueError("three is bad")
        return x

    @failing.sink
    def drop(x):
        pass

    failing.chain(items, boom, drop)

    slow = fg.Graph("slow")

    @slow.source
    async def forever():
        print("started", flush=True)
        while True:
            yield 0
            await anyio.sleep(0.01)

    @slow.sink
    async def wait(x):
        await anyio.sleep(0.01)

    slow.chain(forever, wait)

    stuck = fg.Graph("stuck")

    @stuck.source
    async def ticks():
        print("started", flush=True)
        while True:
            yield 0
            await anyio.sleep(0.01)

    @stuck.sink
    async def hang(x):
        await anyio.sleep(3600)

    stuck.chain(ticks, hang)

    flaky = fg.Graph("flaky")

    @flaky.transform(on_error="dead_letter")
    def parse(x):
        if x % 3 == 0 and not os.path.exists("fixed.flag"):
            raise ValueError(f"bad {x}")
        return x

    @flaky.sink
    def keep(x):
        pass

    flaky.chain(flaky.source(list(range(10)), name="rows"), parse, keep)

    paced = fg.Graph("paced")

    @paced.sink
    async def tick(x):
        await anyio.sleep(0.01)

    paced.chain(paced.source(range(30), name="steps"), tick)

    draining = fg.Graph("draining")

    @draining.source
    async def drips():
        print("started", flush=True)
        while True:
            yield 0
            await anyio.sleep(0.01)

    @draining.sink(workers=2)
    async def settle(x):
        await anyio.sleep(0.5)

    draining.chain(drips, settle)

    blocked = fg.Graph("blocked")

    @blocked.source
    async def ones():
        print("started", flush=True)
        while True:
            yield 1
            await anyio.sleep(0.01)

    @blocked.sink
    def block(x):
        print("blocking", flush=True)
        time.sleep(2.5)

    blocked.chain(ones, block)

    dangling = fg.Graph("dangling")

    @dangling.transform
    async def unread(x):
        return x

    dangling.connect(dangling.source([1, 2], name="pair"), unread)
    """
)

CYCLIC = textwrap.dedent(
    """
    import flowgraph as fg

    graph = fg.Graph("cyclic")
    first = graph.transform(lambda x: x, name="first")
    second = graph.transform(lambda x: x, name="second")
    graph.connect(first, second)
    graph.connect(second, first)
    """
)

SLOW_IMPORT = textwrap.dedent(
    """
    import time

    print("importing", flush=True)
    time.sleep(20)
    """
)

SUMMARY = [
    ["node", "kind", "in", "out", "errors", "retries", "dead"],
    ["numbers", "source", "-", "50", "0", "0", "0"],
    ["double", "transform", "50", "50", "0", "0", "0"],
    ["collect", "sink", "50", "50", "0", "0", "0"],
]


def flowgraph(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flowgraph", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=30,
    )


def summary(stdout: str) -> list[list[str]]:
    """The cells of the summary table, without the elapsed column, which varies."""
    return [line.split()[:-1] for line in stdout.splitlines()[1:]]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """``graphs.py``; ``broken.py``, which fails on import; ``cyclic.py``, which declares a
    cycle; and ``slow_import.py``, which takes 20 s to import."""
    (tmp_path / "graphs.py").write_text(GRAPHS)
    (tmp_path / "broken.py").write_text("1 / 0\n")
    (tmp_path / "cyclic.py").write_text(CYCLIC)
    (tmp_path / "slow_import.py").write_text(SLOW_IMPORT)
    return tmp_path


def test_version_prints_the_package_version(tmp_path: Path) -> None:
    """``--version`` prints the installed version and exits 0."""
    proc = flowgraph("--version", cwd=tmp_path)
    assert (proc.returncode, proc.stdout) == (0, f"flowgraph {fg.__version__}\n")


def test_run_module_target_prints_a_summary(project: Path, backend: str) -> None:
    """``run package.module:attr`` imports from the current directory and prints per-node counts."""
    proc = flowgraph("run", "graphs:graph", "--backend", backend, cwd=project)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("graph 'tiny' finished in ")
    assert summary(proc.stdout) == SUMMARY
    assert f"running graph 'tiny' (3 nodes) on {backend}" in proc.stderr


def test_run_file_target_prints_a_summary(
    project: Path, tmp_path_factory: pytest.TempPathFactory, backend: str
) -> None:
    """``run path/to/file.py:attr`` loads the file by path, from any directory."""
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    proc = flowgraph("run", f"{project / 'graphs.py'}:graph", "--backend", backend, cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr
    assert summary(proc.stdout) == SUMMARY


@pytest.mark.parametrize("attr", ["make_graph", "namespace.graph"])
def test_run_accepts_factories_and_dotted_attributes(project: Path, attr: str) -> None:
    """The attribute may be dotted, or a zero-argument function that returns the graph."""
    proc = flowgraph("run", f"graphs.py:{attr}", cwd=project)
    assert proc.returncode == 0, proc.stderr
    assert summary(proc.stdout) == SUMMARY


def test_console_script_imports_modules_from_the_current_directory(project: Path) -> None:
    """The installed ``flowgraph`` script finds ``module:attr`` targets like ``python -m`` does."""
    script = Path(sys.executable).with_name("flowgraph")
    if not script.exists():
        pytest.skip("the flowgraph console script is not installed next to this interpreter")
    proc = subprocess.run(
        [str(script), "run", "graphs:graph"], cwd=project, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert summary(proc.stdout) == SUMMARY


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("graphs", "target 'graphs' must be 'package.module:attr' or 'path/to/file.py:attr'"),
        (
            "no_such_module:graph",
            "cannot import 'no_such_module': no module named 'no_such_module'",
        ),
        ("missing.py:graph", "no such file: 'missing.py'"),
        ("broken:graph", "cannot import 'broken': ZeroDivisionError: division by zero"),
        ("graphs:grph", "'graphs' has no attribute 'grph'"),
        ("graphs.py:namespace.grph", "'graphs.py:namespace' has no attribute 'grph'"),
        ("graphs:answer", "'graphs:answer' is not a flowgraph.Graph (got int)"),
        ("graphs:make_number", "'graphs:make_number' returned int, not a flowgraph.Graph"),
        ("graphs:make_broken", "'graphs:make_broken' raised KeyError: 'graph'"),
        (
            "graphs:needs_argument",
            "'graphs:needs_argument' must be a flowgraph.Graph or a function that takes "
            "no arguments and returns one",
        ),
    ],
)
def test_bad_target_is_a_usage_error(project: Path, target: str, message: str) -> None:
    """A target that cannot be loaded as a graph exits 2 with one line naming the problem."""
    proc = flowgraph("run", target, cwd=project)
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == f"flowgraph: error: {message}\n"


def test_bad_option_is_a_usage_error(project: Path) -> None:
    """An unknown backend is rejected by the argument parser with exit code 2."""
    proc = flowgraph("run", "graphs:graph", "--backend", "curio", cwd=project)
    assert proc.returncode == 2
    assert "argument --backend: invalid choice: 'curio'" in proc.stderr


def test_failing_pipeline_exits_1_naming_the_node(project: Path, backend: str) -> None:
    """A node error exits 1 with the node's message and no traceback."""
    proc = flowgraph("run", "graphs:failing", "--backend", backend, cwd=project)
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[-1] == (
        "flowgraph: error: node 'boom' failed on item 3; last error: ValueError: three is bad"
    )
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("target", "code", "line"),
    [("graphs:failing", 1, "raise ValueError"), ("broken:g", 2, "1 / 0")],
)
def test_traceback_flag_shows_the_cause(project: Path, target: str, code: int, line: str) -> None:
    """``--traceback`` also prints the traceback down to the user's failing line."""
    proc = flowgraph("run", "--traceback", target, cwd=project)
    assert proc.returncode == code
    assert "Traceback (most recent call last)" in proc.stderr
    assert line in proc.stderr


def test_demo_stores_every_record_once_and_rerun_is_idempotent(tmp_path: Path) -> None:
    """``demo`` verifies exactly-once delivery; a second run (on trio) upserts the same rows."""
    db = tmp_path / "demo.db"
    for backend in ("asyncio", "trio"):
        proc = flowgraph(
            "demo", "--db", str(db), "--items", "2500", "--backend", backend, cwd=tmp_path
        )
        assert proc.returncode == 0, proc.stderr
        assert f"wrote 2500 records in 25 pages to {db} (2500 rows in the table)" in proc.stdout
        assert "verified: every record is in the table exactly once" in proc.stdout
        with sqlite3.connect(db) as conn:
            rows = conn.execute("SELECT COUNT(*), COUNT(DISTINCT id), MAX(deliveries) FROM records")
            assert rows.fetchone() == (2500, 2500, 1)


def test_demo_writes_to_the_current_directory_by_default(tmp_path: Path) -> None:
    """Without ``--db`` the demo creates ``flowgraph-demo.db`` where it is run."""
    proc = flowgraph("demo", "--items", "10", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "flowgraph-demo.db").is_file()


def test_demo_into_a_missing_directory_is_a_usage_error(tmp_path: Path) -> None:
    """A ``--db`` path whose directory does not exist exits 2 before anything runs."""
    db = tmp_path / "nowhere" / "demo.db"
    proc = flowgraph("demo", "--db", str(db), cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr == f"flowgraph: error: directory of --db {str(db)!r} does not exist\n"


@pytest.mark.parametrize(
    ("args", "missing", "message"),
    [
        (
            ["demo", "--items", "10"],
            "httpx",
            "flowgraph demo needs httpx: pip install 'flowgraph[demo]'",
        ),
        (
            ["demo", "--backend", "trio"],
            "trio",
            "--backend trio needs trio: pip install 'flowgraph[trio]'",
        ),
        (
            ["run", "graphs:graph", "--progress"],
            "rich",
            "progress display needs rich: pip install 'flowgraph[cli]'",
        ),
        (
            ["run", "graphs:graph", "--state", "postgresql://localhost/db"],
            "psycopg",
            "PostgreSQL state stores need psycopg 3: pip install 'flowgraph[postgres]'",
        ),
    ],
    ids=["demo-httpx", "trio", "progress-rich", "postgres-psycopg"],
)
def test_a_missing_extra_is_one_line_naming_it(
    project: Path, args: list[str], missing: str, message: str
) -> None:
    """Without the extra a command needs, it exits 2 saying which extra to install."""
    code = f"import sys; sys.modules[{missing!r}] = None; from flowgraph._cli import main; sys.exit(main())"
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=project, capture_output=True, text=True, timeout=30
    )
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == f"flowgraph: error: {message}\n"


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (
            "cyclic:graph",
            "cannot import 'cyclic': GraphError: edge 'second' -> 'first' would create a cycle: first -> second -> first",
        ),
        (
            "graphs:dangling",
            "'graphs:dangling' cannot run: transform 'unread' has no downstream, so its output "
            "would go nowhere: connect it, or declare it with graph.sink",
        ),
    ],
    ids=["cycle", "dangling"],
)
def test_a_graph_that_cannot_run_is_a_usage_error(project: Path, target: str, message: str) -> None:
    """A cycle and a node wired to nothing both exit 2, in one line, before anything runs."""
    proc = flowgraph("run", target, cwd=project)
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == f"flowgraph: error: {message}\n"


def test_show_draws_a_graph_that_cannot_run(project: Path) -> None:
    """``show`` draws a miswired graph as it is: the drawing is how one finds the mistake."""
    proc = flowgraph("show", "graphs:dangling", cwd=project)
    assert proc.returncode == 0, proc.stderr
    assert "n1 --> n0" in proc.stdout


# -- run: signals, progress, logging, dead letters ------------------------------------


@contextmanager
def running(project: Path, *args: str) -> Iterator[tuple[subprocess.Popen[str], ReadLine]]:
    """Start ``flowgraph run *args``; wait until its source prints ``started``."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowgraph", "run", *args],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    reader = concurrent.futures.ThreadPoolExecutor(1)

    def readline(stream: IO[str] | None) -> str:
        assert stream is not None
        return reader.submit(stream.readline).result(timeout=15)

    try:
        assert readline(proc.stdout) == "started\n"
        yield proc, readline
    finally:
        proc.kill()  # only if something above failed; ends a pending readline too
        proc.wait()
        reader.shutdown()


ReadLine = Callable[[IO[str] | None], str]
posix_signals = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


@posix_signals
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stop_signal_drains_and_exits_0(project: Path, backend: str, signum: int) -> None:
    """SIGTERM or Ctrl-C stops the sources, lets items in flight finish and exits 0 with stats."""
    with running(project, "graphs:slow", "--backend", backend) as (proc, _):
        signalled = time.monotonic()
        proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=10)
        waited = time.monotonic() - signalled
    name = signal.Signals(signum).name
    assert proc.returncode == 0, stderr
    assert stderr.splitlines()[1:] == [
        f"flowgraph: received {name}: stopping the sources; items in flight have 30s to "
        "finish (send it again to cancel them now)",
        f"flowgraph: stopped on {name}: every item in flight finished",
    ]
    assert stdout.startswith("graph 'slow' stopped after ")
    cells = summary(stdout)
    assert [row[:2] for row in cells[1:]] == [["forever", "source"], ["wait", "sink"]]
    assert cells[2][2] == cells[2][3] == cells[1][3]  # every item produced was consumed
    assert waited < 5


@posix_signals
def test_second_signal_cancels_and_exits_130(project: Path, backend: str) -> None:
    """A second signal cancels the items in flight at once and exits 130."""
    with running(project, "graphs:stuck", "--backend", backend) as (proc, readline):
        assert readline(proc.stderr).startswith("flowgraph: running graph 'stuck'")
        proc.send_signal(signal.SIGTERM)
        assert readline(proc.stderr).startswith("flowgraph: received SIGTERM: stopping")
        time.sleep(DUPLICATE_WINDOW + 0.1)  # sooner, it would be the same request again
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=10)
        waited = time.monotonic() - signalled
    assert proc.returncode == 130, stderr
    assert stderr.splitlines() == [
        "flowgraph: received SIGTERM while stopping: cancelling the items in flight",
        "flowgraph: interrupted",
    ]
    assert stdout.startswith("graph 'stuck' stopped after ")
    assert waited < 2


@posix_signals
def test_grace_period_running_out_exits_130(project: Path) -> None:
    """Items still running when ``--grace`` runs out are cancelled, and the exit code is 130."""
    with running(project, "graphs:stuck", "--grace", "0.2") as (proc, _):
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 130, stderr
    assert stderr.splitlines()[-2:] == [
        "flowgraph: the grace period of 0.2s is over: cancelling the items in flight",
        "flowgraph: interrupted",
    ]


@posix_signals
def test_the_same_signal_twice_at_once_counts_once(project: Path, backend: str) -> None:
    """A signal repeated within half a second, as GNU timeout sends it, still drains and exits 0."""
    with running(project, "graphs:draining", "--backend", backend) as (proc, readline):
        assert readline(proc.stderr).startswith("flowgraph: running graph 'draining'")
        proc.send_signal(signal.SIGTERM)
        assert readline(proc.stderr).startswith("flowgraph: received SIGTERM: stopping")
        proc.send_signal(signal.SIGTERM)  # the duplicate, while items still drain
        stdout, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 0, stderr
    assert stderr.splitlines() == ["flowgraph: stopped on SIGTERM: every item in flight finished"]
    assert stdout.startswith("graph 'draining' stopped after ")


@posix_signals
@pytest.mark.skipif(shutil.which("timeout") is None, reason="needs GNU timeout")
def test_gnu_timeout_drains_the_run(project: Path, backend: str) -> None:
    """Under ``timeout``, which signals the command and then its process group, the run drains."""
    proc = subprocess.run(
        [
            *("timeout", "--preserve-status", "-s", "TERM", "1.5"),
            *(sys.executable, "-m", "flowgraph", "run", "graphs:draining", "--backend", backend),
        ],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert "cancelling" not in proc.stderr
    assert proc.stderr.splitlines()[-1].startswith("flowgraph: stopped on SIGTERM")


@posix_signals
def test_after_the_grace_period_the_cli_names_the_abandoned_call(project: Path) -> None:
    """A sync call cannot be cancelled: the CLI names it, abandons it and exits 130 at once."""
    with running(project, "graphs:blocked", "--grace", "0.2") as (proc, readline):
        assert readline(proc.stdout) == "blocking\n"
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=15)
        waited = time.monotonic() - signalled
    assert proc.returncode == 130, stderr
    assert stderr.splitlines()[-3:] == [
        "flowgraph: the grace period of 0.2s is over: cancelling the items in flight",
        "flowgraph: node 'block': abandoning 1 sync call(s) still running in threads after 1s: "
        "block(1)",
        "flowgraph: interrupted",
    ]
    assert waited < 2.4  # the call sleeps 2.5 s: the process did not wait for it


@posix_signals
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_while_the_target_loads_stops_the_command(project: Path, signum: int) -> None:
    """A stop signal that arrives while the target is still being imported ends the command: exit 0."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowgraph", "run", "slow_import:graph"],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "importing\n"
        signalled = time.monotonic()
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=10)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0, stderr
    name = signal.Signals(signum).name
    assert stderr == f"flowgraph: stopped on {name} before the run started\n"
    assert time.monotonic() - signalled < 5


@posix_signals
def test_the_live_table_ends_with_the_summarys_word(project: Path) -> None:
    """In a terminal, the live table of a stopped run says 'stopped', as the summary does."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowgraph", "run", "graphs:slow", "--progress"],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=follower,
        text=True,
        env={**os.environ, "TERM": "xterm", "COLUMNS": "150"},
    )
    os.close(follower)
    terminal = Terminal(leader)
    try:
        terminal.wait_for("started")  # printed by the source, shown above the table
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        stdout, _ = proc.communicate(timeout=10)
    finally:
        proc.kill()
        proc.wait()
        terminal.close()
    assert proc.returncode == 0, terminal.text
    assert stdout.startswith("graph 'slow' stopped after ")
    titles = re.findall(r"slow · [\d.]+s · (\w+)", terminal.text)
    assert titles[0] == "running"
    assert titles[-1] == "stopped"
    assert "finished" not in titles


class Terminal:
    """The leader side of a pseudo-terminal, read by a thread into :attr:`text`."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.chunks: list[bytes] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:  # EIO: the other side is closed
                return
            if not chunk:
                return
            self.chunks.append(chunk)

    @property
    def text(self) -> str:
        return b"".join(self.chunks).decode(errors="replace")

    def wait_for(self, text: str, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.text:
            assert time.monotonic() < deadline, f"{text!r} never appeared in {self.text!r}"
            time.sleep(0.01)

    def close(self) -> None:
        self.reader.join(timeout=5)
        os.close(self.fd)


def test_progress_without_a_terminal_prints_describe_lines(project: Path) -> None:
    """``--progress`` with stderr not a terminal prints one describe() line per node."""
    proc = flowgraph("run", "graphs:graph", "--progress", cwd=project)
    assert proc.returncode == 0, proc.stderr
    assert summary(proc.stdout) == SUMMARY
    lines = proc.stderr.splitlines()
    assert lines[-3].startswith("tiny: numbers: in=0 out=50 errors=0 retries=0 skipped=0 dead=0 ")
    assert lines[-2].startswith("tiny: double: in=50 out=50 errors=0 ")
    assert lines[-1].startswith("tiny: collect: in=50 out=50 errors=0 ")
    assert all(line.endswith(" done") for line in lines[-2:])
    assert "\x1b" not in proc.stderr


def test_log_interval_logs_statistics_while_running(project: Path) -> None:
    """``--log-interval`` logs a line per node periodically on stderr."""
    proc = flowgraph("run", "graphs:paced", "--log-interval", "0.05", cwd=project)
    assert proc.returncode == 0, proc.stderr
    ticks = [line for line in proc.stderr.splitlines() if "paced: tick: in=" in line]
    assert len(ticks) >= 3  # some while running, one at the end
    assert ticks[0].startswith("flowgraph: paced: tick: in=")
    assert ticks[-1].startswith("flowgraph: paced: tick: in=30 out=30 ")


def test_dead_letter_nodes_need_a_store(project: Path) -> None:
    """A graph with on_error='dead_letter' nodes and no state store exits 2 saying so."""
    proc = flowgraph("run", "graphs:flaky", cwd=project)
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == (
        "flowgraph: error: graph 'flaky' dead-letters failed items of 'parse': "
        "pass --state URL or --dead-letters URL\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["run", "graphs:flaky", "--dead-letters", "http://x"],
            "--dead-letters: unsupported state store URL scheme 'http'; use one of: "
            "sqlite:///relative/path.db, sqlite:////absolute/path.db, a file path, "
            "postgresql://...",
        ),
        (
            ["run", "graphs:flaky", "--dead-letters", "sqlite:///nowhere/s.db"],
            "--dead-letters: directory of 'nowhere/s.db' does not exist",
        ),
        (
            ["run", "graphs:graph", "--state", "postgresq://db"],
            "--state: unsupported state store URL scheme 'postgresq'; use one of: "
            "sqlite:///relative/path.db, sqlite:////absolute/path.db, a file path, "
            "postgresql://...",
        ),
        (
            ["run", "graphs:graph", "--state", "sqlite://state.db"],
            "--state: a SQLite store URL needs a path after three slashes: "
            "sqlite:///relative/path.db or sqlite:////absolute/path.db",
        ),
        (
            ["run", "graphs:graph", "--checkpoint-every", "10"],
            "--checkpoint-every needs --state URL to commit checkpoints to",
        ),
        (
            ["dlq", "list", "--store", "sqlite:///missing.db"],
            "--store: no such SQLite file: 'missing.db'",
        ),
        (
            ["dlq", "purge", "--store", "sqlite:///missing.db"],
            "refusing to purge every dead letter without --yes; narrow it with --graph, "
            "--node, --run or --error-type, or pass --yes",
        ),
    ],
)
def test_bad_store_is_a_usage_error(project: Path, args: list[str], message: str) -> None:
    """A bad or missing store, or an unconfirmed purge of everything, exits 2 before any work."""
    proc = flowgraph(*args, cwd=project)
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == f"flowgraph: error: {message}\n"


def corrupt_checkpoint(db: Path) -> None:
    """A store whose checkpoint of graph 'tiny' is not JSON."""
    anyio.run(fg.Checkpoints(db).commit, "tiny", {"numbers": 3})
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE flowgraph_checkpoints SET position = '{not json'")


@pytest.mark.parametrize(
    ("option", "prepare", "message"),
    [
        (
            "--state",
            lambda db: db.write_bytes(bytes(range(256)) * 20),
            "--state: cannot open the SQLite store {db}: file is not a database",
        ),
        (
            "--dead-letters",
            lambda db: db.write_bytes(bytes(range(256)) * 20),
            "--dead-letters: cannot open the SQLite store {db}: file is not a database",
        ),
        (
            "--state",
            Path.mkdir,
            "--state: cannot open the SQLite store {db}: unable to open database file",
        ),
        (
            "--state",
            corrupt_checkpoint,
            "--state: SQLite store {db}: the checkpoint of source 'numbers' in graph 'tiny' "
            "is corrupt, not a JSON value ('{{not json'): ",
        ),
    ],
    ids=[
        "state-not-a-database",
        "dead-letters-not-a-database",
        "a-directory",
        "corrupt-checkpoint",
    ],
)
def test_a_store_that_cannot_be_opened_is_a_usage_error(
    project: Path, option: str, prepare: Callable[[Path], object], message: str
) -> None:
    """A store that is not one, or is corrupt, is one line and exit 2 before the run starts."""
    db = project / "state.db"
    prepare(db)
    proc = flowgraph("run", "graphs:graph", option, f"sqlite:///{db}", cwd=project)
    assert (proc.returncode, proc.stdout) == (2, ""), proc.stderr
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith(f"flowgraph: error: {message.format(db=db)}")


def test_an_unreachable_postgres_store_is_a_usage_error(project: Path) -> None:
    """A PostgreSQL store nobody listens for is one line and exit 2, before the run starts."""
    proc = flowgraph("run", "graphs:graph", "--state", "postgresql://127.0.0.1:1/db", cwd=project)
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == (
        "flowgraph: error: --state: cannot connect to the PostgreSQL store: connection failed: "
        'connection to server at "127.0.0.1", port 1 failed: Connection refused Is the server '
        "running on that host and accepting TCP/IP connections?\n"
    )


# -- run --state: checkpoints and dead letters in one store ---------------------------

STATE_GRAPHS = textwrap.dedent(
    """
    import os
    from pathlib import Path

    import anyio
    import flowgraph as fg

    HERE = Path(__file__).parent

    def record(name, value):
        with open(HERE / name, "a") as file:
            print(value, file=file)

    counted = fg.Graph("counted")

    @counted.source(checkpoint=True)
    def numbers(after):
        record("resumed.txt", after)
        start = 0 if after is None else after + 1
        for n in range(start, int(os.environ["LIMIT"])):
            yield fg.Positioned(n, n)

    @counted.sink
    def kept(n):
        record("kept.txt", n)

    counted.chain(numbers, kept)

    daemon = fg.Graph("daemon")

    @daemon.source(checkpoint=True)
    async def ticks(after):
        print("started", flush=True)
        print(f"resumed after {after}", flush=True)
        n = 0 if after is None else after + 1
        while True:
            yield fg.Positioned(n, n)
            n += 1
            await anyio.sleep(0.002)

    @daemon.sink(workers=4)
    async def seen(n):
        await anyio.sleep(0.01)
        record("seen.txt", n)

    daemon.chain(ticks, seen)
    """
)


@pytest.fixture
def state_project(tmp_path: Path) -> Path:
    """A directory holding ``state_graphs.py``: checkpointed graphs that record what they do."""
    (tmp_path / "state_graphs.py").write_text(STATE_GRAPHS)
    return tmp_path


def checkpoints(stderr: str, graph: str) -> list[dict[str, int]]:
    """The positions of the checkpoint lines that ``--state`` prints, in order."""
    prefix = f"flowgraph: checkpoint {graph}: "
    return [
        ast.literal_eval(line[len(prefix) :])
        for line in stderr.splitlines()
        if line.startswith(prefix)
    ]


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def stored_checkpoints(db: Path, graph: str) -> dict[str, Any]:
    return anyio.run(fg.Checkpoints(db).load, graph)


def test_state_commits_checkpoints_and_a_rerun_resumes_after_them(state_project: Path) -> None:
    """``--state`` logs each checkpoint commit; the next run (on trio) resumes after the last one."""
    db = state_project / "state.db"
    args = ("state_graphs.py:counted", "--state", f"sqlite:///{db}", "--checkpoint-every", "5")
    for limit, backend in [(20, "asyncio"), (30, "trio")]:
        proc = flowgraph(
            "run", *args, "--backend", backend, cwd=state_project, env={"LIMIT": str(limit)}
        )
        assert proc.returncode == 0, proc.stderr
        positions = [c["numbers"] for c in checkpoints(proc.stderr, "counted")]
        assert positions[-1] == limit - 1
        assert positions == sorted(set(positions))  # each commit moves forward
        assert stored_checkpoints(db, "counted") == {"numbers": limit - 1}
    assert lines(state_project / "resumed.txt") == ["None", "19"]
    assert lines(state_project / "kept.txt") == [str(n) for n in range(30)]  # none twice


@posix_signals
def test_sigterm_commits_a_final_checkpoint_and_a_restart_resumes_exactly_after_it(
    state_project: Path,
) -> None:
    """A daemon stopped by SIGTERM exits 0 after its last commit; a restart picks up right after."""
    db = state_project / "state.db"
    args = ("state_graphs.py:daemon", "--state", f"sqlite:///{db}", "--checkpoint-interval", "0.05")
    committed: list[int] = []
    for run in ("first", "restart"):
        with running(state_project, *args) as (proc, readline):
            after = committed[-1] if committed else None
            assert readline(proc.stdout) == f"resumed after {after}\n", run
            assert readline(proc.stderr).startswith("flowgraph: running graph 'daemon'")
            if after is None:
                assert readline(proc.stderr) == (
                    f"flowgraph: no checkpoint for source 'ticks' in SQLite store {db}: "
                    "starting from the beginning\n"
                )
            assert readline(proc.stderr).startswith("flowgraph: checkpoint daemon: ")
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=10)
        assert proc.returncode == 0, stderr
        assert "flowgraph: stopped on SIGTERM: every item in flight finished" in stderr
        last = checkpoints(stderr, "daemon")[-1]
        assert stored_checkpoints(db, "daemon") == last
        committed.append(last["ticks"])
    assert committed[0] < committed[1]
    # Every item up to the last checkpoint reached the sink once, across both runs; none beyond.
    assert lines(state_project / "seen.txt") == [str(n) for n in range(committed[1] + 1)]


def test_state_keeps_dead_letters_unless_dead_letters_says_otherwise(project: Path) -> None:
    """Dead letters go to the ``--state`` store, or to ``--dead-letters`` when it is given too."""
    state, other = f"sqlite:///{project / 'state.db'}", f"sqlite:///{project / 'other.db'}"
    proc = flowgraph("run", "graphs:flaky", "--state", state, cwd=project)
    assert proc.returncode == 0, proc.stderr
    proc = flowgraph("run", "graphs:flaky", "--state", state, "--dead-letters", other, cwd=project)
    assert proc.returncode == 0, proc.stderr
    for url in (state, other):
        listed = flowgraph("dlq", "list", "--store", url, "--json", cwd=project)
        assert [d["item"] for d in json.loads(listed.stdout)] == [0, 3, 6, 9]


# -- dlq ------------------------------------------------------------------------------


def test_dead_letters_are_listed_and_replayed_across_processes(project: Path) -> None:
    """Failed items land in SQLite, outlive the process, and replay once the cause is fixed."""
    url = f"sqlite:///{project / 'state.db'}"
    run = flowgraph("run", "graphs:flaky", "--dead-letters", url, cwd=project)
    assert run.returncode == 0, run.stderr
    assert summary(run.stdout)[1] == ["parse", "transform", "10", "6", "4", "0", "4"]
    run_id = run.stdout.split("(run ")[1].split(")")[0]
    assert run.stderr.splitlines()[-1] == (
        f"flowgraph: 4 dead letters in {url}; list them with: "
        f"flowgraph dlq list --store {url} --run {run_id}"
    )

    listed = flowgraph("dlq", "list", "--store", url, "--json", cwd=project)
    assert listed.returncode == 0, listed.stderr
    letters = json.loads(listed.stdout)
    assert [(d["graph"], d["node"], d["error_type"], d["item"]) for d in letters] == [
        ("flaky", "parse", "ValueError", x) for x in (0, 3, 6, 9)
    ]
    assert {d["message"] for d in letters} == {"bad 0", "bad 3", "bad 6", "bad 9"}
    table = flowgraph("dlq", "list", "--store", url, "--node", "parse", cwd=project).stdout
    lines = table.splitlines()
    assert lines[0].split() == ["id", "failed", "at", "graph", "node", "attempts", "error", "item"]
    assert lines[-1] == "4 dead letters"
    assert all("flaky  parse" in row and "ValueError: bad" in row for row in lines[1:-1])

    shown = flowgraph("dlq", "show", str(letters[1]["id"]), "--store", url, cwd=project)
    assert shown.returncode == 0, shown.stderr
    assert "  error:     ValueError: bad 3\n  item:      3\n" in shown.stdout
    assert 'raise ValueError(f"bad {x}")' in shown.stdout  # the stored traceback

    again = flowgraph("dlq", "replay", "graphs:flaky", "--store", url, cwd=project)
    assert again.returncode == 1
    assert again.stdout == "replayed 4 dead letters of graph 'flaky': 0 succeeded, 4 failed\n"
    ids = ", ".join(str(d["id"]) for d in letters)
    assert again.stderr == (
        f"flowgraph: error: failed again, kept in the store: {ids} (see 'flowgraph dlq show ID')\n"
    )

    (project / "fixed.flag").touch()
    fixed = flowgraph(
        "dlq", "replay", "graphs:flaky", "--store", url, "--backend", "trio", cwd=project
    )
    assert fixed.returncode == 0, fixed.stderr
    assert fixed.stdout == "replayed 4 dead letters of graph 'flaky': 4 succeeded, 0 failed\n"
    assert flowgraph("dlq", "list", "--store", url, cwd=project).stdout == "no dead letters\n"


@pytest.fixture
def store(tmp_path: Path) -> str:
    """A SQLite store holding five dead letters: three of node 'a' in graph 'g', two of 'b' in 'h'."""
    url = f"sqlite:///{tmp_path / 'dead.db'}"

    async def fill() -> None:
        async with fg.open_store(url) as opened:
            for i, (graph, node, error) in enumerate(
                [
                    ("g", "a", ValueError("v")),
                    ("g", "a", KeyError("k")),
                    ("g", "a", ValueError()),
                    ("h", "b", ValueError("v")),
                    ("h", "b", OSError("o")),
                ]
            ):
                await opened.add_dead_letter(fg.Failure(node, {"n": i}, error, 2, graph, "r1"))

    anyio.run(fill)
    return url


@pytest.mark.parametrize(
    ("filters", "ids"),
    [
        ([], [1, 2, 3, 4, 5]),
        (["--graph", "g"], [1, 2, 3]),
        (["--node", "b", "--error-type", "ValueError"], [4]),
        (["--run", "r1", "--limit", "2"], [1, 2]),
        (["--run", "r2"], []),
    ],
)
def test_dlq_list_filters(tmp_path: Path, store: str, filters: list[str], ids: list[int]) -> None:
    """``dlq list`` applies every filter given, oldest first."""
    proc = flowgraph("dlq", "list", "--store", store, "--json", *filters, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert [d["id"] for d in json.loads(proc.stdout)] == ids


def test_dlq_purge_removes_only_what_matches(tmp_path: Path, store: str) -> None:
    """``dlq purge`` with filters deletes the matching letters; ``--yes`` deletes the rest."""
    proc = flowgraph(
        "dlq", "purge", "--store", store, "--graph", "g", "--error-type", "ValueError", cwd=tmp_path
    )
    assert (proc.returncode, proc.stdout) == (0, "purged 2 dead letters\n")
    left = flowgraph("dlq", "list", "--store", store, "--json", cwd=tmp_path)
    assert [d["id"] for d in json.loads(left.stdout)] == [2, 4, 5]
    proc = flowgraph("dlq", "purge", "--store", store, "--yes", cwd=tmp_path)
    assert (proc.returncode, proc.stdout) == (0, "purged 3 dead letters\n")


def test_dlq_show_unknown_id_is_a_usage_error(tmp_path: Path, store: str) -> None:
    """Showing an id the store does not hold exits 2."""
    proc = flowgraph("dlq", "show", "99", "--store", store, cwd=tmp_path)
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == f"flowgraph: error: no dead letter 99 in {store}\n"


def test_dlq_show_json_has_every_field(tmp_path: Path, store: str) -> None:
    """``dlq show --json`` gives the whole record, traceback included."""
    proc = flowgraph("dlq", "show", "2", "--store", store, "--json", cwd=tmp_path)
    letter = json.loads(proc.stdout)
    assert letter.keys() == {
        "id",
        "graph",
        "node",
        "run_id",
        "time",
        "attempts",
        "error_type",
        "message",
        "item",
        "serializer",
        "traceback",
    }
    assert (letter["item"], letter["error_type"], letter["message"]) == (
        {"n": 1},
        "KeyError",
        "'k'",
    )


# -- show and help -------------------------------------------------------------------


def test_show_draws_mermaid_and_dot(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``show`` prints the graph's Mermaid flowchart, or DOT with ``--format dot``."""
    assert cli.main(["show", f"{project / 'graphs.py'}:graph"]) == 0
    mermaid = capsys.readouterr().out
    assert mermaid.splitlines() == [
        "flowchart LR",
        '    n0(["numbers"])',
        '    n1["double<br/>workers=4"]',
        '    n2[("collect")]',
        "    n0 --> n1",
        "    n1 --> n2",
    ]
    assert cli.main(["show", f"{project / 'graphs.py'}:graph", "--format", "dot"]) == 0
    dot = capsys.readouterr().out
    assert dot.startswith('digraph "tiny" {\n')
    assert '    n1 [label="double\\nworkers=4", shape=box];\n' in dot
    assert "    n0 -> n1;\n    n1 -> n2;\n}\n" in dot


COMMAND_OPTIONS = {
    ("run",): [
        "--progress",
        "--log-interval S",
        "--grace S",
        "--state URL",
        "--dead-letters URL",
        "--checkpoint-every N",
        "--checkpoint-interval S",
        "examples:",
    ],
    ("show",): ["--format {mermaid,dot}", "example"],
    ("demo",): ["--db PATH", "--items N"],
    ("dlq",): ["list", "show", "replay", "purge"],
    ("dlq", "list"): [
        "--store URL",
        "--graph G",
        "--node N",
        "--run R",
        "--error-type T",
        "--limit N",
        "--json",
    ],
    ("dlq", "show"): ["ID", "--store URL", "--json"],
    ("dlq", "replay"): ["TARGET", "--store URL", "--node N", "--error-type T", "fail again"],
    ("dlq", "purge"): ["--store URL", "--yes", "needs --yes"],
}


@pytest.mark.parametrize("command", list(COMMAND_OPTIONS), ids=" ".join)
def test_every_command_has_help(
    command: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    """``--help`` of every command exits 0 and explains its arguments."""
    with pytest.raises(SystemExit) as exit:
        cli.main([*command, "--help"])
    assert exit.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert text.startswith(f"usage: flowgraph {' '.join(command)} ")
    for option in COMMAND_OPTIONS[command]:
        assert option in text


# -- docs/cli.md's table of exit codes and messages --------------------------------------

CLI_DOCS = Path(__file__).parent.parent / "docs" / "cli.md"


def documented_exits() -> list[tuple[str, int, str]]:
    """The rows of cli.md's table of messages: (what happens, exit code, test name)."""
    text = CLI_DOCS.read_text().split("## Exit codes and messages", 1)[1]
    rows = re.findall(r"^\| (.+?) \| (\d+) \| .+? \| `(test_\w+)` \|$", text, re.MULTILINE)
    return [(what, int(code), test) for what, code, test in rows]


def test_every_documented_exit_is_tested() -> None:
    """Each row of cli.md's table names a test here that checks the row's exit code."""
    rows = documented_exits()
    assert len(rows) >= 20
    module = sys.modules[__name__]
    for what, code, name in rows:
        test = getattr(module, name, None)
        assert callable(test), f"{what}: no test {name}"
        source = inspect.getsource(test)
        checks = [rf"returncode == {code}\b", rf"\({code}, ", rf"== {code}\)", rf"code == {code}\b"]
        assert any(re.search(check, source) for check in checks), f"{name} never checks exit {code}"
