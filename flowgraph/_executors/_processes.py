"""Worker processes for CPU-bound sync nodes: ``executor="processes"``, ``fg.Processes(n)``.

Why a small pool of our own on :mod:`multiprocessing` rather than
``concurrent.futures.ProcessPoolExecutor`` (or loky): each worker process here
has its own pipe and its own thread in the parent, so the parent knows exactly
which call each process is running. That gives what a shared-queue pool
cannot:

* a process that dies (``os._exit``, a segfault, ``kill -9``) fails only the
  call it was running, naming the node and the exit code or signal; the calls
  queued behind it go to other processes and the dead one is replaced, where
  ``ProcessPoolExecutor`` breaks the whole pool and fails every pending call;
* a call that overruns its timeout is stopped by killing the one process that
  runs it (and replacing it), where a pool can only abandon a running call;
* calls submitted around the same time travel to a process together, one
  message per chunk, which amortises the pipe's cost over small items;
* no extra dependency: the core stays on anyio and the standard library.

Results come back one message per call, read by the process's thread in the
parent and handed to the event loop in batches through the run's inbox: one
thread per worker process, none per call. A slow call for a process that has
nothing to do is written to its pipe by the event loop itself, one thread
wake-up less on the way; quick calls wait for the process's thread, which
sends the ones submitted meanwhile together.

The default start method is ``forkserver`` where the platform has it (the
default of Python 3.14), else ``spawn``: ``fork`` from a process that runs
threads (every event loop with worker threads does) can deadlock the child.
"""

from __future__ import annotations

import itertools
import math
import multiprocessing
import pickle
import threading
from collections import deque
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, final

from .._core._exceptions import GraphError
from .._core._validate import positive_int
from ._pickling import check_picklable
from ._remote import BoundRemote
from ._slot import DONE, QUEUED, SENT, TAKEN, Job, Slot
from ._worker import serve

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

MAX_CHUNK = 64
"""Most calls sent to a worker process in one message."""

CHUNK_SECONDS = 0.002
"""How long the calls of one chunk should take together, by their functions' recent calls:
long enough to amortise a message, short enough that no call waits long behind the others.
A function whose calls have not been timed yet travels alone."""


def default_start_method() -> str:
    """``forkserver`` where the platform has it, else ``spawn``."""
    methods = multiprocessing.get_all_start_methods()
    return "forkserver" if "forkserver" in methods else "spawn"


def _preload_worker() -> None:
    """Have the fork server import the worker's code once, so a new worker starts in
    milliseconds, not in the time it takes to import flowgraph (a pool per run must be cheap).

    Only effective before the server starts; keeps the modules preloaded already.
    """
    from multiprocessing import forkserver

    modules = list(getattr(forkserver._forkserver, "_preload_modules", ["__main__"]))
    if serve.__module__ not in modules:
        forkserver.set_forkserver_preload([*modules, serve.__module__])


