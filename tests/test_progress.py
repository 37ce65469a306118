"""The live progress display: rich table in a terminal, describe() lines elsewhere."""

from __future__ import annotations

import io
import os
import re
import select
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from rich.console import Console

import flowgraph as fg
from flowgraph._core._stats import NodeStatistics, RunStatistics
from flowgraph._runner._progress import open_progress, plain_lines, progress_table, source_lengths

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")


def tiny_graph(items: int = 40, delay: float = 0.0) -> fg.Graph:
    graph = fg.Graph("tiny")

    async def double(x: int) -> int:
        await anyio.sleep(delay)
        return 2 * x

    async def collect(x: int) -> None:
        pass

    graph.chain(
        graph.source(list(range(items)), name="numbers"),
        graph.transform(double, workers=4),
        graph.sink(collect),
    )
    return graph


def last_rows(text: str, names: list[str]) -> dict[str, list[str]]:
    """The cells of the last row drawn for each of *names*, from a rich table's text."""
    rows: dict[str, list[str]] = {}
    for line in ANSI.sub("", text).splitlines():
        cells = [cell.strip() for cell in re.split("[│┃]", line.strip())[1:-1]]
        if cells and cells[0] in names:
            rows[cells[0]] = cells
    return rows


def node_stats(name: str, kind: str, **counts: int | float | None) -> NodeStatistics:
    defaults: dict[str, int | float | bool | None] = {
        "items_in": 0,
        "items_out": 0,
        "errors": 0,
        "retries": 0,
        "skipped": 0,
        "dead_lettered": 0,
        "busy": 0,
        "queue_depth": 0,
        "queue_capacity": 0,
        "workers": 1,
        "elapsed": 2.0,
        "finished": False,
    }
    return NodeStatistics(name=name, kind=kind, **{**defaults, **counts})  # type: ignore[arg-type]


def test_table_shows_counts_queue_fill_busy_workers_and_share() -> None:
    """Each node gets a row with its counters; the total row sums them."""
    stats = RunStatistics(
        graph="g",
        elapsed=2.0,
        nodes={
            "src": node_stats("src", "source", items_out=25),
            "fetch": node_stats(
                "fetch",
                "transform",
                items_in=22,
                items_out=18,
                errors=2,
                retries=7,
                dead_lettered=2,
                busy=2,
                queue_depth=3,
                queue_capacity=16,
                workers=4,
                latency_p50=0.0125,
            ),
            "store": node_stats(
                "store", "sink", items_in=18, items_out=18, queue_capacity=8, latency_p50=2e-6
            ),
        },
    )
    console = Console(record=True, width=120, file=io.StringIO())
    console.print(progress_table(stats, {"src": 100}))
    text = console.export_text()
    assert text.splitlines()[0].strip() == "g · 2.0s · running"
    header = [
        "node",
        "kind",
        "in",
        "out",
        "done",
        "rate/s",
        "queue",
        "busy",
        "errors",
        "retries",
        "dead",
        "p50",
    ]
    rows = last_rows(text, ["node", "src", "fetch", "store", "total"])
    assert rows["node"] == header
    assert rows["src"] == ["src", "source", "-", "25", "25%", "12.5", "-", "-", "0", "0", "0", "-"]
    assert rows["fetch"] == [
        *("fetch", "transform", "22", "18", "", "9.0", "3/16", "2/4", "2", "7", "2", "12.5ms"),
    ]
    assert rows["store"] == [
        *("store", "sink", "18", "18", "", "9.0", "0/8", "0/1", "0", "0", "0", "2µs"),
    ]
    assert rows["total"] == [
        *("total", "", "25", "18", "25%", "9.0", "3/24", "2/5", "2", "7", "2", ""),
    ]


def test_table_has_no_share_column_when_no_length_is_known() -> None:
    """Without a source of known length there is no ``done`` column at all."""
    stats = RunStatistics("g", 1.0, {"src": node_stats("src", "source", finished=True)})
    console = Console(record=True, width=120, file=io.StringIO())
    console.print(progress_table(stats, {}, stopping=True))
    text = console.export_text()
    assert "done" not in text
    assert text.splitlines()[0].strip() == "g · 1.0s · stopped"


def test_source_lengths_come_from_sized_iterables_and_callables() -> None:
    """Lists, ranges and callables with ``__len__`` have a length; generators do not."""

    class Pages:
        def __len__(self) -> int:
            return 7

        def __call__(self) -> Iterator[int]:
            yield from range(7)

    def gen() -> Iterator[int]:
        yield 1

    graph = fg.Graph("g")
    sink = graph.sink(lambda x: None, name="sink")
    for source in (
        graph.source([1, 2, 3], name="listed"),
        graph.source(range(10), name="ranged"),
        graph.source(iter([1]), name="iterator"),
        graph.source(Pages(), name="pages"),
        graph.source(gen),
    ):
        graph.connect(source, sink)
    assert source_lengths(graph) == {"listed": 3, "ranged": 10, "pages": 7}


