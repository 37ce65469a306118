"""The ``flowgraph`` command, run for real in subprocesses."""

from __future__ import annotations

import concurrent.futures
import importlib.util
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import flowgraph as fg

BACKENDS = [
    pytest.param("asyncio", id="asyncio"),
    pytest.param(
        "trio",
        id="trio",
        marks=pytest.mark.skipif(importlib.util.find_spec("trio") is None, reason="needs trio"),
    ),
]

GRAPHS = textwrap.dedent(
    """
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
    """
)

SUMMARY = [
    ["node", "kind", "in", "out", "errors"],
    ["numbers", "source", "-", "50", "0"],
    ["double", "transform", "50", "50", "0"],
    ["collect", "sink", "50", "50", "0"],
]


def flowgraph(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flowgraph", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
    )


def summary(stdout: str) -> list[list[str]]:
    """The cells of the summary table, without the elapsed column, which varies."""
    return [line.split()[:-1] for line in stdout.splitlines()[1:]]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A directory holding ``graphs.py`` and ``broken.py``, which fails on import."""
    (tmp_path / "graphs.py").write_text(GRAPHS)
    (tmp_path / "broken.py").write_text("1 / 0\n")
    return tmp_path


def test_version_prints_the_package_version(tmp_path: Path) -> None:
    """``--version`` prints the installed version and exits 0."""
    proc = flowgraph("--version", cwd=tmp_path)
    assert (proc.returncode, proc.stdout) == (0, f"flowgraph {fg.__version__}\n")


@pytest.mark.parametrize("backend", BACKENDS)
def test_run_module_target_prints_a_summary(project: Path, backend: str) -> None:
    """``run package.module:attr`` imports from the current directory and prints per-node counts."""
    proc = flowgraph("run", "graphs:graph", "--backend", backend, cwd=project)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("graph 'tiny' finished in ")
    assert summary(proc.stdout) == SUMMARY
    assert f"running graph 'tiny' (3 nodes) on {backend}" in proc.stderr


@pytest.mark.parametrize("backend", BACKENDS)
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


@pytest.mark.parametrize("backend", BACKENDS)
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


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("backend", BACKENDS)
def test_sigint_exits_130_promptly(project: Path, backend: str) -> None:
    """Ctrl-C during a run cancels the graph and exits 130 within a second or two."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowgraph", "run", "graphs:slow", "--backend", backend],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    reader = concurrent.futures.ThreadPoolExecutor(1)
    try:
        assert reader.submit(proc.stdout.readline).result(timeout=15) == "started\n"
        signalled = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=10)
        waited = time.monotonic() - signalled
    finally:
        proc.kill()  # only if something above failed; ends the reader's readline too
        proc.wait()
        reader.shutdown()
    assert proc.returncode == 130, stderr
    assert stderr.splitlines()[-1] == "flowgraph: interrupted"
    assert waited < 2


def test_trio_backend_without_trio_is_a_usage_error(tmp_path: Path) -> None:
    """``--backend trio`` without trio installed exits 2 saying how to install it."""
    code = (
        "import sys; sys.modules['trio'] = None; from flowgraph.cli import main; sys.exit(main())"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, "demo", "--backend", "trio"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert (
        proc.stderr
        == "flowgraph: error: --backend trio needs trio: pip install 'flowgraph[trio]'\n"
    )