@final
class Processes:
    """A pool of worker processes for sync nodes: ``executor=fg.Processes(4)``.

    Each node's calls (and their items and results) are pickled to a worker
    process and back. Small items travel in chunks; each result comes back as
    soon as it is ready. Give one object to several nodes (and runs) to share
    its processes; each node still runs at most its ``workers`` calls at once,
    and may have more workers than the pool has processes to keep them busy.
    Processes start on first use and stay until :meth:`close`.
    ``executor="processes"`` gives each node a private pool of ``workers``
    processes for the run.

    A call that overruns its timeout is stopped by killing its process, which
    is replaced; a process that dies fails only the call it was running.

    Args:
        processes: how many worker processes (``>= 1``).
        start_method: ``"forkserver"``, ``"spawn"`` or ``"fork"``; by default
            ``"forkserver"`` where the platform has it, else ``"spawn"``.

    Raises:
        GraphError: if *processes* is not an int >= 1 or the start method is unknown.

    Added in 0.2.
    """

    def __init__(self, processes: int, *, start_method: str | None = None) -> None:
        self.processes = positive_int("processes", processes)
        methods = multiprocessing.get_all_start_methods()
        if start_method is not None and start_method not in methods:
            raise GraphError(
                f"start_method must be one of {', '.join(map(repr, methods))} "
                f"(got {start_method!r})"
            )
        self.start_method = start_method
        self._method = start_method or default_start_method()
        self._context = multiprocessing.get_context(self._method)
        if self._method == "forkserver":
            _preload_worker()
        self._lock = threading.Lock()
        self._queue: deque[Job] = deque()
        self._slots: list[Slot] = []
        self._idle: list[Slot] = []  # slots whose process has nothing to do
        self._functions: dict[int, tuple[str, bytes]] = {}
        self._costs: dict[bytes, float] = {}  # seconds per call, by pickled function
        self._keys = itertools.count()
        self._ids = itertools.count()
        self._closed = False

    def __repr__(self) -> str:
        method = "" if self.start_method is None else f", start_method={self.start_method!r}"
        return f"Processes({self.processes}{method})"

    def check(self, fn: Callable[..., Any], *, node: str) -> None:
        """Refuse a function that a worker process could not receive."""
        check_picklable(fn, node=node, start_method=self._method)

    @asynccontextmanager
    async def bind(
        self, fn: Callable[[Any], Any], *, node: str, workers: int
    ) -> AsyncIterator[BoundProcesses]:
        """Serve one node for one run; wait (briefly) for its abandoned calls at the end."""
        key = next(self._keys)
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{self!r} is closed")
            self._functions[key] = (node, pickle.dumps(fn, pickle.HIGHEST_PROTOCOL))
        bound = BoundProcesses(self, key, node)
        try:
            yield bound
        finally:
            await bound.wait_idle()
            with self._lock:
                del self._functions[key]

    def _node_of(self, key: int) -> str:
        return self._functions.get(key, ("?", b""))[0]

    def submit(self, job: Job) -> None:
        """Hand *job* to a worker process; on the event loop.

        A process with nothing to do gets it at once, written to its pipe from
        here (no thread to wake on the way); otherwise it waits in the queue for
        the next process that finishes its chunk.
        """
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{self!r} is closed")
            job.id = next(self._ids)
            if self._idle:
                slot = self._idle.pop()
                slot.idle = False
                if self._queue or not slot.send_now(job):
                    self._queue.append(job)
                    slot.wake()
                return
            self._queue.append(job)
            if len(self._slots) < self.processes:
                self._slots.append(Slot(self, len(self._slots)))

    def cancel(self, job: Job) -> None:
        """Give up on *job*: dropped if still queued, its process killed if it is running."""
        with self._lock:
            job.cancelled = True
            if job.state == QUEUED:
                self._queue.remove(job)
                job.state = DONE
            elif job.state == SENT and job.slot is not None and job.slot.running[0] is job:
                job.slot.kill(job)
                return
            else:
                return  # killed when it reaches the head of its process, or already done
        job.deliver(False, None)

    def take(self, slot: Slot) -> list[Job] | None:
        """The next chunk of calls for *slot*'s process, or ``None`` (the slot is then idle).

        In the slot's thread, under the lock.
        """
        if not self._queue:
            if not slot.idle:
                slot.idle = True
                self._idle.append(slot)
            return None
        if slot.idle:
            slot.idle = False
            self._idle.remove(slot)
        jobs = self._chunk()
        for job in jobs:
            job.state, job.slot = TAKEN, slot
        return jobs

    def _chunk(self) -> list[Job]:
        """Calls from the front of the queue worth :data:`CHUNK_SECONDS`, leaving the other
        processes their share; at least one. Under the lock."""
        queue, cost = self._queue, self._cost
        limit = min(MAX_CHUNK, math.ceil(len(queue) / self.processes))
        budget = CHUNK_SECONDS
        jobs = [queue.popleft()]
        while queue and len(jobs) < limit:
            budget -= cost(jobs[-1].key)
            if budget < cost(queue[0].key):
                break
            jobs.append(queue.popleft())
        return jobs

    def _cost(self, key: int) -> float:
        """Seconds a call of *key*'s function takes, by its recent calls; inf if unknown."""
        function = self._functions.get(key)
        return math.inf if function is None else self._costs.get(function[1], math.inf)

    def _learn(self, key: int, took: float) -> None:
        """A call of *key*'s function took *took* seconds; under the lock."""
        function = self._functions.get(key)
        if function is not None:
            cost = self._costs.get(function[1])
            self._costs[function[1]] = took if cost is None else 0.7 * cost + 0.3 * took

    def requeue(self, jobs: list[Job]) -> None:
        """In a slot's thread: put calls that never ran back at the front of the queue."""
        dropped = []
        with self._lock:
            for job in reversed(jobs):
                if job.cancelled or self._closed:
                    job.state = DONE
                    dropped.append(job)
                else:
                    job.state, job.slot = QUEUED, None
                    self._queue.appendleft(job)
            if not self._closed:
                for slot in self._idle[: len(jobs)]:
                    slot.wake()
        for job in dropped:
            job.deliver(False, RuntimeError(f"{self!r} was closed"))

    def close(self) -> None:
        """Stop the worker processes: idle ones exit, calls still running are killed.

        Waits up to a second per process. Calls still queued fail.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            queued = list(self._queue)
            self._queue.clear()
            for slot in self._slots:
                if slot.running:
                    slot.kill(None)
                slot.wake()
            slots = list(self._slots)
        for job in queued:
            job.state = DONE
            job.deliver(False, RuntimeError(f"{self!r} was closed"))
        for slot in slots:
            slot.thread.join(5)


@final
class BoundProcesses(BoundRemote[Job]):
    """A node's calls to a :class:`Processes` pool during one run: ``await call(item)``."""

    def __init__(self, pool: Processes, key: int, node: str) -> None:
        super().__init__(node)
        self.pool = pool
        self.key = key

    def start(self, item: Any, deliver: Callable[[bool, Any], None]) -> Job:
        job = Job(self.key, item, deliver)
        self.pool.submit(job)
        return job

    def cancel(self, handle: Job) -> None:
        self.pool.cancel(handle)
