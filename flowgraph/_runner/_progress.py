"""A live progress display of a run: one row per node, redrawn in place in a terminal.

The display reads ``run.statistics()`` every *refresh* seconds from a task of
the run (side work, so a display fault is logged and never breaks the run) and
draws it with rich's ``Live`` and ``Table``. When the console is not a terminal
(a log file, a CI job) it prints plain ``NodeStatistics.describe()`` lines
every few seconds instead, since redrawing in place would only fill the log
with copies of the table. Either way the final statistics are shown when the
display closes.

rich is an optional extra (``flowgraph[cli]``) imported only when a display opens.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sized
from contextlib import ExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio

from .._core._nodes import Collection, NodeKind
from .._core._validate import to_seconds

if TYPE_CHECKING:
    from datetime import timedelta

    from rich.console import Console
    from rich.table import Table

    from .._core._graph import Graph
    from .._core._run import Run
    from .._core._stats import NodeStatistics, RunStatistics

PLAIN_INTERVAL = 5.0
"""Seconds between two sets of plain lines when the console is not a terminal."""


def require_rich() -> None:
    """Raise an ``ImportError`` with the install command if rich is missing."""
    try:
        import rich  # noqa: F401
    except ImportError as exc:
        raise ImportError("progress display needs rich: pip install 'flowgraph[cli]'") from exc


@asynccontextmanager
async def open_progress(
    run: Run,
    *,
    console: Console | None = None,
    refresh: float | timedelta = 0.25,
    plain_interval: float | timedelta = PLAIN_INTERVAL,
) -> AsyncIterator[None]:
    """Show the progress of *run* on *console* while the block runs.

    In a terminal, a table is redrawn every *refresh* seconds: per node its
    kind, items in and out, rate (items out per second since the node
    started), queue fill (depth/capacity), busy workers, errors, retries, dead
    letters and median latency, then a total row; for a source whose
    iterable has a length (``graph.source([...], name=...)``) the share read so
    far. Elsewhere, one ``describe()`` line per node every *plain_interval*
    seconds. The final statistics are drawn when the block exits, also on
    error or cancellation. Lines the run's functions print appear above the
    table. Time is read through anyio, so a virtual clock drives it too.

    ``async with fg.open_run(graph) as run, fg.open_progress(run): await run.wait_finished()``

    Args:
        run: a running run, from :func:`open_run`.
        console: a ``rich.console.Console``; default: one writing to stderr.
        refresh: seconds between two redraws in a terminal.
        plain_interval: seconds between two sets of plain lines elsewhere.

    Raises:
        ImportError: if rich is not installed.
        RuntimeError: if *run* is not running.
        GraphError: if *refresh* or *plain_interval* is not a positive duration.

    Added in 0.1.
    """
    refresh = to_seconds("refresh", refresh)
    plain_interval = to_seconds("plain_interval", plain_interval)
    require_rich()
    from rich.console import Console

    if console is None:
        console = Console(stderr=True)
    lengths = source_lengths(run.graph)
    closed = anyio.Event()

    def table() -> Table:
        return progress_table(run.statistics(), lengths, stopping=run.stopping)

    with ExitStack() as stack:
        if console.is_terminal:
            from rich.live import Live

            live = stack.enter_context(Live(table(), console=console, auto_refresh=False))
            interval = refresh

            def show() -> None:
                live.update(table(), refresh=True)

        else:
            interval = plain_interval

            def show() -> None:
                for line in plain_lines(run.statistics(), lengths):
                    console.out(line, highlight=False)

        run.start_soon(_every, interval, closed, show, name="flowgraph progress")
        try:
            yield
        finally:
            closed.set()
            show()


async def _every(interval: float, closed: anyio.Event, show: Callable[[], None]) -> None:
    """Call *show* every *interval* seconds until *closed* is set."""
    while True:
        with anyio.move_on_after(interval):
            await closed.wait()
        if closed.is_set():
            return
        show()


def source_lengths(graph: Graph) -> dict[str, int]:
    """The number of items of each source whose iterable or function has a length."""
    lengths: dict[str, int] = {}
    for name, node in graph.nodes.items():
        if node.kind is NodeKind.SOURCE:
            length = _length(node.fn)
            if length is not None:
                lengths[name] = length
    return lengths


def _length(fn: Any) -> int | None:
    target = fn.items if isinstance(fn, Collection) else fn
    if not isinstance(target, Sized):
        return None
    try:
        return len(target)
    except (TypeError, OverflowError):
        return None


def run_state(*, finished: bool, stopping: bool) -> str:
    """One word for where a run is: ``running``, ``stopping``, ``stopped`` or ``finished``.

    The live table and the command line's summary both use it, so that a run
    ends with the same word in both.
    """
    if finished:
        return "stopped" if stopping else "finished"
    return "stopping" if stopping else "running"


def progress_table(
    stats: RunStatistics, lengths: Mapping[str, int] | None = None, *, stopping: bool = False
) -> Table:
    """Render *stats* as a rich ``Table``: one row per node and a total row.

    The total row counts items in as those the sources produced and items out
    as those the sinks consumed; its rate is the run's sink throughput.
    """
    from rich.table import Table

    lengths = lengths or {}
    nodes = list(stats.values())
    state = run_state(finished=all(s.finished for s in nodes), stopping=stopping)
    table = Table(title=f"{stats.graph} · {stats.elapsed:.1f}s · {state}", title_justify="left")
    table.add_column("node")
    table.add_column("kind")
    for header in ("in", "out", "done", "rate/s", "queue", "busy", "errors", "retries", "dead"):
        if header != "done" or lengths:
            table.add_column(header, justify="right")
    table.add_column("p50", justify="right")

    def add(cells: list[str], **style: Any) -> None:
        if not lengths:
            del cells[4]
        table.add_row(*cells, **style)

    for s in nodes:
        source = s.kind == NodeKind.SOURCE.value
        add(
            [
                s.name,
                s.kind,
                "-" if source else str(s.items_in),
                str(s.items_out),
                _share(s.items_out, lengths.get(s.name)),
                f"{s.throughput:,.1f}",
                "-" if source else f"{s.queue_depth}/{s.queue_capacity}",
                "-" if source else f"{s.busy}/{s.workers}",
                str(s.errors),
                str(s.retries),
                str(s.dead_lettered),
                _duration(s.latency_p50),
            ],
            style="dim" if s.finished else None,
        )
    sources = [s for s in nodes if s.kind == NodeKind.SOURCE.value]
    workers = [s for s in nodes if s.kind != NodeKind.SOURCE.value]
    produced = sum(s.items_out for s in sources)
    known = len(lengths) == len(sources)
    table.add_section()
    add(
        [
            "total",
            "",
            str(produced),
            str(sum(s.items_out for s in nodes if s.kind == NodeKind.SINK.value)),
            _share(produced, sum(lengths.values()) if known else None),
            f"{stats.throughput:,.1f}",
            f"{sum(s.queue_depth for s in workers)}/{sum(s.queue_capacity for s in workers)}",
            f"{sum(s.busy for s in workers)}/{sum(s.workers for s in workers)}",
            str(sum(s.errors for s in nodes)),
            str(sum(s.retries for s in nodes)),
            str(sum(s.dead_lettered for s in nodes)),
            "",
        ],
        style="bold",
    )
    return table


def plain_lines(stats: RunStatistics, lengths: Mapping[str, int] | None = None) -> list[str]:
    """One ``describe()`` line per node, with the share read for sources of known length."""
    lengths = lengths or {}
    return [f"{stats.graph}: {s.describe()}{_of(s, lengths.get(s.name))}" for s in stats.values()]


def _of(stats: NodeStatistics, length: int | None) -> str:
    if length is None:
        return ""
    return f" ({stats.items_out}/{length}, {_share(stats.items_out, length)})"


def _share(done: int, total: int | None) -> str:
    if total is None:
        return ""
    return f"{100 * done / total:.0f}%" if total else "100%"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.3g}µs"
    return f"{seconds * 1e3:.3g}ms" if seconds < 1 else f"{seconds:.3g}s"
