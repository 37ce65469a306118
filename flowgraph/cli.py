"""The ``flowgraph`` command line: run, draw and inspect graphs, and manage dead letters.

Each command is one ``_cmd_*`` function taking the parsed arguments and
returning an exit code, registered in :data:`COMMANDS` with the function that
adds its options; a group of commands (``dlq``) is a :class:`Command` holding
others. Adding a command means adding one entry. The CLI itself uses only the
standard library (argparse); ``--progress`` needs rich.

Exit codes:

* ``0``: the command succeeded; also a run stopped gracefully by SIGINT/SIGTERM.
* ``1``: the graph was loaded but its run failed (a node raised, or the graph
  does not validate), a store failed, or replayed dead letters failed again;
  the error message is printed without a traceback unless ``--traceback``.
* ``2``: usage error: bad arguments, a target that cannot be loaded as a graph
  (not found, failed on import or in its factory, missing attribute, not a
  graph), a bad store URL or a missing store, an unknown dead-letter id.
* ``130``: interrupted: Ctrl-C outside a run, or a stop signal whose run had to
  cancel items in flight (a second signal, or the grace period ran out).
"""

from __future__ import annotations

import argparse
import functools
import importlib
import importlib.util
import inspect
import json
import logging
import os
import sys
import textwrap
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

import flowgraph as fg
from flowgraph import _runner
from flowgraph._core import describe_error, describe_item
from flowgraph._progress import require_rich
from flowgraph._store import _parse_url

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it

BACKENDS = ("asyncio", "trio")

TARGET_HELP = (
    "the graph: 'package.module:attr' or 'path/to/file.py:attr', where attr "
    "(possibly dotted) is a flowgraph.Graph or a zero-argument function returning one"
)
STORE_HELP = "state store URL: sqlite:///relative.db, sqlite:////absolute.db or postgresql://..."


class UsageError(Exception):
    """The command line names something that cannot be used; exits with code 2."""


# -- run, show, demo --------------------------------------------------------------------


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", metavar="TARGET", help=TARGET_HELP)
    parser.add_argument(
        "--progress",
        action="store_true",
        help="show a live table of per-node progress on stderr (needs rich); when stderr "
        "is not a terminal, print one line per node every few seconds instead",
    )
    parser.add_argument(
        "--log-interval",
        metavar="S",
        type=_seconds,
        help="log one line of statistics per node every S seconds on stderr",
    )
    parser.add_argument(
        "--grace",
        metavar="S",
        type=_seconds_or_zero,
        default=_runner.DEFAULT_GRACE,
        help="on SIGINT or SIGTERM the sources stop and items in flight get S seconds to "
        "finish before they are cancelled; a second signal cancels at once "
        f"(default: {_runner.DEFAULT_GRACE:g})",
    )
    parser.add_argument(
        "--dead-letters",
        metavar="URL",
        help="state store for the items that nodes with on_error='dead_letter' give up on "
        "(sqlite:///path.db or postgresql://...); list and replay them with 'flowgraph dlq'",
    )


def _cmd_run(args: argparse.Namespace) -> int:
    graph = load_graph(args.target)
    options: dict[str, Any] = {"log_interval": args.log_interval}
    if args.dead_letters is not None:
        options["dead_letters"] = fg.DeadLetters(_store_url(args.dead_letters, "--dead-letters"))
    else:
        dead = [n for n, node in graph.nodes.items() if node.on_error == "dead_letter"]
        if dead:
            raise UsageError(
                f"graph {graph.name!r} dead-letters failed items of {', '.join(map(repr, dead))}: "
                "pass --dead-letters URL"
            )
    if args.progress:
        try:
            require_rich()
        except ImportError as exc:
            raise UsageError(str(exc)) from None
    _err(f"running graph {graph.name!r} ({len(graph.nodes)} nodes) on {args.backend}")
    outcome = _runner.execute(
        graph,
        backend=args.backend,
        progress=args.progress,
        handle_signals=True,
        grace=args.grace,
        **options,
    )
    print(format_summary(outcome.result), flush=True)
    if outcome.cancelled:
        _err("interrupted")
        return EXIT_INTERRUPTED
    if outcome.signal is not None:
        _err(f"stopped on {outcome.signal.name}: every item in flight finished")
    return EXIT_OK


