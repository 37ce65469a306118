"""Long-lived worker threads: where sync functions run by default.

A sync node's calls run in threads that live as long as the run (or, for a
shared :class:`Threads`, until it is closed). The event loop hands each call to
a thread as a job on a queue; threads hand results back through the run's
:class:`LoopInbox`, which wakes the event loop once for all the results that
arrived since it last looked, not once per result.

Cancellation: a call that is cancelled (its timeout passed, the run was
stopped) is abandoned at once. A thread cannot be interrupted, so a call that
had started runs on; it still occupies its thread, so the node never runs more
calls at once than it has threads, and it is counted in the node's
``abandoned`` statistic until it returns. Its result is discarded. Worker
threads are daemon threads: an abandoned call never keeps the process alive.

Sync iterators (sync generator functions, sync sources) run in a thread as one
long job and hand their items over in batches (``_handoff``).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar, final

import anyio
import anyio.lowlevel
import anyio.to_thread

from ._exceptions import describe_item
from ._handoff import ThreadIterator
from ._policy import PausedDeadlines
from ._validate import positive_int

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable

    from ._stats import LatencyHistogram

logger = logging.getLogger("flowgraph")

T = TypeVar("T")

ABANDON_AFTER = 1.0
"""Seconds a finished or cancelled run waits for calls still running in its threads."""

BUSY_HOOK: Callable[[int, bool], None] | None = None
"""Called on the event loop with ``(+1, flowing)`` when a thread starts working for it,
``(-1, flowing)`` when it stops.

Virtual clocks (``flowgraph.testing``) install it so that they never jump ahead
while a thread works. A node's own calls *flow* (``flowing=True``): virtual time
passes at the real rate, so a timeout on a sync node means what it means in real
time. The engine's own thread work (store and sink I/O) holds virtual time
still: it takes no virtual time, and no timer fires because of it.
"""


async def run_sync_in_thread(
    fn: Callable[..., T], *args: Any, limiter: anyio.CapacityLimiter | None = None
) -> T:
    """``anyio.to_thread.run_sync``, holding virtual clocks still while the thread works.

    Every thread the engine and its rooms use for their own I/O (stores, sinks)
    goes through here, and a node's calls through :class:`Threads`, so a virtual
    clock never jumps ahead while a thread works (see :data:`BUSY_HOOK`).
    """
    hook = BUSY_HOOK
    if hook is not None:
        hook(1, False)
    try:
        return await anyio.to_thread.run_sync(fn, *args, limiter=limiter)
    finally:
        if hook is not None:
            hook(-1, False)


class LoopInbox:
    """Callbacks handed to one event loop from other threads, delivered in batches.

    ``put`` may be called from any thread. The first callback after a delivery
    schedules the next delivery on the loop; the ones that arrive before it runs
    ride along, so a busy loop is woken once for many results.
    """

    def __init__(self) -> None:
        token = anyio.lowlevel.current_token()
        self._run_soon = token.backend_class.run_sync_soon
        self._native = token.native_token
        self._lock = threading.Lock()
        self._ready: list[Callable[[], None]] = []
        self._scheduled = False

    def put(self, callback: Callable[[], None]) -> None:
        with self._lock:
            self._ready.append(callback)
            if self._scheduled:
                return
            self._scheduled = True
        # A loop that has ended has nobody waiting for the result any more.
        with contextlib.suppress(anyio.RunFinishedError):
            self._run_soon(self._deliver, (), self._native)

    def _deliver(self) -> None:
        with self._lock:
            ready, self._ready = self._ready, []
            self._scheduled = False
        for callback in ready:
            callback()


class _Job:
    """One call of a sync function, run by a worker thread for a waiting task."""

    __slots__ = (
        "args",
        "bound",
        "cancelled",
        "done",
        "error",
        "fn",
        "paused",
        "result",
        "seconds",
    )

    def __init__(self, bound: BoundThreads, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.bound = bound
        self.fn = fn
        self.args = args
        self.done = anyio.Event()
        self.cancelled = False
        self.result: Any = None
        self.error: BaseException | None = None
        self.seconds = 0.0
        self.paused: PausedDeadlines | None = None

    def run(self) -> None:
        """In a worker thread: make the call unless it was given up before it started."""
        if not self.cancelled:
            if self.paused is not None:
                self.bound.inbox.put(self.paused.resume)
            started = time.perf_counter()
            try:
                self.result = self.fn(*self.args)
            except BaseException as exc:
                self.error = exc
            self.seconds = time.perf_counter() - started
        self.bound.inbox.put(self.finished)

    def finished(self) -> None:
        """On the event loop: the thread is done with the job."""
        self.bound.job_finished(self)
        self.done.set()


def _work(jobs: queue.SimpleQueue[_Job | None]) -> None:
    while (job := jobs.get()) is not None:
        job.run()


@final
class Threads:
    """A pool of long-lived worker threads for sync nodes: ``executor=fg.Threads(8)``.

    Give one object to several nodes (and several runs) to share its threads;
    each node still runs at most its ``workers`` calls at once. Threads start
    on first use and stay until :meth:`close` (or the end of the process: they
    are daemon threads). ``executor="threads"``, the default for sync
    functions, gives each node a private pool of ``workers`` threads for the run.

    Args:
        threads: how many threads (``>= 1``).

    Raises:
        GraphError: if *threads* is not an int >= 1.

    Added in 0.2.
    """

    def __init__(self, threads: int) -> None:
        self.threads = positive_int("threads", threads)
        self.outstanding = 0  # jobs submitted and not finished, counted on the event loop
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._started: list[threading.Thread] = []
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Threads({self.threads})"

    def check(self, fn: Callable[..., Any], *, node: str) -> None:
        """Any sync function can run in a thread: nothing to check."""

    def submit(self, job: _Job) -> None:
        """Queue *job*; if every thread is busy, its caller's deadlines wait until it starts."""
        if len(self._started) < self.threads:
            self._start()
        if self.outstanding >= self.threads:
            job.paused = PausedDeadlines.pause()
        self.outstanding += 1
        self._jobs.put(job)

    def _start(self) -> None:
        with self._lock:
            while len(self._started) < self.threads:
                thread = threading.Thread(
                    target=_work,
                    args=(self._jobs,),
                    name=f"flowgraph-worker-{len(self._started)}",
                    daemon=True,
                )
                thread.start()
                self._started.append(thread)

    def close(self) -> None:
        """Let the threads exit once they have finished the jobs already queued."""
        with self._lock:
            for _ in self._started:
                self._jobs.put(None)
            self._started = []

    @asynccontextmanager
    async def bind(
        self, fn: Callable[[Any], Any], *, node: str, workers: int
    ) -> AsyncIterator[BoundThreads]:
        """Serve one node for one run: yields ``call(item)``; waits for its calls at the end."""
        bound = BoundThreads(self, fn, node)
        try:
            yield bound
        finally:
            await bound.wait_idle()


