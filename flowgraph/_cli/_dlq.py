"""The ``flowgraph dlq`` commands: list, show, replay and purge dead letters in a state store.

Each command is an ``add_*_arguments`` function that declares its options and
a ``cmd_*`` function that takes the parsed arguments and returns an exit code;
``flowgraph._cli`` registers them. Every command works on an existing store
(``--store URL``) and never creates one, nor a table in it: ``list`` and
``show`` open it read-only, ``replay`` and ``purge`` without ``create``. A
SQLite file that does not exist, an empty file or another application's
database is a usage error (exit 2), so a typo never creates an empty store.
A corrupt dead letter is reported on its own line; ``list`` shows the others.
"""

from __future__ import annotations

import json
from contextlib import AsyncExitStack
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
    from collections.abc import Awaitable, Callable


def add_list_arguments(parser: argparse.ArgumentParser) -> None:
    _add_filter_arguments(parser, limit=True)
    parser.add_argument("--json", action="store_true", help="print a JSON array instead")


def cmd_list(args: argparse.Namespace) -> int:
    errors: list[fg.StoreError] = []

    async def read(dead_letters: fg.DeadLetters) -> list[fg.DeadLetter]:
        return await dead_letters.store.list_dead_letters(
            **_filters(args), limit=args.limit, errors=errors
        )

    letters: list[fg.DeadLetter] = _call(args, read)
    for error in errors:
        err(f"error: {error}")
    status = EXIT_FAILED if errors else EXIT_OK
    if args.json:
        print(json.dumps([_as_json(letter) for letter in letters], indent=2))
        return status
    if not letters:
        print("no readable dead letters" if errors else "no dead letters")
        return status
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
    unreadable = f", {len(errors)} unreadable (see above)" if errors else ""
    print(plural(len(letters), "dead letter") + unreadable)
    return status


def add_show_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", metavar="ID", type=positive_int, help="the id, as listed")
    _add_store_argument(parser)
    parser.add_argument("--json", action="store_true", help="print a JSON object instead")


def cmd_show(args: argparse.Namespace) -> int:
    async def get(dead_letters: fg.DeadLetters) -> fg.DeadLetter | None:
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
    graph = load_graph(args.target, validate=False)  # each replay runs a fed copy, checked then

    async def replay(dead_letters: fg.DeadLetters) -> fg.ReplayResult:
        return await dead_letters.replay(graph, **_filters(args), limit=args.limit)

    result = _call(args, replay, write=True)
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

    async def purge(dead_letters: fg.DeadLetters) -> int:
        return await dead_letters.purge(**filters)

    purged = _call(args, purge, write=True)
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


def _call(
    args: argparse.Namespace,
    fn: Callable[[fg.DeadLetters], Awaitable[Any]],
    *,
    write: bool = False,
) -> Any:
    """Call ``fn(dead_letters)`` on the existing store ``--store``, in a new event loop.

    The store is opened read-only unless *write*, and never created: a store
    that cannot be opened, or is not a flowgraph store, is a usage error.
    """
    url = check_store_url(args.store, "--store", must_exist=True)

    async def main() -> Any:
        async with AsyncExitStack() as stack:
            opening = fg.open_store(url, create=False, read_only=not write)
            try:
                store = await stack.enter_async_context(opening)
            except fg.StoreError as exc:
                raise UsageError(f"--store: {exc}") from exc
            return await fn(fg.DeadLetters(store))

    return anyio.run(main, backend=args.backend)


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