async def test_progress_redraws_the_table_in_a_terminal() -> None:
    """In a terminal the table is redrawn while the run goes and ends on the final counts."""
    console = Console(record=True, force_terminal=True, width=120, file=io.StringIO())
    graph = tiny_graph(delay=0.005)
    async with fg.open_run(graph) as run, open_progress(run, console=console, refresh=0.01):
        await run.wait_finished()
    text = console.export_text()
    assert text.count("tiny · ") >= 3  # the first frame, some redraws, the final frame
    rows = last_rows(text, ["numbers", "double", "collect", "total"])
    assert rows["numbers"][:5] == ["numbers", "source", "-", "40", "100%"]
    assert rows["double"][:4] == ["double", "transform", "40", "40"]
    assert rows["collect"][:4] == ["collect", "sink", "40", "40"]
    assert rows["total"][:5] == ["total", "", "40", "40", "100%"]
    assert "tiny · " in text.rsplit("┏", 1)[0].splitlines()[-1]
    assert "finished" in text.rsplit("┏", 1)[0].splitlines()[-1]


async def test_progress_prints_describe_lines_when_not_a_terminal() -> None:
    """Elsewhere it prints one describe() line per node now and then, and at the end."""
    out = io.StringIO()
    console = Console(file=out, width=80)
    graph = tiny_graph(delay=0.01)
    async with fg.open_run(graph) as run:
        async with open_progress(run, console=console, plain_interval=0.02):
            await run.wait_finished()
        final = plain_lines(run.statistics(), {"numbers": 40})
    lines = out.getvalue().splitlines()
    assert lines[-3:] == final
    assert final[0].startswith("tiny: numbers: in=0 out=40 errors=0 ")
    assert final[0].endswith(" done (40/40, 100%)")
    assert final[1] == "tiny: " + run.statistics()["double"].describe()
    assert len(lines) >= 6  # at least one periodic set before the final one
    assert "\x1b" not in out.getvalue()


async def test_progress_shows_final_counts_when_the_run_fails() -> None:
    """A failing node still leaves the last statistics on screen."""
    out = io.StringIO()
    graph = fg.Graph("bad")

    async def boom(x: int) -> int:
        raise ValueError("no")

    graph.chain(graph.source([1], name="one"), graph.sink(boom))
    with pytest.raises(fg.NodeError):
        async with fg.open_run(graph) as run, open_progress(run, console=Console(file=out)):
            await run.wait_finished()
    assert "bad: boom: in=1 out=0 errors=1 " in out.getvalue()


async def test_progress_needs_rich(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without rich, opening a display says how to install it."""
    monkeypatch.setitem(sys.modules, "rich", None)
    async with fg.open_run(tiny_graph()) as run:
        with pytest.raises(
            ImportError, match=r"^progress display needs rich: pip install 'flowgraph\[cli\]'$"
        ):
            async with open_progress(run):
                pass


async def test_progress_refuses_a_non_positive_refresh() -> None:
    """The refresh period is validated like every other duration."""
    async with fg.open_run(tiny_graph()) as run:
        with pytest.raises(fg.GraphError, match=r"^refresh must be > 0 \(got 0\)$"):
            async with open_progress(run, refresh=0):
                pass


GRAPH_FILE = textwrap.dedent(
    """
    import anyio
    import flowgraph as fg

    graph = fg.Graph("tiny")

    async def double(x):
        await anyio.sleep(0.005)
        return 2 * x

    async def collect(x):
        pass

    graph.chain(
        graph.source(list(range(40)), name="numbers"),
        graph.transform(double, workers=4),
        graph.sink(collect),
    )
    """
)


def run_in_pty(args: list[str], cwd: Path, timeout: float = 20) -> tuple[int, str]:
    """Run *args* with a pseudo-terminal of 120x50 as stdout and stderr; return code and output."""
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 120, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "COLUMNS", "LINES")}
    env["TERM"] = "xterm-256color"
    proc = subprocess.Popen(
        args, cwd=cwd, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while (left := deadline - time.monotonic()) > 0:
            if not select.select([master], [], [], left)[0]:
                break
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every writer of the terminal has closed it
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return proc.wait(timeout=5), b"".join(chunks).decode()


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
def test_cli_progress_draws_a_table_in_a_pseudo_terminal(tmp_path: Path) -> None:
    """``flowgraph run --progress`` in a terminal draws the table, ending on the final counts."""
    (tmp_path / "graphs.py").write_text(GRAPH_FILE)
    code, output = run_in_pty(
        [sys.executable, "-m", "flowgraph", "run", "graphs.py:graph", "--progress"], tmp_path
    )
    assert code == 0, output
    assert "\x1b[" in output  # drawn with terminal control sequences, not plain lines
    rows = last_rows(output, ["node", "numbers", "double", "collect", "total"])
    assert rows["node"][:5] == ["node", "kind", "in", "out", "done"]
    assert rows["numbers"][:5] == ["numbers", "source", "-", "40", "100%"]
    assert rows["double"][:4] == ["double", "transform", "40", "40"]
    assert rows["collect"][:4] == ["collect", "sink", "40", "40"]
    assert rows["total"][:5] == ["total", "", "40", "40", "100%"]
    assert "graph 'tiny' finished in " in output