def _add_show_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", metavar="TARGET", help=TARGET_HELP)
    parser.add_argument(
        "--format",
        choices=("mermaid", "dot"),
        default="mermaid",
        help="mermaid (paste into Markdown) or dot (pipe into Graphviz: | dot -Tsvg); "
        "default: mermaid",
    )


def _cmd_show(args: argparse.Namespace) -> int:
    graph = load_graph(args.target)
    drawing = graph.to_dot() if args.format == "dot" else graph.to_mermaid()
    print(drawing, end="" if drawing.endswith("\n") else "\n")
    return EXIT_OK


def _add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        metavar="PATH",
        type=Path,
        default=Path("flowgraph-demo.db"),
        help="SQLite file to write the records to (default: ./flowgraph-demo.db)",
    )
    parser.add_argument(
        "--items",
        metavar="N",
        type=_positive_int,
        default=10_000,
        help="how many records to ingest (default: 10000)",
    )


def _cmd_demo(args: argparse.Namespace) -> int:
    from flowgraph import _demo

    db_path: Path = args.db
    if not db_path.parent.is_dir():
        raise UsageError(f"directory of --db {str(db_path)!r} does not exist")
    _err(f"demo: ingesting {args.items} records into {db_path} on {args.backend}")
    report = _demo.main(db_path, items=args.items, backend=args.backend)
    print(format_summary(report.result))
    print(
        f"wrote {report.records} records in {report.result.stats['store'].items_in} pages to "
        f"{report.db_path} ({report.rows_in_db} rows in the table)\n"
        "verified: every record is in the table exactly once"
    )
    return EXIT_OK


# -- dlq --------------------------------------------------------------------------------


def _add_store_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", metavar="URL", required=True, help=STORE_HELP)


def _add_filter_arguments(parser: argparse.ArgumentParser, *, graph: bool = True) -> None:
    _add_store_argument(parser)
    if graph:
        parser.add_argument("--graph", metavar="G", help="only dead letters of graph G")
    parser.add_argument("--node", metavar="N", help="only dead letters of node N")
    parser.add_argument("--run", metavar="R", dest="run_id", help="only those of run id R")
    parser.add_argument(
        "--error-type",
        metavar="T",
        help="only those whose error has type T, as listed (ValueError, httpx.ReadTimeout)",
    )


def _add_dlq_list_arguments(parser: argparse.ArgumentParser) -> None:
    _add_filter_arguments(parser)
    parser.add_argument("--limit", metavar="N", type=_positive_int, help="at most N, oldest first")
    parser.add_argument("--json", action="store_true", help="print a JSON array instead")


def _cmd_dlq_list(args: argparse.Namespace) -> int:
    store = _store_url(args.store, "--store", must_exist=True)
    letters = _with_backend(args, fg.DeadLetters(store).list, **_filters(args), limit=args.limit)
    if args.json:
        print(json.dumps([_as_json(letter) for letter in letters], indent=2))
        return EXIT_OK
    if not letters:
        print("no dead letters")
        return EXIT_OK
    header = ("id", "failed at", "graph", "node", "attempts", "error", "item")
    rows = [
        (
            str(d.id),
            _when(d.time),
            d.graph,
            d.node,
            str(d.attempts),
            _shorten(f"{d.error_type}: {d.message}" if d.message else d.error_type, 50),
            _shorten(describe_item(d.item), 40),
        )
        for d in letters
    ]
    print(format_table(header, rows, right={0, 4}))
    print(f"{len(letters)} dead letter{'s' if len(letters) != 1 else ''}")
    return EXIT_OK


def _add_dlq_show_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", metavar="ID", type=_positive_int, help="the id, as listed")
    _add_store_argument(parser)
    parser.add_argument("--json", action="store_true", help="print a JSON object instead")


def _cmd_dlq_show(args: argparse.Namespace) -> int:
    store = _store_url(args.store, "--store", must_exist=True)

    async def get() -> fg.DeadLetter | None:
        async with fg.open_store(store) as opened:
            return await opened.get_dead_letter(args.id)

    letter = _with_backend(args, get)
    if letter is None:
        raise UsageError(f"no dead letter {args.id} in {args.store}")
    if args.json:
        print(json.dumps(_as_json(letter, traceback=True), indent=2))
        return EXIT_OK
    fields = {
        "graph": letter.graph,
        "node": letter.node,
        "run": letter.run_id,
        "failed at": _when(letter.time),
        "attempts": str(letter.attempts),
        "error": f"{letter.error_type}: {letter.message}" if letter.message else letter.error_type,
        "item": repr(letter.item),
    }
    print(f"dead letter {letter.id}")
    print("\n".join(f"  {key + ':':<11}{value}" for key, value in fields.items()))
    if letter.traceback:
        print(letter.traceback.rstrip())
    return EXIT_OK


