"""The ``flowgraph`` command line: run, draw and inspect graphs, and manage dead letters.

This module is the entry point (``flowgraph._cli:main``): the table of
commands, the argument parser built from it, and the mapping of what a command
raised to an exit code. The commands themselves live in ``_run`` (run,
show, demo) and ``_dlq`` (dlq ...). Each is an ``add_*_arguments``
function declaring its options and a ``cmd_*`` function taking the parsed
arguments and returning an exit code, registered in :data:`COMMANDS`; a group
of commands (``dlq``) is a :class:`Command` holding others. Adding a command
means adding one entry. The CLI itself uses only the standard library
(argparse); ``--progress`` needs rich.

Exit codes (docs/cli.md has the table, one test per row):

* ``0``: the command succeeded; also a run stopped gracefully by SIGINT/SIGTERM
  (after its last checkpoint commit, if it has a state store), or stopped
  before it started by a signal that came while its graph was loading.
* ``1``: the run failed (a node raised, a store failed while the graph ran),
  or replayed dead letters failed again; the error message is printed without
  a traceback unless ``--traceback``.
* ``2``: usage error: bad arguments, a target that cannot be loaded as a graph
  (not found, failed on import or in its factory, missing attribute, not a
  graph, a graph that cannot run: a cycle, a node wired to nothing), a bad
  store URL, a store that cannot be opened (unreachable, not a store, corrupt),
  a missing store, an unknown dead-letter id, an extra that is not installed.
* ``130``: interrupted: Ctrl-C outside a run, or a stop signal whose run had to
  cancel items in flight (a second signal, or the grace period ran out).
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import textwrap
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import flowgraph as fg

from . import _dlq, _run
from ._args import EXIT_FAILED, EXIT_USAGE, UsageError
from ._output import err, interrupted

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence

BACKENDS = ("asyncio", "trio")


@dataclass(frozen=True, slots=True)
class Command:
    """One subcommand (options and the function that runs it), or a group of subcommands."""

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None
    run: Callable[[argparse.Namespace], int] | None = None
    description: str = ""
    commands: Mapping[str, Command] = field(default_factory=dict)


COMMANDS: dict[str, Command] = {
    "run": Command(
        "run a graph and print per-node statistics",
        _run.add_run_arguments,
        _run.cmd_run,
        description="SIGINT (Ctrl-C) or SIGTERM stops the run gracefully: the sources stop, "
        "items in flight drain within --grace seconds, then what is left is cancelled; a "
        "second signal cancels at once (the same signal again within half a second, as "
        "GNU timeout sends it, counts once). A graceful stop exits 0, one that had to "
        "cancel 130."
        "\n\nWith --state, checkpointed sources (graph.source(fn, checkpoint=True)) resume "
        "after the last position committed, and the run commits once more when it stops, "
        "however it stops."
        "\n\nexamples:\n  flowgraph run pipelines.ingest:graph --progress\n"
        "  flowgraph run jobs/daily.py:make_graph --backend trio --grace 60 "
        "--state sqlite:///state.db",
    ),
    "show": Command(
        "draw a graph as Mermaid or Graphviz DOT text",
        _run.add_show_arguments,
        _run.cmd_show,
        description="examples:\n  flowgraph show pipelines.ingest:graph > graph.mmd\n"
        "  flowgraph show pipelines.ingest:graph --format dot | dot -Tsvg > graph.svg",
    ),
    "dlq": Command(
        "list, show, replay and purge dead letters in a state store",
        description="Dead letters are the items that nodes declared with "
        "on_error='dead_letter' gave up on, kept with their error in a state store "
        "(flowgraph run --state URL or --dead-letters URL). Fix the cause, then replay them.",
        commands={
            "list": Command(
                "list dead letters, oldest first",
                _dlq.add_list_arguments,
                _dlq.cmd_list,
                description="example:\n  flowgraph dlq list --store sqlite:///state.db "
                "--node fetch --error-type httpx.ReadTimeout",
            ),
            "show": Command(
                "show one dead letter: its item, error and traceback",
                _dlq.add_show_arguments,
                _dlq.cmd_show,
                description="example:\n  flowgraph dlq show 42 --store sqlite:///state.db",
            ),
            "replay": Command(
                "feed dead letters back into their node; remove each that succeeds",
                _dlq.add_replay_arguments,
                _dlq.cmd_replay,
                description="Each item runs through its node and everything downstream, using "
                "the functions of TARGET as they are now. Those that fail again stay in the "
                "store, and the command exits 1.\n\nexample:\n"
                "  flowgraph dlq replay pipelines.ingest:graph --store sqlite:///state.db",
            ),
            "purge": Command(
                "delete dead letters for good",
                _dlq.add_purge_arguments,
                _dlq.cmd_purge,
                description="Deletes the dead letters matching every filter given; deleting "
                "all of them needs --yes.\n\nexample:\n"
                "  flowgraph dlq purge --store sqlite:///state.db --graph ingest --node parse",
            ),
        },
    ),
    "demo": Command(
        "run a self-contained ingestion pipeline into SQLite",
        _run.add_demo_arguments,
        _run.cmd_demo,
        description="Ingests records from a built-in fake, flaky paginated API into SQLite, "
        "with retries and rate limits: no network and no set-up needed.",
    ),
}


# -- parsing and dispatch -------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser, one subparser per entry of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="flowgraph",
        description="Concurrent data pipelines as graphs of functions, on asyncio or trio.",
        epilog="exit codes: 0 ok, 1 the pipeline failed, 2 usage error, 130 interrupted",
    )
    parser.add_argument("--version", action="version", version=f"flowgraph {fg.__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--backend",
        choices=BACKENDS,
        default="asyncio",
        help="event loop to run on (default: asyncio)",
    )
    common.add_argument(
        "--traceback",
        action="store_true",
        help="print the full traceback when loading or running the graph fails",
    )
    _add_commands(parser, COMMANDS, common)
    return parser


def _add_commands(
    parser: argparse.ArgumentParser,
    commands: Mapping[str, Command],
    common: argparse.ArgumentParser,
) -> None:
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, command in commands.items():
        sub = subparsers.add_parser(
            name,
            help=command.help,
            description=_paragraphs(command.help, command.description),
            formatter_class=argparse.RawDescriptionHelpFormatter,
            parents=[] if command.commands else [common],
        )
        if command.commands:
            _add_commands(sub, command.commands, common)
        else:
            assert command.add_arguments is not None
            command.add_arguments(sub)
            sub.set_defaults(handler=command.run)


def _paragraphs(*texts: str) -> str:
    """Wrap prose paragraphs for ``--help``, keeping indented example lines as they are."""
    paragraphs = [p for text in texts for p in text.split("\n\n") if p]
    return "\n\n".join(p if "\n  " in p else textwrap.fill(p, 79) for p in paragraphs)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with *argv* (default: ``sys.argv[1:]``); return the exit code."""
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        if getattr(args, "backend", None) == "trio" and importlib.util.find_spec("trio") is None:
            raise UsageError("--backend trio needs trio: pip install 'flowgraph[trio]'")
        with _log_to_stderr(_log_levels(args)):
            return handler(args)
    except UsageError as exc:
        if args.traceback and exc.__cause__ is not None:
            traceback.print_exception(exc.__cause__)
        err(f"error: {exc}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        return interrupted()
    except BaseExceptionGroup as group:
        if group.subgroup(KeyboardInterrupt) is not None:
            return interrupted()
        errors = group.subgroup(fg.FlowgraphError)
        if errors is None or group.split(fg.FlowgraphError)[1] is not None:
            raise
        _report_failure(group, args.traceback, [str(e) for e in _leaves(errors)])
        return EXIT_FAILED
    except fg.FlowgraphError as exc:
        _report_failure(exc, args.traceback, [str(exc)])
        return EXIT_FAILED


def _report_failure(error: BaseException, show_traceback: bool, messages: list[str]) -> None:
    if show_traceback:
        traceback.print_exception(error)
    for message in messages:
        err(f"error: {message}")


def _leaves(group: BaseExceptionGroup[Any]) -> list[BaseException]:
    leaves: list[BaseException] = []
    for exc in group.exceptions:
        leaves.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return leaves


# -- logging ----------------------------------------------------------------------------


def _log_levels(args: argparse.Namespace) -> dict[str, int]:
    """The level of each ``flowgraph`` logger shown on stderr: warnings, and what was asked for."""
    levels = {"flowgraph": logging.WARNING}
    if getattr(args, "log_interval", None) is not None:
        levels["flowgraph"] = logging.INFO
    if getattr(args, "state", None) is not None:
        levels["flowgraph.checkpoints"] = logging.INFO  # one line per commit
    return levels


class _StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is now, so that the progress display can redirect it."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            err(self.format(record))
        except Exception:
            self.handleError(record)


@contextmanager
def _log_to_stderr(levels: Mapping[str, int]) -> Iterator[None]:
    """Show the records of the ``flowgraph`` loggers on stderr at *levels*, for one command.

    *levels* maps logger names (``"flowgraph"`` first, then its children) to the
    lowest level shown; each logger gets its old level back afterwards.
    """
    root = logging.getLogger("flowgraph")
    handler = _StderrHandler()
    saved = {name: logging.getLogger(name).level for name in levels}
    propagate = root.propagate
    root.addHandler(handler)
    root.propagate = False
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.propagate = propagate
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)
