"""Functions that tests run in worker processes and on clusters (#12).

Kept apart from the test modules and importing only the standard library, so
that a worker process loading one of them does not import pytest.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def square(x: int) -> int:
    return x * x


def pid_and_square(x: int) -> tuple[int, int]:
    return os.getpid(), x * x


def add_one(x: int) -> int:
    return x + 1


def double(x: int) -> int:
    return x * 2


def digits(x: int) -> Iterator[int]:
    yield from (int(d) for d in str(x))


def fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError(f"three is not allowed (got {x})")
    return x


def lock_for_two(x: int) -> Any:
    """An unpicklable result for item 2."""
    return threading.Lock() if x == 2 else x


def spin(seconds: float) -> float:
    """Pure-Python CPU work for about *seconds*."""
    deadline = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < deadline:
        n += 1
    return seconds


def sleep_for(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def hang_on_zero(x: int) -> int:
    """Item 0 blocks for a minute (a hung call to be timed out); the others return at once."""
    if x == 0:
        time.sleep(60)
    return x


def die(args: tuple[str, int, str]) -> int:
    """``(how, x, marker)``: return *x*, or die *how* if no *marker* file exists yet.

    ``how`` is ``"sigkill"`` (the process kills itself with SIGKILL), ``"exit"``
    (``os._exit(3)``) or ``""`` (do not die). *marker* is created first, so a
    retry of the item succeeds; with *marker* ``""`` every call dies.
    """
    how, x, marker = args
    if how and (marker == "" or not os.path.exists(marker)):
        if marker:
            Path(marker).touch()
        if how == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        os._exit(3)
    return x


def pid_then_hang(args: tuple[int, str]) -> int:
    """``(x, directory)``: item 0 writes its process id to ``directory/pid`` and blocks."""
    x, directory = args
    if x == 0:
        path = Path(directory) / "pid"
        path.with_suffix(".tmp").write_text(str(os.getpid()))
        path.with_suffix(".tmp").rename(path)
        time.sleep(60)
    return x


def hang_once(args: tuple[int, str]) -> int:
    """``(x, marker)``: the first call (no *marker* file yet) creates it and hangs a minute."""
    x, marker = args
    if not os.path.exists(marker):
        Path(marker).touch()
        time.sleep(60)
    return x


class Unpicklable:
    """An item that refuses to be pickled."""

    def __repr__(self) -> str:
        return "Unpicklable()"

    def __reduce__(self) -> Any:
        raise TypeError("not picklable, on purpose")


def report_pid_then_hang(args: tuple[int, str]) -> int:
    """``(x, fifo)``: item 0 writes its process id into the named pipe *fifo* and blocks."""
    x, fifo = args
    if x == 0:
        Path(fifo).write_text(str(os.getpid()))
        time.sleep(60)
    return x


def interval(seconds: float) -> tuple[float, float]:
    """Sleep *seconds*; return when the call started and ended, in wall-clock time."""
    start = time.time()
    time.sleep(seconds)
    return start, time.time()
