"""Where a file sink's rows go: a path pattern with ``{run}`` and ``{column}`` fields.

``"out/events.jsonl"`` is one file. ``"out/events-{run}.jsonl"`` is a new file
for every run (``{run}`` is the run's id: its UTC start time and a random
suffix, so names sort by time and never collide). ``"out/{day}/events.csv"``
writes each row to the file of its ``day`` value: one file per distinct value,
each written atomically. Hive partitions (``partition_by=``) add one
``column=value`` directory per partition column before the file name.

Field values become path segments, so a value that would change the directory
(a ``/``, ``..``) or name nothing (an empty string) is refused with the item.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import string
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from .._core._exceptions import GraphError, describe_item

if TYPE_CHECKING:
    from collections.abc import Mapping

RUN = "run"
HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"
"""The directory name Hive, pyarrow and Spark use for a NULL partition value."""


def new_run_id() -> str:
    """A run id for ``{run}``: ``20240506T070809123456Z-3fa2c1``, sortable by start time (UTC)."""
    now = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return f"{now}-{secrets.token_hex(3)}"


class PathPattern:
    """A file sink's path: fixed, or with ``{run}`` and ``{column}`` fields.

    Args:
        path: the path, with ``{name}`` fields (``{{`` for a literal brace).
        partition_by: Hive partition columns: ``dir/name`` becomes
            ``dir/col=value/.../name``.
    """

    def __init__(self, path: str | os.PathLike[str], partition_by: tuple[str, ...] = ()) -> None:
        if not isinstance(path, str | os.PathLike):
            raise GraphError(f"path must be a string or a path (got {path!r})")
        text = os.fspath(path)
        try:
            fields = [
                field for _, field, _, _ in string.Formatter().parse(text) if field is not None
            ]
        except ValueError as exc:
            raise GraphError(f"path {text!r} is not a valid pattern: {exc}") from None
        for field in fields:
            if not field.isidentifier():
                raise GraphError(
                    f"path {text!r} has the field {{{field}}}; fields name a column or {{run}}"
                )
        if not Path(text).name or text.endswith(("/", os.sep)):
            raise GraphError(f"path {text!r} must name a file, not a directory")
        self.text = text
        self.columns = tuple(dict.fromkeys(f for f in fields if f != RUN))
        self.partition_by = partition_by
        self.per_row = bool(self.columns or partition_by)
        """Whether rows can go to different files."""
        self.per_run = RUN in fields
        prefix = text.split("{", 1)[0] if fields else text
        parent = Path(prefix) if prefix.endswith(("/", os.sep)) else Path(prefix).parent
        self.root = parent.absolute()
        """The directory that must exist: the part of the path before any field."""

    def render(self, run: str, row: Mapping[str, Any] | None, item: Any) -> Path:
        """The destination of *row* (``None``: the only file of a pattern without columns)."""
        values: dict[str, str] = {RUN: run}
        for column in self.columns:
            values[column] = _segment(column, _field(row, column, item), item)
        path = Path(self.text.format(**values))
        if self.partition_by:
            parts = [f"{c}={_hive(c, _field(row, c, item))}" for c in self.partition_by]
            path = path.parent.joinpath(*parts, path.name)
        return path.absolute()

    def __repr__(self) -> str:
        return repr(self.text)


def _field(row: Mapping[str, Any] | None, column: str, item: Any) -> Any:
    if row is None or column not in row:
        raise ValueError(
            f"item {describe_item(item)} has no column {column!r}, which the path names"
        )
    return row[column]


def _segment(column: str, value: Any, item: Any) -> str:
    text = value.isoformat() if isinstance(value, dt.date | dt.time) else str(value)
    if text in ("", ".", "..") or "/" in text or os.sep in text or "\0" in text:
        raise ValueError(
            f"item {describe_item(item)} has {column}={value!r}, which cannot be part of "
            "a file path"
        )
    return text


def _hive(column: str, value: Any) -> str:
    """A Hive partition value: percent-encoded as pyarrow's datasets read it back."""
    if value is None:
        return HIVE_NULL
    text = value.isoformat() if isinstance(value, dt.date | dt.time) else str(value)
    return quote(text, safe="") if text else HIVE_NULL
