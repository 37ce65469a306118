"""The executor seam: where a node's sync function runs.

A node chooses with ``executor=`` (or its graph's default):

* ``"loop"``: called on the event loop; for quick functions (``inline=True``
  is the same).
* ``"threads"`` (the default for sync functions): long-lived worker threads,
  one per worker of the node, for the run (:mod:`._threads`).
* a registered name: ``"processes"`` (``_executors``) makes a private pool
  of the node's ``workers`` processes for the run.
* an :class:`Executor` object, which may serve several nodes and outlive runs:
  ``fg.Threads(n)``, ``fg.Processes(n)``, ``fg.Dask(client)``, ``fg.Ray()``.
* any ``concurrent.futures.Executor`` (a process pool, loky, mpi4py...).

Whatever runs the call, the engine awaits it the same way, so timeouts,
retries, backpressure and acknowledgements behave the same everywhere: a call
whose task is cancelled (its timeout passed, the run stopped) is abandoned,
cancelled where the executor can cancel it, and counted as ``abandoned`` until
it ends.
"""

from __future__ import annotations

import concurrent.futures
import functools
import logging
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any, Protocol, final, runtime_checkable

import anyio

from ._exceptions import GraphError
from ._threads import ABANDON_AFTER, LoopInbox, Threads
from ._validate import unknown_name

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable

logger = logging.getLogger("flowgraph")


@runtime_checkable
class BoundCall(Protocol):
    """An executor serving one node for one run: ``await call(item)`` returns ``fn(item)``.

    Cancelling the await abandons the call; ``abandoned`` counts the calls
    given up on that are still running.
    """

    abandoned: int

    async def __call__(self, item: Any, /) -> Any: ...


@runtime_checkable
class Executor(Protocol):
    """Where a sync node's calls run (``executor=``).

    ``check`` runs when a node is declared with the executor and raises
    ``GraphError`` for a function it cannot run (one that does not pickle, for
    a process pool). ``bind`` serves one node for one run.
    """

    def check(self, fn: Callable[..., Any], *, node: str) -> None: ...

    def bind(
        self, fn: Callable[[Any], Any], *, node: str, workers: int
    ) -> AbstractAsyncContextManager[BoundCall]: ...


ExecutorSpec = str | Executor | concurrent.futures.Executor
"""What ``executor=`` takes: a name, an :class:`Executor`, or a ``concurrent.futures.Executor``."""

_NAMED: dict[str, Callable[[int], Executor]] = {"threads": Threads}


def register_executor(name: str, factory: Callable[[int], Executor]) -> None:
    """Make ``executor=name`` build a private executor per node and run with *factory(workers)*."""
    _NAMED[name] = factory


def check_executor(where: str, value: object) -> ExecutorSpec:
    """Return *value* if ``executor=`` can take it; refuse it at declaration otherwise."""
    if isinstance(value, str):
        if value != "loop" and value not in _NAMED:
            raise unknown_name(f"{where}: there is no executor", value, ["loop", *_NAMED])
        return value
    if isinstance(value, Executor | concurrent.futures.Executor):
        return value
    raise GraphError(
        f"{where} must be 'loop', 'threads', 'processes', an executor such as "
        f"fg.Threads(8), or a concurrent.futures.Executor (got {value!r})"
    )


def as_executor(spec: Executor | concurrent.futures.Executor) -> Executor:
    """An :class:`Executor` for *spec*, adapting a ``concurrent.futures.Executor``."""
    if isinstance(spec, Executor):
        return spec
    return FuturesExecutor(spec)


def check_function(spec: ExecutorSpec, fn: Callable[..., Any], *, node: str) -> None:
    """Refuse at declaration a function the executor *spec* cannot run.

    A named executor is asked through an instance its factory makes, unused:
    factories start nothing until their executor is first bound.
    """
    if spec == "loop":
        return
    executor = _NAMED[spec](1) if isinstance(spec, str) else as_executor(spec)
    executor.check(fn, node=node)