def _add_dlq_replay_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", metavar="TARGET", help=TARGET_HELP)
    _add_filter_arguments(parser, graph=False)
    parser.add_argument("--limit", metavar="N", type=_positive_int, help="at most N, oldest first")


def _cmd_dlq_replay(args: argparse.Namespace) -> int:
    graph = load_graph(args.target)
    store = _store_url(args.store, "--store", must_exist=True)
    replay = fg.DeadLetters(store).replay
    result = _with_backend(args, replay, graph, **_filters(args), limit=args.limit)
    print(
        f"replayed {result.replayed} dead letter{'s' if result.replayed != 1 else ''} of graph "
        f"{graph.name!r}: {len(result.succeeded)} succeeded, {len(result.failed)} failed"
    )
    if result.failed:
        _err(
            f"error: failed again, kept in the store: {', '.join(map(str, result.failed))} "
            "(see 'flowgraph dlq show ID')"
        )
        return EXIT_FAILED
    return EXIT_OK


def _add_dlq_purge_arguments(parser: argparse.ArgumentParser) -> None:
    _add_filter_arguments(parser)
    parser.add_argument(
        "--yes", action="store_true", help="confirm: needed to purge without any filter"
    )


def _cmd_dlq_purge(args: argparse.Namespace) -> int:
    filters = _filters(args)
    if not any(filters.values()) and not args.yes:
        raise UsageError(
            "refusing to purge every dead letter without --yes; "
            "narrow it with --graph, --node, --run or --error-type, or pass --yes"
        )
    store = _store_url(args.store, "--store", must_exist=True)
    purged = _with_backend(args, fg.DeadLetters(store).purge, **filters)
    print(f"purged {purged} dead letter{'s' if purged != 1 else ''}")
    return EXIT_OK


def _filters(args: argparse.Namespace) -> dict[str, str | None]:
    """The dead-letter filters the command has (replay has no --graph: TARGET names it)."""
    keys = ("graph", "node", "run_id", "error_type")
    return {key: getattr(args, key) for key in keys if hasattr(args, key)}


def _with_backend(args: argparse.Namespace, fn: Callable[..., Any], *a: Any, **kw: Any) -> Any:
    return anyio.run(functools.partial(fn, *a, **kw), backend=args.backend)


def _store_url(url: str, option: str, *, must_exist: bool = False) -> str:
    """Check *url* before anything runs, so that a typo is a usage error, not a traceback."""
    try:
        kind, target = _parse_url(url)
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from None
    if kind == "postgres" and importlib.util.find_spec("psycopg") is None:
        raise UsageError(
            "PostgreSQL state stores need psycopg 3: pip install 'flowgraph[postgres]'"
        )
    if kind == "sqlite":
        path = Path(target)
        if must_exist and not path.is_file():
            raise UsageError(f"{option}: no such SQLite file: {target!r}")
        if not path.parent.is_dir():
            raise UsageError(f"{option}: directory of {target!r} does not exist")
    return url


def _as_json(letter: fg.DeadLetter, *, traceback: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": letter.id,
        "graph": letter.graph,
        "node": letter.node,
        "run_id": letter.run_id,
        "time": letter.time,
        "attempts": letter.attempts,
        "error_type": letter.error_type,
        "message": letter.message,
        # Pickled items may be any object: give their repr, which JSON can always hold.
        "item": letter.item if letter.serializer == "json" else repr(letter.item),
        "serializer": letter.serializer,
    }
    if traceback:
        data["traceback"] = letter.traceback
    return data


