"""How the ``flowgraph`` commands print: plain aligned tables on stdout, messages on stderr.

Results (summaries, tables, drawings, JSON) go to stdout so that they can be
piped; everything about the command itself (what it is doing, warnings,
errors) goes to stderr, one line each, prefixed ``flowgraph: ``.
"""

from __future__ import annotations

import shlex
import sys
from datetime import datetime
from typing import TYPE_CHECKING

from .._runner import run_state
from ._args import EXIT_INTERRUPTED

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .._core import RunResult


def err(message: str) -> None:
    """Print *message* on stderr as one ``flowgraph: ...`` line."""
    print(f"flowgraph: {message}", file=sys.stderr, flush=True)


def interrupted() -> int:
    """Say that the command was interrupted; return its exit code."""
    err("interrupted")
    return EXIT_INTERRUPTED


def format_summary(result: RunResult) -> str:
    """Render a run's per-node statistics as a small table, one line per node.

    The columns are those of the live table: items in and out, errors (items
    that still failed after their retries), retries, and dead letters.
    """
    header = ("node", "kind", "in", "out", "errors", "retries", "dead", "elapsed")
    rows = [
        (
            s.name,
            s.kind,
            "-" if s.kind == "source" else str(s.items_in),
            str(s.items_out),
            str(s.errors),
            str(s.retries),
            str(s.dead_lettered),
            f"{s.elapsed:.2f}s",
        )
        for s in result.statistics.values()
    ]
    state = run_state(finished=True, stopping=result.stopped)
    how = "after" if result.stopped else "in"
    title = f"graph {result.graph!r} {state} {how} {result.elapsed:.2f}s (run {result.run_id})"
    return f"{title}\n{format_table(header, rows, right=set(range(2, len(header))))}"


def dead_letter_hint(result: RunResult, store: str) -> str | None:
    """The command that lists the dead letters *result*'s run left in *store*, if any."""
    dead = sum(s.dead_lettered for s in result.statistics.values())
    if not dead:
        return None
    command = shlex.join(["flowgraph", "dlq", "list", "--store", store, "--run", result.run_id])
    return f"{plural(dead, 'dead letter')} in {store}; list them with: {command}"


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]], *, right: set[int]) -> str:
    """Align *rows* under *header* in columns; the columns in *right* are right-aligned."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        cells = [
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        return "  ".join(cells).rstrip()

    return "\n".join(map(line, [header, *rows]))


def plural(count: int, noun: str) -> str:
    """``"1 dead letter"``, ``"3 dead letters"``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def when(timestamp: float) -> str:
    """A wall-clock *timestamp* as local ``YYYY-MM-DD HH:MM:SS``."""
    return datetime.fromtimestamp(timestamp).isoformat(sep=" ", timespec="seconds")


def shorten(text: str, width: int) -> str:
    """*text* on one line, cut to *width* characters with ``...`` if longer."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."