@asynccontextmanager
async def open_executor(spec: ExecutorSpec, workers: int) -> AsyncIterator[Executor]:
    """The executor *spec* names, for one node's run: a named one is made and closed here."""
    if not isinstance(spec, str):
        yield as_executor(spec)
        return
    executor = _NAMED[spec](workers)
    try:
        yield executor
    finally:
        close: Any = getattr(executor, "aclose", None)
        if close is not None:
            await close()
        else:
            executor.close()  # type: ignore[attr-defined]


def collect_outputs(fn: Callable[[Any], Iterable[Any]], item: Any) -> list[Any]:
    """Run a generator function to the end where it runs (a process, a cluster)."""
    return list(fn(item))


def collecting(fn: Callable[[Any], Iterable[Any]]) -> Callable[[Any], list[Any]]:
    """*fn* as a function returning a list of its outputs; picklable if *fn* is."""
    return functools.partial(collect_outputs, fn)


@final
class FuturesExecutor:
    """A ``concurrent.futures.Executor`` as a flowgraph executor.

    Each call is ``executor.submit(fn, item)``; its completion wakes the event
    loop through the run's inbox (no thread waits per call). Cancelling a call
    cancels the future if it has not started; one already running is abandoned.
    The executor is not shut down here: it belongs to the caller.
    """

    def __init__(self, executor: concurrent.futures.Executor) -> None:
        self.executor = executor

    def __repr__(self) -> str:
        return f"FuturesExecutor({self.executor!r})"

    def check(self, fn: Callable[..., Any], *, node: str) -> None:
        """Nothing to check in advance: the pool reports what it cannot run per call."""

    @asynccontextmanager
    async def bind(
        self, fn: Callable[[Any], Any], *, node: str, workers: int
    ) -> AsyncIterator[BoundFutures]:
        bound = BoundFutures(self.executor.submit, fn, node)
        try:
            yield bound
        finally:
            await bound.wait_idle()


@final
class BoundFutures:
    """Calls submitted as futures, awaited through a :class:`LoopInbox`.

    Also the base of cluster executors whose calls return
    ``concurrent.futures.Future``-like objects (``add_done_callback``,
    ``cancel``, ``result``).
    """

    def __init__(self, submit: Callable[..., Any], fn: Callable[[Any], Any], node: str) -> None:
        self.submit = submit
        self.fn = fn
        self.node = node
        self.inbox = LoopInbox()
        self.abandoned = 0
        self._outstanding = 0
        self._idle = anyio.Event()
        self._idle.set()

    async def __call__(self, item: Any) -> Any:
        future = self.submit(self.fn, item)
        done = anyio.Event()
        self._started()
        future.add_done_callback(lambda _: self.inbox.put(done.set))
        try:
            await done.wait()
        except BaseException:
            if not future.cancel():
                self.abandoned += 1
                future.add_done_callback(lambda _: self.inbox.put(self._abandoned_done))
            self._finished()
            raise
        self._finished()
        return future.result()

    def _started(self) -> None:
        if not self._outstanding:
            self._idle = anyio.Event()
        self._outstanding += 1

    def _finished(self) -> None:
        self._outstanding -= 1
        if not self._outstanding and not self.abandoned:
            self._idle.set()

    def _abandoned_done(self) -> None:
        self.abandoned -= 1
        if not self._outstanding and not self.abandoned:
            self._idle.set()

    async def wait_idle(self) -> None:
        """Wait up to a second for abandoned calls to end; say how many are left behind."""
        with anyio.move_on_after(ABANDON_AFTER, shield=True):
            await self._idle.wait()
        if self.abandoned:
            logger.warning(
                "node %r: abandoning %d call(s) still running after %gs",
                self.node,
                self.abandoned,
                ABANDON_AFTER,
            )


def loop_inbox() -> LoopInbox:
    """A new inbox for the current event loop (for executors outside the engine)."""
    return LoopInbox()
