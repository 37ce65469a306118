"""What the ``flowgraph`` commands share about their arguments: checks, help and exit codes.

A command checks everything it was given before it does any work, so that a
typo is one ``flowgraph: error: ...`` line and exit code 2, never a traceback
halfway through a run. The value types here are for argparse (``type=``); the
checks that need more than one value, or the file system, raise
:class:`UsageError`.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import anyio

from .._core import StoreError, describe_error
from .._stores import Checkpoints, open_store, parse_store_url

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it

TARGET_HELP = (
    "the graph: 'package.module:attr' or 'path/to/file.py:attr', where attr "
    "(possibly dotted) is a flowgraph.Graph or a zero-argument function returning one"
)
STORE_HELP = "state store URL: sqlite:///relative.db, sqlite:////absolute.db or postgresql://..."


class UsageError(Exception):
    """The command line names something that cannot be used; exits with code 2."""


def add_target_argument(parser: argparse.ArgumentParser) -> None:
    """Add the positional TARGET naming the graph to load."""
    parser.add_argument("target", metavar="TARGET", help=TARGET_HELP)


def check_store_url(url: str, option: str, *, must_exist: bool = False) -> str:
    """Return *url* if a store can be opened there; raise :class:`UsageError` naming *option*.

    A SQLite file is created on demand, but its directory must exist; with
    *must_exist* the file must too, so that reading from a mistyped path never
    creates an empty store.
    """
    try:
        kind, target = parse_store_url(url)
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


def check_store_opens(url: str, option: str, *, backend: str, graph: str | None = None) -> None:
    """Open the store at *url* once and close it; raise :class:`UsageError` if it cannot be.

    So that a store that is unreachable, not a store, or corrupt is one line and
    exit 2 before the graph starts, not an error halfway through its start-up.
    With *graph*, the checkpoints of that graph are read as well.
    """

    kind, target = parse_store_url(url)
    if kind == "postgres":
        target = "the PostgreSQL store"

    async def probe() -> None:
        async with open_store(url) as store:
            if graph is not None:
                await Checkpoints(store).load(graph)

    try:
        anyio.run(probe, backend=backend)
    except StoreError as exc:
        raise UsageError(f"{option}: {' '.join(str(exc).split())}") from exc
    except Exception as exc:  # a row the store cannot decode: the store is bad all the same
        raise UsageError(f"{option}: cannot read {target}: {describe_error(exc)}") from exc


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer (got {text!r})") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer (got {text!r})")
    return value


def seconds(text: str, *, zero: bool = False) -> float:
    """An argparse type: a finite number of seconds > 0 (>= 0 with *zero*)."""
    expected = "a number of seconds >= 0" if zero else "a number of seconds > 0"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected} (got {text!r})") from None
    if not (value >= 0 if zero else value > 0) or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected {expected} (got {text!r})")
    return value


def seconds_or_zero(text: str) -> float:
    """An argparse type: a finite number of seconds >= 0."""
    return seconds(text, zero=True)
