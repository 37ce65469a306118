"""One worker process of a :class:`~flowgraph.Processes` pool and the parent thread that serves it.

The thread takes a chunk of calls from the pool (or the event loop writes one
slow call to an idle process itself), sends it in one message and reads the
results, which come back one per call, in order: the first call
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
import sys
import threading
from collections import deque
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Any

from .._core._exceptions import describe_error, describe_item
from ._pickling import loads_error
from ._worker import OK, serve, take_messages

if TYPE_CHECKING:
    from collections.abc import Callable
    from multiprocessing.connection import Connection
    from multiprocessing.process import BaseProcess

    from ._processes import Processes

logger = logging.getLogger("flowgraph")

QUEUED, TAKEN, SENT, DONE = range(4)
"""Where a call is: in the pool's queue, taken by a slot, sent to its process, delivered."""

READ_SIZE = 1 << 16

SEND_NOW_SLOWER_THAN = 0.0005
"""The event loop writes a call to an idle process itself only if the function's calls take
longer than this: quicker ones wait for the slot's thread, which sends the calls submitted
meanwhile with it, in one chunk."""

SEND_NOW_MAX = 16 << 10
"""Largest pickled item the event loop writes to an idle process itself (a pipe holds 64 KiB)."""


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
    the first is running. It is guarded by the pool's lock, like ``idle``: a
    slot is idle when its process has nothing to do and the queue is empty,
    and then the event loop may send it a call itself (:meth:`send_now`).

    The thread waits on the process's pipe, its exit, and a wake-up pipe the
    pool writes to when it queues calls for an idle slot or closes.
    """

    def __init__(self, pool: Processes, index: int) -> None:
        self.pool = pool
        self.index = index
        self.process: BaseProcess | None = None
        self.conn: Connection | None = None
        self.known: set[int] = set()
        self.running: deque[Job] = deque()
        self.idle = False
        self.killing: Job | None = None
        self.killed = False
        self.buffer = bytearray()
        self.selector = selectors.DefaultSelector()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.selector.register(self.wake_r, selectors.EVENT_READ)
        self.thread = threading.Thread(
            target=self.run, name=f"flowgraph-process-{index}", daemon=True
        )
        self.thread.start()

    def run(self) -> None:
        pool = self.pool
        try:
            while True:
                with pool._lock:
                    if pool._closed and not self.running:
                        return  # calls still running were killed: their end comes first
                    jobs = None if self.running or pool._closed else pool.take(self)
                if jobs:
                    self.serve(jobs)
                    if not self.running:
                        continue  # nothing went out (no item pickled, or all given up on)
                self.wait()
        except BaseException:  # pragma: no cover - a bug here must not leave calls hanging
            logger.exception("flowgraph: the thread of a worker process failed")
            self.retire()
        finally:
            self.stop()

    def retire(self) -> None:  # pragma: no cover - only after a bug in this module
        """Fail this slot's calls and hand the queue to a new slot."""
        pool = self.pool
        with pool._lock:
            jobs = list(self.running)
            self.running.clear()
            if self in pool._idle:
                pool._idle.remove(self)
            pool._slots.remove(self)
            if pool._queue and not pool._closed:
                pool._slots.append(Slot(pool, self.index))
            if self.process is not None:
                self.process.kill()
        for job in jobs:
            job.state = DONE
            job.deliver(False, RuntimeError("the thread serving this call's worker process failed"))

    def wake(self) -> None:
        """Make the thread look at the queue; under the lock, from any thread."""
        if self.wake_w < 0:
            return  # the thread has stopped
        with contextlib.suppress(BlockingIOError):  # a wake-up is pending already
            os.write(self.wake_w, b"!")

    def kill(self, job: Job | None) -> None:
        """Kill the process to stop *job*, its running call (``None``: closing); under the lock."""
        self.killing, self.killed = job, True
        if self.process is not None:
            self.process.kill()

    def send_now(self, job: Job) -> bool:
        """On the loop, under the lock, for an idle slot: write *job* to the process's pipe.

        Only a small item of a function the process has loaded goes this way: the
        process is waiting for work, so its pipe is empty and the write cannot
        block. Returns whether it was sent; if not, the slot's thread sends it.
        """
        if self.conn is None or job.key not in self.known:
            return False
        if self.pool._cost(job.key) < SEND_NOW_SLOWER_THAN:
            return False  # quick calls: let the ones submitted with it join it in a chunk
        try:
            data = pickle.dumps(job.item, pickle.HIGHEST_PROTOCOL)
        except Exception:
            return False  # the thread reports it
        if len(data) > SEND_NOW_MAX:
            return False
        message = pickle.dumps(((), (), [(job.id, job.key, data)]), pickle.HIGHEST_PROTOCOL)
        try:
            self.conn.send_bytes(message)
        except OSError:
            return False  # the process is gone: the thread finds out
        job.state, job.slot = SENT, self
        self.running.append(job)
        return True

    def serve(self, jobs: list[Job]) -> None:
        """Send a chunk of calls to the process (starting one if needed)."""
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
        with contextlib.suppress(OSError):  # the process died: wait() finds out
            self.conn.send_bytes(message)

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
        self.selector.register(parent.fileno(), selectors.EVENT_READ)
        self.selector.register(process.sentinel, selectors.EVENT_READ)
        self.buffer.clear()
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

    def wait(self) -> None:
        """Wait for results, the process's exit, or a wake-up; handle what came."""
        ready = {key.fd for key, _ in self.selector.select()}
        if self.wake_r in ready:
            with contextlib.suppress(BlockingIOError):
                os.read(self.wake_r, 4096)
        if self.conn is None or self.process is None:
            return
        if self.conn.fileno() in ready:
            try:
                data = os.read(self.conn.fileno(), READ_SIZE)
            except OSError:
                data = b""
            if data:
                self.buffer += data
                self.finished(list(take_messages(self.buffer)))
                return
        elif self.process.sentinel not in ready:
            return
        self.died()  # end of the pipe, or the process exited with nothing left to read

    def finished(self, messages: list[bytes]) -> None:
        """Results, in order, for the first calls running: deliver them; kill the process if
        the call it runs next was given up on."""
        outcomes = []
        for message in messages:
            try:
                outcomes.append(pickle.loads(message))
            except Exception as exc:
                outcomes.append((None, None, exc, None))
        pool = self.pool
        with pool._lock:
            jobs = [self.running.popleft() for _ in outcomes]
            for job, (_, _, _, took) in zip(jobs, outcomes, strict=True):
                job.state = DONE
                if took is not None:
                    pool._learn(job.key, took)
            if self.running and self.running[0].cancelled and not self.killed:
                self.kill(self.running[0])
        for job, (job_id, status, value, _) in zip(jobs, outcomes, strict=True):
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
        assert self.conn is not None
        self.selector.unregister(self.conn.fileno())
        self.selector.unregister(self.process.sentinel)
        self.conn.close()
        self.process.join(1)
        code = self.process.exitcode
        with self.pool._lock:
            jobs = list(self.running)
            self.running.clear()
            killing, killed = self.killing, self.killed
            self.killing = None
            self.process = self.conn = None
            for job in jobs:
                job.state = DONE
        if not jobs:
            if not killed:  # killed from outside, or by multiprocessing at exit: no news
                logger.info(
                    "flowgraph: an idle worker process exited (%s); a new one starts on demand",
                    exit_reason(code),
                )
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
        """A process found dead before its pipe said so: forget it."""
        assert self.process is not None
        self.died()

    def stop(self) -> None:
        """The pool is closed: let the process exit (kill it after a second)."""
        if self.conn is not None:
            self.conn.close()
        if self.process is not None:
            self.process.join(1)
            if self.process.exitcode is None:
                self.process.kill()
                self.process.join(1)
        self.selector.close()
        with self.pool._lock:  # no wake-up may write to a descriptor number reused since
            wake_r, wake_w = self.wake_r, self.wake_w
            self.wake_r = self.wake_w = -1
        os.close(wake_r)
        os.close(wake_w)


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
