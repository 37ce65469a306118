"""The ``flowgraph dlq`` commands: list, show, replay and purge dead letters in a state store.

Each command is an ``add_*_arguments`` function that declares its options and
a ``cmd_*`` function that takes the parsed arguments and returns an exit code;
``flowgraph._cli`` registers them. Every command reads an existing store
(``--store URL``): a SQLite file that does not exist is a usage error, so a
typo never creates an empty store.
"""

from __future__ import annotations

import functools
import json
from typing import TYPE_CHECKING, Any

import anyio

import flowgraph as fg

from .._core import describe_item
from ._args import (
    EXIT_FAILED,
    EXIT_OK,
    STORE_HELP,
    UsageError,
    add_target_argument,
    check_store_url,
    positive_int,
)
from ._output import err, format_table, plural, shorten, when
from ._targets import load_graph

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable


def add_list_arguments(parser: argparse.ArgumentParser) -> None:
    _add_filter_arguments(parser, limit=True)
    parser.add_argument("--json", action="store_true", help="print a JSON array instead")


def cmd_list(args: argparse.Namespace) -> int:
    letters = _call(args, _dead_letters(args).list, **_filters(args), limit=args.limit)
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
            when(d.time),
            d.graph,
            d.node,
            str(d.attempts),
            shorten(_error(d), 50),
            shorten(describe_item(d.item), 40),
        )
        for d in letters
    ]
    print(format_table(header, rows, right={0, 4}))
    print(plural(len(letters), "dead letter"))
    return EXIT_OK


def add_show_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", metavar="ID", type=positive_int, help="the id, as listed")
    _add_store_argument(parser)
    parser.add_argument("--json", action="store_true", help="print a JSON object instead")


def cmd_show(args: argparse.Namespace) -> int:
    dead_letters = _dead_letters(args)

    async def get() -> fg.DeadLetter | None:
        async with dead_letters:
            return await dead_letters.store.get_dead_letter(args.id)

    letter = _call(args, get)
    if letter is None:
        raise UsageError(f"no dead letter {args.id} in {args.store}")
    if args.json:
        print(json.dumps(_as_json(letter, traceback=True), indent=2))
        return EXIT_OK
    fields = {
        "graph": letter.graph,
        "node": letter.node,
        "run": letter.run_id,
        "failed at": when(letter.time),
        "attempts": str(letter.attempts),
        "error": _error(letter),
        "item": repr(letter.item),
    }
    print(f"dead letter {letter.id}")
    print("\n".join(f"  {key + ':':<11}{value}" for key, value in fields.items()))
    if letter.traceback:
        print(letter.traceback.rstrip())
    return EXIT_OK


def add_replay_arguments(parser: argparse.ArgumentParser) -> None:
    add_target_argument(parser)
    _add_filter_arguments(parser, graph=False, limit=True)


def cmd_replay(args: argparse.Namespace) -> int:
    graph = load_graph(args.target)
    replay = _dead_letters(args).replay
    result = _call(args, replay, graph, **_filters(args), limit=args.limit)
    print(
        f"replayed {plural(result.replayed, 'dead letter')} of graph {graph.name!r}: "
        f"{len(result.succeeded)} succeeded, {len(result.failed)} failed"
    )
    if result.failed:
        err(
            f"error: failed again, kept in the store: {', '.join(map(str, result.failed))} "
            "(see 'flowgraph dlq show ID')"
        )
        return EXIT_FAILED
    return EXIT_OK


def add_purge_arguments(parser: argparse.ArgumentParser) -> None:
    _add_filter_arguments(parser)
    parser.add_argument(
        "--yes", action="store_true", help="confirm: needed to purge without any filter"
    )


def cmd_purge(args: argparse.Namespace) -> int:
    filters = _filters(args)
    if not any(filters.values()) and not args.yes:
        raise UsageError(
            "refusing to purge every dead letter without --yes; "
            "narrow it with --graph, --node, --run or --error-type, or pass --yes"
        )
    purged = _call(args, _dead_letters(args).purge, **filters)
    print(f"purged {plural(purged, 'dead letter')}")
    return EXIT_OK


def _add_store_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", metavar="URL", required=True, help=STORE_HELP)


def _add_filter_arguments(
    parser: argparse.ArgumentParser, *, graph: bool = True, limit: bool = False
) -> None:
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
    if limit:
        parser.add_argument(
            "--limit", metavar="N", type=positive_int, help="at most N, oldest first"
        )


def _filters(args: argparse.Namespace) -> dict[str, str | None]:
    """The dead-letter filters the command has (replay has no --graph: TARGET names it)."""
    keys = ("graph", "node", "run_id", "error_type")
    return {key: getattr(args, key) for key in keys if hasattr(args, key)}


def _dead_letters(args: argparse.Namespace) -> fg.DeadLetters:
    """The dead letters in the existing store named by ``--store``."""
    return fg.DeadLetters(check_store_url(args.store, "--store", must_exist=True))


def _call(args: argparse.Namespace, fn: Callable[..., Any], *a: Any, **kw: Any) -> Any:
    """Call the async *fn* in a new event loop of the command's ``--backend``."""
    return anyio.run(functools.partial(fn, *a, **kw), backend=args.backend)


def _error(letter: fg.DeadLetter) -> str:
    return f"{letter.error_type}: {letter.message}" if letter.message else letter.error_type


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
