"""The commands that run or draw a graph: ``flowgraph run``, ``show`` and ``demo``.

Each command is an ``add_*_arguments`` function that declares its options and
a ``cmd_*`` function that takes the parsed arguments and returns an exit code;
``flowgraph._cli`` registers them. Everything a command was given is checked
before the graph starts (see :mod:`flowgraph._cli._args`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import flowgraph as fg

from .. import _runner
from .._runner import require_rich
from ._args import (
    EXIT_OK,
    UsageError,
    add_target_argument,
    check_store_opens,
    check_store_url,
    positive_int,
    seconds,
    seconds_or_zero,
)
from ._output import dead_letter_hint, err, format_summary, interrupted
from ._targets import load_graph

if TYPE_CHECKING:
    import argparse


# -- run ------------------------------------------------------------------------------


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    add_target_argument(parser)
    parser.add_argument(
        "--progress",
        action="store_true",
        help="show a live table of per-node progress on stderr (needs rich); when stderr "
        "is not a terminal, print one line per node every few seconds instead",
    )
    parser.add_argument(
        "--log-interval",
        metavar="S",
        type=seconds,
        help="log one line of statistics per node every S seconds on stderr",
    )
    parser.add_argument(
        "--grace",
        metavar="S",
        type=seconds_or_zero,
        default=_runner.DEFAULT_GRACE,
        help="on SIGINT or SIGTERM the sources stop and items in flight get S seconds to "
        "finish before they are cancelled; a second signal cancels at once "
        f"(default: {_runner.DEFAULT_GRACE:g})",
    )
    state = parser.add_argument_group("state stores")
    state.add_argument(
        "--state",
        metavar="URL",
        help="state store (sqlite:///path.db, a file path or postgresql://...) for both the "
        "positions of checkpointed sources and the dead letters; each checkpoint commit is "
        "logged on stderr",
    )
    state.add_argument(
        "--dead-letters",
        metavar="URL",
        help="state store for the items that nodes with on_error='dead_letter' give up on, "
        "in place of --state's; list and replay them with 'flowgraph dlq'",
    )
    state.add_argument(
        "--replay-dead-letters",
        action="store_true",
        help="feed the dead letters this graph left in the store (--state's or "
        "--dead-letters') back into their nodes, beside the new input; each is removed once "
        "its item is fully processed, and one that fails again is stored anew",
    )
    state.add_argument(
        "--checkpoint-every",
        metavar="N",
        type=positive_int,
        help="with --state, commit the checkpoints after every N items fully processed "
        f"(default: {_runner.DEFAULT_CHECKPOINT_EVERY})",
    )
    state.add_argument(
        "--checkpoint-interval",
        metavar="S",
        type=seconds,
        help="with --state, commit the checkpoints at least every S seconds while items "
        f"are processed (default: {_runner.DEFAULT_CHECKPOINT_INTERVAL:g})",
    )


def cmd_run(args: argparse.Namespace) -> int:
    try:
        # Before the target is imported, which may take a while: a stop signal then ends
        # the command at once (exit 0), since nothing has started.
        with _runner.catch_stop_signals():
            graph = load_graph(args.target)
    except _runner.StopBeforeStart as stop:
        err(f"stopped on {stop.signal.name} before the run started")
        return EXIT_OK
    with _runner.hold_stop_signals() as received:  # handed to the run, which stops at once
        options = _run_options(args, graph)
        err(f"running graph {graph.name!r} ({len(graph.nodes)} nodes) on {args.backend}")
        outcome = _runner.execute(
            graph,
            backend=args.backend,
            progress=args.progress,
            handle_signals=True,
            grace=args.grace,
            log_interval=args.log_interval,
            received=received,
            **options,
        )
    print(format_summary(outcome.result), flush=True)
    store = args.dead_letters or args.state
    hint = None if store is None else dead_letter_hint(outcome.result, store)
    if hint is not None:
        err(hint)
    if outcome.cancelled:
        return interrupted()
    if outcome.signal is not None:
        err(f"stopped on {outcome.signal.name}: every item in flight finished")
    return EXIT_OK


def _run_options(args: argparse.Namespace, graph: fg.Graph) -> dict[str, Any]:
    """Check what ``run`` was given against *graph*; return the ``execute`` options it makes.

    Every store is opened once here, so that one that cannot be is a usage error
    before the graph starts.
    """
    options = _state_options(args)
    if args.state is None and args.dead_letters is None:
        dead = [n for n, node in graph.nodes.items() if node.on_error == "dead_letter"]
        if dead:
            raise UsageError(
                f"graph {graph.name!r} dead-letters failed items of {', '.join(map(repr, dead))}: "
                "pass --state URL or --dead-letters URL"
            )
    if args.progress:
        try:
            require_rich()
        except ImportError as exc:
            raise UsageError(str(exc)) from None
    if args.state is not None:
        check_store_opens(args.state, "--state", backend=args.backend, graph=graph.name)
    if args.dead_letters is not None:
        check_store_opens(args.dead_letters, "--dead-letters", backend=args.backend)
    return options


def _state_options(args: argparse.Namespace) -> dict[str, Any]:
    """The state stores and checkpoint settings given to ``run``, as ``execute`` options."""
    options: dict[str, Any] = {}
    if args.state is not None:
        options["state"] = check_store_url(args.state, "--state")
    if args.dead_letters is not None:
        url = check_store_url(args.dead_letters, "--dead-letters")
        options["dead_letters"] = fg.DeadLetters(url)
    if args.replay_dead_letters:
        if args.state is None and args.dead_letters is None:
            raise UsageError(
                "--replay-dead-letters needs the store that holds them: pass --state URL "
                "or --dead-letters URL"
            )
        options["replay_dead_letters"] = True
    settings = {"every": args.checkpoint_every, "interval": args.checkpoint_interval}
    for name, value in settings.items():
        if value is not None:
            if args.state is None:
                raise UsageError(f"--checkpoint-{name} needs --state URL to commit checkpoints to")
            options[f"checkpoint_{name}"] = value
    return options


# -- show -----------------------------------------------------------------------------


def add_show_arguments(parser: argparse.ArgumentParser) -> None:
    add_target_argument(parser)
    parser.add_argument(
        "--format",
        choices=("mermaid", "dot"),
        default="mermaid",
        help="mermaid (paste into Markdown) or dot (pipe into Graphviz: | dot -Tsvg); "
        "default: mermaid",
    )


def cmd_show(args: argparse.Namespace) -> int:
    graph = load_graph(args.target, validate=False)  # drawing shows what is miswired
    drawing = graph.to_dot() if args.format == "dot" else graph.to_mermaid()
    print(drawing, end="" if drawing.endswith("\n") else "\n")
    return EXIT_OK


# -- demo -----------------------------------------------------------------------------


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
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
        type=positive_int,
        default=10_000,
        help="how many records to ingest (default: 10000)",
    )


def cmd_demo(args: argparse.Namespace) -> int:
    try:
        from . import _demo
    except ModuleNotFoundError as exc:
        raise UsageError(
            f"flowgraph demo needs {exc.name}: pip install 'flowgraph[demo]'"
        ) from None

    db_path: Path = args.db
    if not db_path.parent.is_dir():
        raise UsageError(f"directory of --db {str(db_path)!r} does not exist")
    err(f"demo: ingesting {args.items} records into {db_path} on {args.backend}")
    report = _demo.main(db_path, items=args.items, backend=args.backend)
    print(format_summary(report.result))
    print(report.describe())
    print(
        f"wrote {report.records} records in {report.result.statistics['store'].items_in} pages to "
        f"{report.db_path} ({report.rows_in_db} rows in the table)\n"
        "verified: every record is in the table exactly once"
    )
    return EXIT_OK