@final
class BoundThreads:
    """A node's calls to its threads during one run: ``await call(item)``."""

    def __init__(self, threads: Threads, fn: Callable[[Any], Any], node: str) -> None:
        self.threads = threads
        self.fn = fn
        self.node = node
        self.inbox = LoopInbox()
        self.abandoned = 0
        self.latency: LatencyHistogram | None = None  # where to time calls, if set
        self._busy: dict[_Job, None] = {}
        self._idle = anyio.Event()
        self._idle.set()

    async def __call__(self, item: Any) -> Any:
        job = self.start(self.fn, item)
        try:
            await job.done.wait()
        except BaseException:
            self.abandon(job)
            raise
        if job.error is not None:
            raise job.error
        return job.result

    def start(self, fn: Callable[..., Any], *args: Any) -> _Job:
        """Queue ``fn(*args)`` for a thread; on the event loop."""
        job = _Job(self, fn, args)
        if not self._busy:
            self._idle = anyio.Event()
            if BUSY_HOOK is not None:
                BUSY_HOOK(1, True)
        self._busy[job] = None
        self.threads.submit(job)
        return job

    def abandon(self, job: _Job) -> None:
        """Give up on *job*: it is skipped if not started, and counted until it returns."""
        if not job.done.is_set():
            job.cancelled = True
            self.abandoned += 1

    @property
    def busy(self) -> int:
        """Calls of this node in the threads or waiting for one, at most one per thread."""
        return min(len(self._busy), self.threads.threads)

    def job_finished(self, job: _Job) -> None:
        del self._busy[job]
        self.threads.outstanding -= 1
        if self.latency is not None and not job.cancelled:
            self.latency.record(job.seconds)
        if job.cancelled:
            self.abandoned -= 1
        if not self._busy:
            self._idle.set()
            if BUSY_HOOK is not None:
                BUSY_HOOK(-1, True)

    async def wait_idle(self) -> None:
        """Wait up to :data:`ABANDON_AFTER` seconds for running calls; name those left behind."""
        with anyio.move_on_after(ABANDON_AFTER, shield=True):
            await self._idle.wait()
        if self._busy:
            calls = ", ".join(
                f"{getattr(job.fn, '__name__', job.fn)!s}({describe_item(job.args[0])})"
                for job in list(self._busy)[:3]
                if job.args
            )
            logger.warning(
                "node %r: abandoning %d sync call(s) still running in threads after %gs: %s",
                self.node,
                len(self._busy),
                ABANDON_AFTER,
                calls,
            )

    def iterate(self, fn: Callable[..., Iterable[Any]], *args: Any) -> ThreadIterator:
        """Call ``fn(*args)`` in a thread and read what it returns there, in batches."""
        return ThreadIterator(self, fn, args)