# -- the command table ------------------------------------------------------------------


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
        _add_run_arguments,
        _cmd_run,
        description="SIGINT (Ctrl-C) or SIGTERM stops the run gracefully: the sources stop, "
        "items in flight drain within --grace seconds, then what is left is cancelled; a "
        "second signal cancels at once. A graceful stop exits 0, one that had to cancel 130."
        "\n\nexamples:\n  flowgraph run pipelines.ingest:graph --progress\n"
        "  flowgraph run jobs/daily.py:make_graph --backend trio --grace 60 "
        "--dead-letters sqlite:///state.db",
    ),
    "show": Command(
        "draw a graph as Mermaid or Graphviz DOT text",
        _add_show_arguments,
        _cmd_show,
        description="examples:\n  flowgraph show pipelines.ingest:graph > graph.mmd\n"
        "  flowgraph show pipelines.ingest:graph --format dot | dot -Tsvg > graph.svg",
    ),
    "dlq": Command(
        "list, show, replay and purge dead letters in a state store",
        description="Dead letters are the items that nodes declared with "
        "on_error='dead_letter' gave up on, kept with their error in a state store "
        "(flowgraph run --dead-letters URL). Fix the cause, then replay them.",
        commands={
            "list": Command(
                "list dead letters, oldest first",
                _add_dlq_list_arguments,
                _cmd_dlq_list,
                description="example:\n  flowgraph dlq list --store sqlite:///state.db "
                "--node fetch --error-type httpx.ReadTimeout",
            ),
            "show": Command(
                "show one dead letter: its item, error and traceback",
                _add_dlq_show_arguments,
                _cmd_dlq_show,
                description="example:\n  flowgraph dlq show 42 --store sqlite:///state.db",
            ),
            "replay": Command(
                "feed dead letters back into their node; remove each that succeeds",
                _add_dlq_replay_arguments,
                _cmd_dlq_replay,
                description="Each item runs through its node and everything downstream, using "
                "the functions of TARGET as they are now. Those that fail again stay in the "
                "store, and the command exits 1.\n\nexample:\n"
                "  flowgraph dlq replay pipelines.ingest:graph --store sqlite:///state.db",
            ),
            "purge": Command(
                "delete dead letters for good",
                _add_dlq_purge_arguments,
                _cmd_dlq_purge,
                description="Deletes the dead letters matching every filter given; deleting "
                "all of them needs --yes.\n\nexample:\n"
                "  flowgraph dlq purge --store sqlite:///state.db --graph ingest --node parse",
            ),
        },
    ),
    "demo": Command(
        "run a self-contained ingestion pipeline into SQLite",
        _add_demo_arguments,
        _cmd_demo,
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
        verbose = getattr(args, "log_interval", None) is not None
        with _log_to_stderr(logging.INFO if verbose else logging.WARNING):
            return handler(args)
    except UsageError as exc:
        if args.traceback and exc.__cause__ is not None:
            traceback.print_exception(exc.__cause__)
        _err(f"error: {exc}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        _err("interrupted")
        return EXIT_INTERRUPTED
    except BaseExceptionGroup as group:
        if group.subgroup(KeyboardInterrupt) is not None:
            _err("interrupted")
            return EXIT_INTERRUPTED
        errors = group.subgroup(fg.FlowgraphError)
        if errors is None or group.split(fg.FlowgraphError)[1] is not None:
            raise
        _report_failure(group, args.traceback, [str(e) for e in _leaves(errors)])
        return EXIT_FAILED
    except fg.FlowgraphError as exc:
        _report_failure(exc, args.traceback, [str(exc)])
        return EXIT_FAILED


class _StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is now, so that the progress display can redirect it."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            print(f"flowgraph: {self.format(record)}", file=sys.stderr, flush=True)
        except Exception:
            self.handleError(record)


@contextmanager
def _log_to_stderr(level: int) -> Iterator[None]:
    """Show the ``flowgraph`` logger's records from *level* up on stderr, for one command."""
    logger = logging.getLogger("flowgraph")
    handler = _StderrHandler(level)
    saved = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


def _report_failure(error: BaseException, show_traceback: bool, messages: list[str]) -> None:
    if show_traceback:
        traceback.print_exception(error)
    for message in messages:
        _err(f"error: {message}")


def _leaves(group: BaseExceptionGroup[Any]) -> list[BaseException]:
    leaves: list[BaseException] = []
    for exc in group.exceptions:
        leaves.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return leaves


# -- loading targets ------------------------------------------------------------------


def load_graph(target: str) -> fg.Graph:
    """Import *target* (``module:attr`` or ``file.py:attr``) and return the graph it names.

    ``attr`` may be dotted, and may name a zero-argument callable that returns
    the graph. Like ``python -m``, a module target is imported with the current
    directory on ``sys.path``; like ``python file.py``, a file target is loaded
    with its own directory on ``sys.path``.

    Raises:
        UsageError: naming the problem: malformed target, module or file not
            found, import failure, missing attribute, or not a graph.
    """
    where, sep, attr = target.rpartition(":")
    if not sep or not where or not attr:
        raise UsageError(
            f"target {target!r} must be 'package.module:attr' or 'path/to/file.py:attr'"
        )
    module = _load_file(where) if _is_path(where) else _load_module(where)
    obj: Any = module
    walked: list[str] = []
    for part in attr.split("."):
        if not part.isidentifier() or not hasattr(obj, part):
            owner = ":".join([where, ".".join(walked)]) if walked else where
            raise UsageError(f"{owner!r} has no attribute {part!r}")
        obj = getattr(obj, part)
        walked.append(part)
    if isinstance(obj, fg.Graph):
        return obj
    if not callable(obj):
        raise UsageError(f"{target!r} is not a flowgraph.Graph (got {type(obj).__name__})")
    try:
        inspect.signature(obj).bind()
    except TypeError:
        raise UsageError(
            f"{target!r} must be a flowgraph.Graph or a function that takes no arguments "
            "and returns one"
        ) from None
    except ValueError:  # no signature (some builtins): let the call decide
        pass
    try:
        built = obj()
    except Exception as exc:
        raise UsageError(f"{target!r} raised {describe_error(exc)}") from exc
    if not isinstance(built, fg.Graph):
        raise UsageError(f"{target!r} returned {type(built).__name__}, not a flowgraph.Graph")
    return built


def _is_path(where: str) -> bool:
    return where.endswith(".py") or os.sep in where or "/" in where


def _load_module(name: str) -> Any:
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        # Only a missing target module is a usage error; a missing dependency of it
        # is an import failure, reported below with its own name.
        if exc.name is not None and (name == exc.name or name.startswith(f"{exc.name}.")):
            raise UsageError(f"cannot import {name!r}: no module named {exc.name!r}") from None
        raise UsageError(f"cannot import {name!r}: {describe_error(exc)}") from exc
    except Exception as exc:
        raise UsageError(f"cannot import {name!r}: {describe_error(exc)}") from exc


def _load_file(where: str) -> Any:
    path = Path(where)
    if not path.is_file():
        raise UsageError(f"no such file: {where!r}")
    # Never "__main__": loading must not run the file's `if __name__ == "__main__":` block.
    module_name = path.stem
    if not module_name.isidentifier() or module_name in sys.modules:
        module_name = "__flowgraph_target__"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"cannot import {where!r}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    directory = str(path.resolve().parent)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    # Registered before running, so that dataclasses, pickling and the like find it.
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[module_name]
        raise UsageError(f"cannot import {where!r}: {describe_error(exc)}") from exc
    return module


# -- output ---------------------------------------------------------------------------


def format_summary(result: fg.RunResult) -> str:
    """Render a run's per-node statistics as a small table, one line per node."""
    header = ("node", "kind", "in", "out", "errors", "elapsed")
    rows = [
        (
            s.name,
            s.kind,
            "-" if s.kind == "source" else str(s.items_in),
            str(s.items_out),
            str(s.errors),
            f"{s.elapsed:.2f}s",
        )
        for s in result.stats.values()
    ]
    how = "stopped after" if result.stopped else "finished in"
    title = f"graph {result.graph!r} {how} {result.elapsed:.2f}s (run {result.run_id})"
    return f"{title}\n{format_table(header, rows, right=set(range(2, len(header))))}"


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


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp).isoformat(sep=" ", timespec="seconds")


def _shorten(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer (got {text!r})") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer (got {text!r})")
    return value


def _seconds(text: str, *, zero: bool = False) -> float:
    expected = "a number of seconds >= 0" if zero else "a number of seconds > 0"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected} (got {text!r})") from None
    if not (value >= 0 if zero else value > 0) or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected {expected} (got {text!r})")
    return value


def _seconds_or_zero(text: str) -> float:
    return _seconds(text, zero=True)


def _err(message: str) -> None:
    print(f"flowgraph: {message}", file=sys.stderr, flush=True)
