"""Text file sinks: JSON Lines and CSV, written atomically (see ``_files``)."""

from __future__ import annotations

import csv
import io
import operator
from typing import TYPE_CHECKING, Any, final

from .._core._exceptions import describe_item
from ._files import FileSink
from ._names import column_list
from ._values import BadValue, item_error, strict_json, text_value

if TYPE_CHECKING:
    import os
    from collections.abc import Callable, Mapping, Sequence

    from ._files import Destination, Exists

_PLAIN = (str, int, float)
# Valid inside JSON strings, but line breaks to str.splitlines and to many JSON Lines
# readers: escaped, so one row is always one line.
_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


@final
class JsonLines(FileSink):
    """A sink that writes rows as JSON Lines, one JSON object per line, atomically per file.

    ``graph.sink(fg.JsonLines("out/events-{run}.jsonl"))``. Each item is a row (a
    mapping) or a batch (a list of rows), written in arrival order. Values are
    strict JSON: dates, times, decimals and UUIDs as text, NaN and values JSON
    has no type for refused with the item's name (``ValueError``).

    The path may hold ``{run}`` (a new file per run, named after its start
    time) and ``{column}`` fields (each row goes to the file of its value). Rows
    go to a hidden temporary file in the same directory, fsynced and renamed
    into place when the run finishes or stops gracefully: a failed or
    cancelled run removes its temporary files and renames nothing, and a crash
    never leaves a half-written file under the real name. Only files that
    received rows are written. After the run, ``sink.paths`` lists them.

    A second run into an existing file is refused with ``FileExistsError``
    (``exists="error"``: when the sink opens for a fixed path, else when the
    file's first row arrives); with ``exists="replace"`` the new file replaces
    it when the run finishes, and a failed run leaves the old one as it was.

    Delivery: rows are durable once the run has finished, not before, so use
    file sinks for runs that start over, not behind a checkpointed source in a
    daemon that may be killed (see the "Batches and bulk loads" docs page).
    Backpressure: a call that fills the buffer (1 MiB) waits for the write.

    Args:
        path: the file, or a pattern of files (see above).
        exists: ``"error"`` or ``"replace"``: what a run does about an existing file.

    Raises:
        GraphError: if the path or *exists* is malformed.

    Added in 0.2.
    """

    kind = "jsonl"

    def __init__(self, path: str | os.PathLike[str], *, exists: Exists = "error") -> None:
        super().__init__(path, exists=exists)

    def __repr__(self) -> str:
        return f"JsonLines({self.path!r}, exists={self.exists!r})"

    def encode(self, rows: Sequence[Mapping[str, Any]], item: Any) -> bytes:
        lines = []
        for row in rows:
            try:
                lines.append(strict_json("", row, dates=True))
            except BadValue:
                raise self._bad_row(row, item) from None
        lines.append("")
        return "\n".join(lines).translate(_LINE_BREAKS).encode()

    def _bad_row(self, row: Mapping[str, Any], item: Any) -> ValueError:
        for column, value in row.items():
            try:
                strict_json(str(column), value, dates=True)
            except BadValue as exc:
                return item_error(item, repr(self._pattern.text), exc)
        return ValueError(
            f"item {describe_item(item)} cannot be written to {self._pattern.text!r}: "
            "its keys are not all strings"
        )


@final
class CSV(FileSink):
    """A sink that writes rows as CSV with a header line, atomically per file.

    ``graph.sink(fg.CSV("out/events.csv", columns=["id", "name"]))``. Each item
    is a row (a mapping) or a batch (a list of rows). Every row gives a value
    for each of *columns* (``None`` for an empty cell); other keys are ignored.
    Cells: text and numbers as they are, dates and times in ISO 8601, dicts and
    lists as strict JSON; bytes are refused (decode them first). UTF-8, the
    ``excel`` dialect of Python's ``csv`` module (``\\r\\n`` line ends).

    Paths, atomic commits, a second run and delivery work as for
    :class:`JsonLines`: ``{run}`` and ``{column}`` fields, a hidden temporary
    file renamed into place when the run finishes, ``exists="error"`` or
    ``"replace"``, rows durable once the run has finished.

    Args:
        path: the file, or a pattern of files (see above).
        columns: the header and the order of the cells.
        exists: ``"error"`` or ``"replace"``: what a run does about an existing file.

    Raises:
        GraphError: if the path, *columns* or *exists* is malformed.

    Added in 0.2.
    """

    kind = "csv"

    def __init__(
        self, path: str | os.PathLike[str], *, columns: Sequence[str], exists: Exists = "error"
    ) -> None:
        self.columns = column_list(columns, "sqlite")
        super().__init__(path, exists=exists)
        self._get: Callable[[Any], Any] = operator.itemgetter(*self.columns)
        self._single = len(self.columns) == 1

    def __repr__(self) -> str:
        return f"CSV({self.path!r}, columns={list(self.columns)!r}, exists={self.exists!r})"

    def start(self, destination: Destination) -> None:
        assert destination.file is not None
        destination.file.write(self._lines([self.columns]))

    def encode(self, rows: Sequence[Mapping[str, Any]], item: Any) -> bytes:
        get, single, columns = self._get, self._single, self.columns
        cells = []
        for index, row in enumerate(rows):
            try:
                values = (get(row),) if single else get(row)
            except KeyError:
                missing = [name for name in columns if name not in row]
                raise ValueError(
                    f"row {index} of item {describe_item(item)} has no column(s) {missing} "
                    f"for {self._pattern.text!r}; give every column a value (None for empty)"
                ) from None
            try:
                cells.append(
                    [
                        v if v is None or isinstance(v, _PLAIN) else _cell(c, v)
                        for c, v in zip(columns, values, strict=True)
                    ]
                )
            except BadValue as exc:
                raise item_error(item, repr(self._pattern.text), exc) from None
        return self._lines(cells)

    @staticmethod
    def _lines(rows: Sequence[Sequence[Any]]) -> bytes:
        text = io.StringIO()
        csv.writer(text).writerows(rows)
        return text.getvalue().encode()


def _cell(column: str, value: Any) -> Any:
    if isinstance(value, dict | list):
        return strict_json(column, value, dates=True)
    if isinstance(value, bytes | bytearray):
        raise BadValue(column, "holds bytes, which CSV cannot hold: decode them to text first")
    return text_value(value)
