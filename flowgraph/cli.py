"""The ``flowgraph`` command line: run a graph from ``module:attr`` or a file, or run the demo.

Each command is one ``_cmd_*`` function taking the parsed arguments and
returning an exit code, registered in :data:`COMMANDS` with the function that
adds its options; adding a command means adding one entry. The core CLI uses
only the standard library (argparse), so it works without any extra installed.

Exit codes:

* ``0``: the command succeeded.
* ``1``: the graph was loaded but its run failed (a node raised, or the graph
  does not validate); the error message is printed without a traceback unless
  ``--traceback`` is given.
* ``2``: usage error: bad arguments, or a target that cannot be loaded as a graph
  (not found, failed on import or in its factory, missing attribute, not a graph).
* ``130``: interrupted by Ctrl-C (SIGINT).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import os
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import flowgraph as fg
from flowgraph._core import describe_error

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it

BACKENDS = ("asyncio", "trio")


class UsageError(Exception):
    """The command line names something that cannot be used; exits with code 2."""


# -- commands -------------------------------------------------------------------------


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "target",
        metavar="TARGET",
        help="the graph to run: 'package.module:attr' or 'path/to/file.py:attr', where "
        "attr (possibly dotted) is a flowgraph.Graph or a zero-argument function returning one",
    )


def _cmd_run(args: argparse.Namespace) -> int:
    graph = load_graph(args.target)
    _err(f"running graph {graph.name!r} ({len(graph.nodes)} nodes) on {args.backend}")
    result = fg.run(graph, backend=args.backend)
    print(format_summary(result))
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


@dataclass(frozen=True, slots=True)
class Command:
    """One subcommand: how to declare its options and the function that runs it."""

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: dict[str, Command] = {
    "run": Command("run a graph and print per-node statistics", _add_run_arguments, _cmd_run),
    "demo": Command(
        "run a self-contained ingestion pipeline into SQLite", _add_demo_arguments, _cmd_demo
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
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, command in COMMANDS.items():
        sub = subparsers.add_parser(
            name, help=command.help, description=command.help, parents=[common]
        )
        command.add_arguments(sub)
        sub.set_defaults(handler=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with *argv* (default: ``sys.argv[1:]``); return the exit code."""
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        if getattr(args, "backend", None) == "trio" and importlib.util.find_spec("trio") is None:
            raise UsageError("--backend trio needs trio: pip install 'flowgraph[trio]'")
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
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(row: tuple[str, ...]) -> str:
        left = [cell.ljust(width) for cell, width in zip(row[:2], widths[:2], strict=True)]
        right = [cell.rjust(width) for cell, width in zip(row[2:], widths[2:], strict=True)]
        return "  ".join([*left, *right]).rstrip()

    title = f"graph {result.graph!r} finished in {result.elapsed:.2f}s"
    return "\n".join([title, line(header), *map(line, rows)])


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer (got {text!r})") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer (got {text!r})")
    return value


def _err(message: str) -> None:
    print(f"flowgraph: {message}", file=sys.stderr, flush=True)
