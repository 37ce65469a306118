"""One worker process of a :class:`~flowgraph.Processes` pool and the parent thread that serves it.

The thread takes a chunk of calls from the pool, sends it in one message and
reads the results, which come back one per call, in order: the first call
without a result is the one the process is running. So when the process dies
that call fails, naming the exit code or signal, and the calls behind it go
back to the pool; when that call is given up on (its timeout passed), the
process is killed to stop it. A dead process is replaced on the next chunk.

Results are read straight from the pipe in large reads, and every complete
message in them is handled at once: one wake-up of the thread for all the
results that arrived together.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import selectors
import signal
import struct
import sys
import threading
from collections import deque
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Any

from .._core._exceptions import describe_error, describe_item
from ._pickling import loads_error
from ._worker import OK, serve

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from multiprocessing.connection import Connection
    from multiprocessing.process import BaseProcess

    from ._processes import Processes

logger = logging.getLogger("flowgraph")

QUEUED, TAKEN, SENT, DONE = range(4)
"""Where a call is: in the pool's queue, taken by a slot, sent to its process, delivered."""

READ_SIZE = 1 << 16


class WorkerProcessDied(BrokenProcessPool):
    """A worker process died while it ran a call: that call fails; the pool goes on."""


class Job:
    """One call: queued in the pool, then sent to one worker process, then delivered."""

    __slots__ = ("cancelled", "deliver", "id", "item", "key", "slot", "state")

    def __init__(self, key: int, item: Any, deliver: Callable[[bool, Any], None]) -> None:
        self.key = key
        self.item = item
        self.deliver = deliver
        self.id = 0
        self.state = QUEUED
        self.slot: Slot | None = None
        self.cancelled = False


