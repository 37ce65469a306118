"""An operating-system lock on a sidecar file: the lease of a graph in a SQLite store.

The lock is the kernel's (``flock`` on POSIX, ``msvcrt.locking`` on Windows),
held by an open file, so it is released the moment its holder exits, however
it exits: ``kill -9`` included, and a restart right after a crash always gets
it. It is taken without waiting: a second holder fails at once. The file is
never deleted (deleting a lock file races with the next process opening it);
it holds the holder's process id and host, for the error the next one gets.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from typing import TYPE_CHECKING, final

if TYPE_CHECKING:
    from pathlib import Path


@final
class FileLock:
    """An exclusive lock on *path*, taken with :meth:`acquire` and let go with :meth:`release`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> str | None:
        """Take the lock and return ``None``, or return who holds it if another holder does.

        Raises:
            OSError: if the file cannot be opened or written.
        """
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if not _try_lock(fd):
                return _read_holder(fd)
            holder = f"process {os.getpid()} on {socket.gethostname()} since " + time.strftime(
                "%Y-%m-%d %H:%M:%S %z"
            )
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, holder.encode())
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return None

    def release(self) -> None:
        """Let go of the lock (closing the file releases it); releasing twice does nothing."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def _read_holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 200).decode("utf-8", "replace").strip()
    finally:
        os.close(fd)
    return text or "another process"


if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _try_lock(fd: int) -> bool:
        # Lock one byte far past the holder text, so that reading the text is never blocked.
        os.lseek(fd, 1 << 20, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        finally:
            os.lseek(fd, 0, os.SEEK_SET)
        return True

else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        # flock, not fcntl record locks: those belong to the process, so two runs in one
        # process would share them, and closing any descriptor of the file drops them.
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True
