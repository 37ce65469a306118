"""Parquet file sinks, with Hive partitions, written atomically (see ``_files``). Needs pyarrow."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, final

from .._core._exceptions import describe_item
from .._core._validate import positive_int
from ._files import FileSink
from ._names import check_columns, column_list

if TYPE_CHECKING:
    import os
    from collections.abc import Mapping, Sequence

    from ._files import Destination, Exists


def _pyarrow() -> tuple[Any, Any]:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError as exc:
        raise ImportError("fg.Parquet needs pyarrow: pip install 'flowgraph[parquet]'") from exc
    return pyarrow, pyarrow.parquet


@dataclass
class _File:
    """One Parquet file's schema (widened until the first row group is written) and writer."""

    schema: Any = None
    writer: Any = None  # set with the first row group: from then on the schema is fixed


@final
class Parquet(FileSink):
    """A sink that writes rows to Parquet files, atomically per file or partition.

    ``graph.sink(fg.Parquet("out/events.parquet", partition_by="day"))``. Each
    item is a row (a mapping) or a batch (a list of rows). The schema is
    pyarrow's inference from the rows, widened while the first row group
    fills (an int column that later holds floats becomes double, a column of
    only ``None`` takes the type of a later value), then fixed: a later row
    whose value cannot be cast to it, or with a column the file lacks, is
    refused with the item's name (``ValueError``). A missing key is a null.
    Rows are written in row groups of *row_group_size*.

    With *partition_by*, rows are written as Hive partitions, the layout that
    pyarrow's datasets, Polars, DuckDB and Spark read back: ``out/day=2024-05-06/
    events.parquet``. The partition columns live in the directory names
    (percent-encoded; ``None`` is ``__HIVE_DEFAULT_PARTITION__``), not in the
    files. Each partition's file is atomic on its own.

    Paths, atomic commits, a second run and delivery work as for
    :class:`JsonLines`: ``{run}`` and ``{column}`` fields in the path, a hidden
    temporary file renamed into place when the run finishes (a failed run
    renames nothing), ``exists="error"`` or ``"replace"``, rows durable once
    the run has finished. ``"out/part-{run}.parquet"`` with *partition_by*
    adds a file per run to each partition, so runs never collide.

    Args:
        path: the file, or a pattern of files; with *partition_by*, the file
            name used in each partition directory.
        partition_by: column, or columns, to partition by.
        columns: the columns to write, in order; other keys are ignored.
        exists: ``"error"`` or ``"replace"``: what a run does about an existing file.
        row_group_size: rows per row group, also how many rows a file buffers.

    Raises:
        ImportError: if pyarrow is not installed (the ``parquet`` extra).
        GraphError: if an argument is malformed.

    Added in 0.2.
    """

    kind = "parquet"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        partition_by: str | Sequence[str] = (),
        columns: Sequence[str] | None = None,
        exists: Exists = "error",
        row_group_size: int = 65_536,
    ) -> None:
        self._pa, self._pq = _pyarrow()
        partitions: tuple[str, ...] = ()
        if isinstance(partition_by, str) or partition_by:
            partitions = check_columns("partition column", partition_by, "sqlite")
        self.columns = None if columns is None else column_list(columns, "sqlite")
        self.partition_by = partitions
        self.row_group_size = positive_int("row_group_size", row_group_size)
        self.flush_at = self.row_group_size
        super().__init__(path, exists=exists, partition_by=partitions)

    def __repr__(self) -> str:
        options = []
        if self.partition_by:
            partitions = self.partition_by
            options.append(
                f"partition_by={partitions[0] if len(partitions) == 1 else partitions!r}"
            )
        if self.columns is not None:
            options.append(f"columns={list(self.columns)!r}")
        options.append(f"exists={self.exists!r}")
        if self.row_group_size != 65_536:
            options.append(f"row_group_size={self.row_group_size}")
        return f"Parquet({self.path!r}, {', '.join(options)})"

    def encode(self, rows: Sequence[Mapping[str, Any]], item: Any) -> Any:
        pa = self._pa
        try:
            batch = pa.RecordBatch.from_pylist(list(rows))
        except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
            raise self._error(item, f"pyarrow cannot convert it: {exc}") from None
        names = self.columns or batch.schema.names
        keep = [name for name in names if name not in self.partition_by]
        arrays = [
            batch.column(name) if name in batch.schema.names else pa.nulls(batch.num_rows)
            for name in keep
        ]
        return pa.RecordBatch.from_arrays(arrays, names=list(keep))

    def prepare(self, destination: Destination, chunk: Any, item: Any) -> Any:
        file = destination.state
        if file is None:
            file = destination.state = _File(schema=chunk.schema)
            return chunk
        if file.writer is not None:
            return self._fit(chunk, file.schema, item)
        try:
            file.schema = self._pa.unify_schemas(
                [file.schema, chunk.schema], promote_options="permissive"
            )
        except self._pa.ArrowException as exc:
            raise self._error(item, f"its columns do not fit the file's: {exc}") from None
        return chunk

    def chunk_size(self, chunk: Any) -> int:
        return int(chunk.num_rows)

    def write(self, destination: Destination, chunks: list[Any]) -> None:
        file = destination.state
        assert isinstance(file, _File)
        if file.writer is None:
            file.writer = self._pq.ParquetWriter(destination.file, file.schema)
        batches = [self._fit(chunk, file.schema, None) for chunk in chunks]
        table = self._pa.Table.from_batches(batches, schema=file.schema)
        file.writer.write_table(table, row_group_size=self.row_group_size)

    def finish(self, destination: Destination) -> None:
        file = destination.state
        if isinstance(file, _File) and file.writer is not None:
            file.writer.close()

    def abandon(self, destination: Destination) -> None:
        self.finish(destination)

    def _fit(self, batch: Any, schema: Any, item: Any) -> Any:
        """*batch* cast to *schema*: missing columns as nulls, extra columns refused."""
        pa = self._pa
        if batch.schema.equals(schema):
            return batch
        extra = [name for name in batch.schema.names if schema.get_field_index(name) < 0]
        if extra:
            raise self._error(item, f"column(s) {extra} are not in the file's schema")
        arrays = []
        for field in schema:
            index = batch.schema.get_field_index(field.name)
            if index < 0:
                arrays.append(pa.nulls(batch.num_rows, field.type))
                continue
            column = batch.column(index)
            if column.type != field.type:
                if not self._widens(column.type, field.type):
                    raise self._error(
                        item, f"column {field.name!r} holds {column.type}, the file {field.type}"
                    )
                column = column.cast(field.type)
            arrays.append(column)
        return pa.RecordBatch.from_arrays(arrays, schema=schema)

    def _widens(self, given: Any, wanted: Any) -> bool:
        """Whether *given* values fit *wanted* without loss: null to any, int to float..."""
        pa = self._pa
        try:
            unified = pa.unify_schemas(
                [pa.schema([("c", wanted)]), pa.schema([("c", given)])],
                promote_options="permissive",
            )
        except pa.ArrowException:
            return False
        return bool(unified.field("c").type == wanted)

    def _error(self, item: Any, reason: str) -> ValueError:
        return ValueError(
            f"item {describe_item(item)} cannot be written to {self._pattern.text!r}: {reason}"
        )