class Slot:
    """One worker process (started on first use, replaced after it dies) and its thread.

    ``running`` lists the calls sent to the process, in the order it runs them;
    the first is running. It is guarded by the pool's lock.
    """

    def __init__(self, pool: Processes, index: int) -> None:
        self.pool = pool
        self.index = index
        self.process: BaseProcess | None = None
        self.conn: Connection | None = None
        self.known: set[int] = set()
        self.running: deque[Job] = deque()
        self.killing: Job | None = None
        self.killed = False
        self.thread = threading.Thread(
            target=self.run, name=f"flowgraph-process-{index}", daemon=True
        )
        self.thread.start()

    def run(self) -> None:
        pool = self.pool
        try:
            while (jobs := pool.take(self)) is not None:
                self.serve(jobs)
        finally:
            self.stop()

    def kill(self, job: Job | None) -> None:
        """Kill the process to stop *job*, its running call (``None``: closing); under the lock."""
        self.killing, self.killed = job, True
        if self.process is not None:
            self.process.kill()

    def serve(self, jobs: list[Job]) -> None:
        """Send a chunk of calls to the process and read their results until all are back."""
        if self.process is None or not self.process.is_alive():
            try:
                self.spawn()
            except Exception as exc:
                error = RuntimeError(f"could not start a worker process: {describe_error(exc)}")
                error.__cause__ = exc
                for job in jobs:
                    job.state = DONE
                    job.deliver(False, error)
                return
        message = self.encode(jobs)
        if message is None:
            return
        assert self.conn is not None
        with contextlib.suppress(OSError):  # the process died: receive() finds out
            self.conn.send_bytes(message)
        self.receive()

    def spawn(self) -> None:
        if self.process is not None:
            self.lost()
        context: Any = self.pool._context
        parent, child = context.Pipe()
        process = context.Process(
            target=serve,
            args=(child, list(sys.path)),
            name=f"flowgraph-process-{self.index}",
            daemon=True,
        )
        process.start()
        child.close()
        with self.pool._lock:
            self.process, self.conn, self.killed = process, parent, False
            self.known.clear()

    def encode(self, jobs: list[Job]) -> bytes | None:
        """The chunk's message; a call whose item cannot be pickled fails here, alone."""
        calls, sent = [], []
        for job in jobs:
            try:
                calls.append((job.id, job.key, pickle.dumps(job.item, pickle.HIGHEST_PROTOCOL)))
            except Exception as exc:
                job.state = DONE
                job.deliver(False, self._unpicklable(job, exc))
            else:
                sent.append(job)
        pool = self.pool
        with pool._lock:
            functions = pool._functions
            keys = {job.key for job in sent}
            new = [(key, *functions[key]) for key in keys - self.known if key in functions]
            drops = [key for key in self.known if key not in functions]
            self.known.difference_update(drops)
            self.known.update(keys)
            live, given_up = [], []
            for job, call in zip(sent, calls, strict=True):
                if job.cancelled:
                    job.state = DONE
                    given_up.append(job)
                else:
                    job.state = SENT
                    self.running.append(job)
                    live.append(call)
        for job in given_up:
            job.deliver(False, None)
        if not live:
            return None
        return pickle.dumps((new, drops, live), pickle.HIGHEST_PROTOCOL)

    def _unpicklable(self, job: Job, exc: Exception) -> pickle.PicklingError:
        error = pickle.PicklingError(
            f"item {describe_item(job.item)} of node {self.pool._node_of(job.key)!r} cannot "
            f"be pickled to go to a worker process: {describe_error(exc)}"
        )
        error.__cause__ = exc
        return error

    def receive(self) -> None:
        """Read results until every call sent has one, or the process has died."""
        assert self.conn is not None
        assert self.process is not None
        fd, sentinel = self.conn.fileno(), self.process.sentinel
        buffer = bytearray()
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            selector.register(sentinel, selectors.EVENT_READ)
            while self.running:
                ready = {key.fd for key, _ in selector.select()}
                if fd in ready:
                    try:
                        data = os.read(fd, READ_SIZE)
                    except OSError:
                        data = b""
                    if data:
                        buffer += data
                        for message in _messages(buffer):
                            self.finished(message)
                        continue
                elif sentinel not in ready:
                    continue
                self.died()  # end of the pipe, or the process exited with nothing left to read
                return

    def finished(self, message: bytes) -> None:
        """One result, for the first call running: deliver it; kill for a given-up next call."""
        try:
            job_id, status, value, took = pickle.loads(message)
        except Exception as exc:
            job_id, status, value, took = None, None, exc, None
        with self.pool._lock:
            job = self.running.popleft()
            job.state = DONE
            if took is not None:
                self.pool._learn(job.key, took)
            if self.running and self.running[0].cancelled and not self.killed:
                self.kill(self.running[0])
        if status == OK:
            assert job.id == job_id, (job.id, job_id)
            job.deliver(True, value)
        elif status is None:
            job.deliver(False, RuntimeError(f"the result could not be unpickled: {value!r}"))
        else:
            job.deliver(False, loads_error(value))

    def died(self) -> None:
        """The process is gone: fail the call it was running, send the others elsewhere."""
        assert self.process is not None
        self.process.join(1)
        code = self.process.exitcode
        with self.pool._lock:
            jobs = list(self.running)
            self.running.clear()
            killing, killed = self.killing, self.killed
            self.killing = None
            self.process = None
            for job in jobs:
                job.state = DONE
        if not jobs:
            return
        if killed and (killing is None or not jobs[0].cancelled):
            # Killed by us to stop a call that has finished since, or to close the pool.
            self.pool.requeue(jobs)
            return
        head = jobs[0]
        self.pool.requeue(jobs[1:])
        if head.cancelled:
            head.deliver(False, None)
            return
        head.deliver(
            False,
            WorkerProcessDied(
                f"the worker process of node {self.pool._node_of(head.key)!r} died "
                f"({exit_reason(code)}) while running item {describe_item(head.item)}; "
                "it has been replaced"
            ),
        )

    def lost(self) -> None:
        """A process found dead between chunks (killed from outside): log and forget it."""
        assert self.process is not None
        self.process.join(1)
        if not self.killed:
            logger.warning(
                "flowgraph: an idle worker process exited (%s); starting a new one",
                exit_reason(self.process.exitcode),
            )
        self.process = None

    def stop(self) -> None:
        """The pool is closed: let the process exit (kill it after a second)."""
        if self.conn is not None:
            self.conn.close()
        if self.process is not None:
            self.process.join(1)
            if self.process.exitcode is None:
                self.process.kill()
                self.process.join(1)


def _messages(buffer: bytearray) -> Iterator[bytes]:
    """Take every complete message (``Connection.send_bytes`` framing) off *buffer*."""
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


def exit_reason(code: int | None) -> str:
    """``"exit code 3"``, ``"killed by signal SIGKILL"``."""
    if code is None:
        return "exit code unknown"
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
