"""What a worker process of :class:`~flowgraph.Processes` runs, and the messages on its pipe.

The parent sends one message per chunk: the functions this process has not
loaded yet, the ones it may forget, and the calls, each an item pickled on
its own. The process runs the calls in order and sends each result back as
soon as it has it, with the time the call took, so the parent always knows
which call a process was running when it died (the first one without a
result) and how long the function's calls take (to size the next chunks).
"""

from __future__ import annotations

import pickle
import signal
import struct
import sys
from time import perf_counter
from typing import TYPE_CHECKING, Any

from .._core._exceptions import describe_error, describe_item
from ._pickling import dumps_error

if TYPE_CHECKING:
    from collections.abc import Iterator
    from multiprocessing.connection import Connection

OK = 0
RAISED = 1


class _Unloadable:
    """Stands in for a function the process could not unpickle: each call says why."""

    def __init__(self, node: str, error: BaseException) -> None:
        self.node = node
        self.error = error

    def __call__(self, item: Any) -> Any:
        raise RuntimeError(
            f"the function of node {self.node!r} could not be loaded in the worker process: "
            f"{describe_error(self.error)}"
        ) from self.error


def serve(conn: Connection, path: list[str]) -> None:
    """The worker process's main loop, until its parent closes the pipe."""
    # Ctrl-C in a terminal reaches the whole process group: the parent decides.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.path[:] = path  # a forkserver's children start with the server's path, not ours
    functions: dict[int, Any] = {}
    send, dumps, loads = conn.send_bytes, pickle.dumps, pickle.loads
    while True:
        try:
            message = conn.recv_bytes()
        except (EOFError, OSError):
            return
        new, drops, calls = loads(message)
        for key in drops:
            functions.pop(key, None)
        for key, node, data in new:
            try:
                functions[key] = loads(data)
            except BaseException as exc:
                functions[key] = _Unloadable(node, exc)
        for job, key, data in calls:
            started = perf_counter()
            try:
                result = functions[key](loads(data))
            except BaseException as exc:
                took = perf_counter() - started
                send(dumps((job, RAISED, dumps_error(exc), took), pickle.HIGHEST_PROTOCOL))
                continue
            took = perf_counter() - started
            try:
                out = dumps((job, OK, result, took), pickle.HIGHEST_PROTOCOL)
            except Exception as exc:
                error = pickle.PicklingError(
                    f"the result {describe_item(result)} cannot be pickled to leave the "
                    f"worker process: {describe_error(exc)}"
                )
                error.__cause__ = exc
                out = dumps((job, RAISED, dumps_error(error), took), pickle.HIGHEST_PROTOCOL)
            send(out)


def take_messages(buffer: bytearray) -> Iterator[bytes]:
    """In the parent: take every complete message off *buffer*, bytes read from a worker's
    pipe (``Connection.send_bytes`` framing: a 4-byte length, or -1 and an 8-byte one)."""
    start = 0
    end = len(buffer)
    while end - start >= 4:
        (size,) = struct.unpack_from("!i", buffer, start)
        header = 4
        if size == -1:  # a message of 2 GiB or more
            if end - start < 12:
                break
            (size,) = struct.unpack_from("!Q", buffer, start + 4)
            header = 12
        if end - start - header < size:
            break
        yield bytes(buffer[start + header : start + header + size])
        start += header + size
    del buffer[:start]
