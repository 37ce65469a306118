"""Atomic file sinks: rows go to a hidden temporary file, renamed into place when the run ends.

Each destination file is written as ``.NAME.XXXXXXXX.tmp`` in its own
directory. When the sink closes without an error (the run finished, or stopped
gracefully), each file is flushed, fsynced, and renamed to its name, then the
directory is fsynced. When the sink closes with an error or a cancellation,
the temporary files are removed and nothing is renamed. After ``kill -9`` a
hidden ``.tmp`` file may be left beside, never a half-written file under the
real name. Readers that skip hidden files (pyarrow's datasets do) never see it.

Rows are encoded on the event loop (CPU work, like any transform) and written
by one worker thread once about *flush_at* of them are pending, so disk I/O
never blocks the loop and a slow disk pushes back on the calls.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Literal, Self

import anyio
import anyio.to_thread

from .._core._exceptions import GraphError, describe_item
from .._core._threads import run_sync_in_thread
from ._paths import PathPattern, new_run_id

if TYPE_CHECKING:
    from types import TracebackType

Exists = Literal["error", "replace"]


@dataclass(eq=False)
class Destination:
    """One file being written: its final path, temporary file, pending chunks and state."""

    path: Path
    temp: Path | None = None
    file: BinaryIO | None = None
    pending: list[Any] = field(default_factory=list)
    size: int = 0  # how much is pending, in the format's unit (bytes or rows)
    rows: int = 0  # rows accepted so far
    state: Any = None  # the format's own (Parquet: schema and writer)


class FileSink:
    """The base of the file sinks: path patterns, atomic commits, buffering and threads."""

    kind = "file"
    flush_at = 1 << 20

    def __init__(
        self, path: str | os.PathLike[str], *, exists: Exists, partition_by: tuple[str, ...] = ()
    ) -> None:
        if exists not in ("error", "replace"):
            raise GraphError(f"exists must be 'error' or 'replace' (got {exists!r})")
        self._pattern = PathPattern(path, partition_by)
        self.path = path
        self.exists: Exists = exists
        stem = re.sub(r"\W+", "_", Path(self._pattern.text).stem).strip("_") or "file"
        self.__name__ = f"{self.kind}_{stem}"
        self.paths: list[Path] = []
        """The files the last run committed, in the order they were first written."""
        self._run = ""
        self._destinations: dict[Path, Destination] = {}
        self._depth = 0
        self._lock: anyio.Lock | None = None
        self._limiter: anyio.CapacityLimiter | None = None

    # -- the format's part -----------------------------------------------------------------

    def encode(self, rows: Sequence[Mapping[str, Any]], item: Any) -> Any:
        """*rows* as one chunk (on the event loop); raises an error naming *item*."""
        raise NotImplementedError

    def prepare(self, destination: Destination, chunk: Any, item: Any) -> Any:
        """Fit *chunk* to what *destination* already holds (on the loop, under the lock)."""
        return chunk

    def chunk_size(self, chunk: Any) -> int:
        return len(chunk)

    def start(self, destination: Destination) -> None:
        """Begin the temporary file (in the worker thread): a CSV header, say."""

    def write(self, destination: Destination, chunks: list[Any]) -> None:
        """Write *chunks* to the temporary file (in the worker thread)."""
        assert destination.file is not None
        destination.file.write(b"".join(chunks))

    def finish(self, destination: Destination) -> None:
        """End the temporary file before it is fsynced (in the worker thread)."""

    def abandon(self, destination: Destination) -> None:
        """Let go of a temporary file about to be removed (in the worker thread)."""

    # -- the run -----------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._depth == 0:
            limiter = anyio.CapacityLimiter(1)
            await run_sync_in_thread(self._check_start, limiter=limiter)
            self._run = new_run_id()
            self._destinations = {}
            self.paths = []
            self._limiter = limiter
            self._lock = anyio.Lock()
        self._depth += 1
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._depth -= 1
        if self._depth or self._lock is None:
            return
        lock, self._lock = self._lock, None
        destinations, self._destinations = list(self._destinations.values()), {}
        with anyio.CancelScope(shield=True):
            async with lock:
                if exc_type is None:
                    self.paths = await run_sync_in_thread(
                        self._commit, destinations, limiter=self._limiter
                    )
                else:
                    await run_sync_in_thread(_discard, self, destinations, limiter=self._limiter)

    async def __call__(self, item: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> None:
        """Add *item* (a row, or a list of rows) to its file, or files."""
        if self._lock is None:
            raise RuntimeError(
                f"{type(self).__name__} {self._pattern!r} is not open: use it as a sink of a "
                "run (the run opens it) or in `async with`"
            )
        chunks = [
            (path, len(rows), self.encode(rows, item)) for path, rows in self._route(item).items()
        ]
        async with self._lock:
            new = [path for path, _, _ in chunks if path not in self._destinations]
            if new:
                created = await run_sync_in_thread(self._create, new, item, limiter=self._limiter)
                self._destinations.update(created)
            fitted = [
                (
                    self._destinations[path],
                    rows,
                    self.prepare(self._destinations[path], chunk, item),
                )
                for path, rows, chunk in chunks
            ]
            full = []
            for destination, rows, chunk in fitted:
                destination.pending.append(chunk)
                destination.rows += rows
                destination.size += self.chunk_size(chunk)
                if destination.size >= self.flush_at:
                    full.append(destination)
            if full:
                await run_sync_in_thread(self._flush, full, limiter=self._limiter)

    def _route(self, item: Any) -> dict[Path, list[Mapping[str, Any]]]:
        rows = _rows(type(self).__name__, item)
        pattern = self._pattern
        if not pattern.per_row:
            return {pattern.render(self._run, None, item): rows} if rows else {}
        routed: dict[Path, list[Mapping[str, Any]]] = {}
        for row in rows:
            routed.setdefault(pattern.render(self._run, row, item), []).append(row)
        return routed

    # -- in the worker thread --------------------------------------------------------------

    def _check_start(self) -> None:
        root = self._pattern.root
        if not root.is_dir():
            raise FileNotFoundError(f"{type(self).__name__}: directory {root} does not exist")
        if not self._pattern.per_row and not self._pattern.per_run:
            self._check_free(Path(self._pattern.text).absolute())

    def _check_free(self, path: Path) -> None:
        if self.exists == "error" and path.exists():
            raise FileExistsError(
                f"{type(self).__name__}: {path} already exists; pass exists='replace' to "
                "replace it when the run finishes, or put {run} in the path for a new file "
                "per run"
            )

    def _create(self, paths: list[Path], item: Any) -> dict[Path, Destination]:
        created: dict[Path, Destination] = {}
        try:
            for path in paths:
                self._check_free(path)
                path.parent.mkdir(parents=True, exist_ok=True)
                handle, temp = tempfile.mkstemp(
                    prefix=f".{path.name}.", suffix=".tmp", dir=path.parent
                )
                destination = created[path] = Destination(path, Path(temp))
                destination.file = os.fdopen(handle, "wb")
                self.start(destination)
        except BaseException:
            _discard(self, list(created.values()))
            raise
        return created

    def _flush(self, destinations: list[Destination]) -> None:
        for destination in destinations:
            chunks, destination.pending, destination.size = destination.pending, [], 0
            if chunks:
                self.write(destination, chunks)

    def _commit(self, destinations: list[Destination]) -> list[Path]:
        committed: list[Path] = []
        # A file created for an item that was then refused holds no row: never publish it.
        _discard(self, [each for each in destinations if not each.rows])
        try:
            for destination in destinations:
                if not destination.rows:
                    continue
                self._flush([destination])
                self.finish(destination)
                file, temp = destination.file, destination.temp
                assert file is not None
                assert temp is not None
                file.flush()
                os.fsync(file.fileno())
                file.close()
                self._place(temp, destination.path)
                destination.temp = None
                _sync_directory(destination.path.parent)
                committed.append(destination.path)
        except BaseException:
            _discard(self, destinations)
            raise
        return committed

    def _place(self, temp: Path, path: Path) -> None:
        """Rename *temp* to *path*: replacing it, or only if it does not exist."""
        if self.exists == "replace":
            os.replace(temp, path)
            return
        try:
            os.link(temp, path)  # fails if *path* exists: no check-then-rename race
        except FileExistsError:
            self._check_free(path)
            raise
        except OSError:  # a file system without hard links
            self._check_free(path)
            os.rename(temp, path)
            return
        temp.unlink()


def _rows(kind: str, item: Any) -> list[Mapping[str, Any]]:
    if isinstance(item, Mapping):
        return [item]
    if isinstance(item, Sequence) and not isinstance(item, str | bytes):
        for index, row in enumerate(item):
            if not isinstance(row, Mapping):
                raise TypeError(
                    f"row {index} of item {describe_item(item)} is not a mapping of "
                    "columns to values"
                )
        return list(item)
    raise TypeError(
        f"{kind} takes a mapping of columns to values, or a list of them "
        f"(got {describe_item(item)})"
    )


def _discard(sink: FileSink, destinations: list[Destination]) -> None:
    """Close and remove the temporary files; the final paths are never touched."""
    for destination in destinations:
        if destination.temp is not None:
            with contextlib.suppress(Exception):
                sink.abandon(destination)
        if destination.file is not None:
            with contextlib.suppress(OSError):
                destination.file.close()
        if destination.temp is not None:
            with contextlib.suppress(FileNotFoundError):
                destination.temp.unlink()
            destination.temp = None


def _sync_directory(directory: Path) -> None:
    """Make a rename in *directory* durable (POSIX; a no-op where directories cannot be opened)."""
    if os.name != "posix":  # pragma: no cover
        return
    handle = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)
