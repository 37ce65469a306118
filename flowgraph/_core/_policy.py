"""The small protocol through which policies (retry, rate, errors...) reach the engine.

The engine builds each node's *call* once per run: the node's function adapted
to ``async (item) -> outputs``, then wrapped by each of the node's policies in
the fixed order of ``Node.policies`` (timeout, retry, limit, rate; the first
outermost). The per-item loop only ever awaits the finished call; policies cost
nothing on nodes that do not use them. Timeouts use :class:`bounded`, whose
deadlines pause while a call waits for room downstream.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, final, runtime_checkable

import anyio

from ._validate import to_seconds

if TYPE_CHECKING:
    from datetime import timedelta
    from types import TracebackType

Call = Callable[[Any], Awaitable[Any]]
"""One invocation of a node on one item: ``await call(item)`` returns its output(s)."""


class NodeCounters(Protocol):
    """The mutable counters of one node that policies may bump."""

    retries: int


class NodeContext(Protocol):
    """What a policy may know about the node it wraps."""

    @property
    def name(self) -> str: ...

    @property
    def counters(self) -> NodeCounters: ...


@runtime_checkable
class Policy(Protocol):
    """A per-node behaviour that wraps the node's call (retry, rate limit, timeout...).

    ``wrap`` runs once per node per run, never per item. A wrapper that gives up
    after several attempts raises ``AttemptsExhausted(error, attempts)`` so the
    engine can report the attempt count. ``slot`` names the node option the
    policy fills (``"retry"``, ``"rate"``, ``"limit"``), so a policy given to
    another option is refused at declaration instead of silently reordered.
    """

    @property
    def slot(self) -> str: ...

    def wrap(self, call: Call, node: NodeContext) -> Call: ...


@dataclass(frozen=True, slots=True)
class Failure:
    """An item that a node could not process, as handed to a failure handler."""

    node: str
    item: Any
    error: BaseException
    attempts: int
    graph: str = ""
    run_id: str = ""
    time: float = field(default_factory=time.time)  # wall-clock seconds since the epoch


@runtime_checkable
class FailureHandler(Protocol):
    """Where an item goes when its node gives up on it (``on_error=``).

    If ``handle`` returns, the item counts as handled and the run goes on; if it
    raises, the run fails with that error.
    """

    async def handle(self, failure: Failure) -> None: ...


_CURRENT_NODE: ContextVar[NodeContext | None] = ContextVar("flowgraph_node", default=None)


def current_node() -> NodeContext | None:
    """The node whose worker is running the current task (``None`` elsewhere).

    Helpers that run inside a node's function (``flowgraph.http.paginate``)
    use it to count their retries on that node.
    """
    return _CURRENT_NODE.get()


def enter_node(node: NodeContext) -> None:
    """Mark the current task as a worker of *node*; the engine calls it once per worker."""
    _CURRENT_NODE.set(node)


_DEADLINES: ContextVar[tuple[anyio.CancelScope, ...]] = ContextVar(
    "flowgraph_deadlines", default=()
)
"""The deadline scopes bounding the call that the current task is making."""


@final
class bounded:
    """``anyio.move_on_after(seconds)`` for a node's call, pausable by :func:`wait_downstream`.

    Timeouts use it, so that the time a call spends waiting for room downstream
    (a generator node whose outputs back up) is not counted against them.
    """

    __slots__ = ("_scope", "_token")

    def __init__(self, seconds: float) -> None:
        self._scope = anyio.move_on_after(seconds)

    def __enter__(self) -> anyio.CancelScope:
        scope = self._scope.__enter__()
        self._token = _DEADLINES.set((*_DEADLINES.get(), scope))
        return scope

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        _DEADLINES.reset(self._token)
        return bool(self._scope.__exit__(exc_type, exc, tb))


async def wait_downstream(waiting: Awaitable[None]) -> None:
    """Await a delivery held up by a full stream, with the call's deadlines paused meanwhile.

    Backpressure is not work: a generator node that waits for room downstream
    gets the waited time added back to every deadline bounding its call.
    """
    scopes = _DEADLINES.get()
    if not scopes:
        await waiting
        return
    deadlines = [scope.deadline for scope in scopes]
    started = anyio.current_time()
    for scope in scopes:
        scope.deadline = math.inf
    try:
        await waiting
    finally:
        waited = anyio.current_time() - started
        for scope, deadline in zip(scopes, deadlines, strict=True):
            scope.deadline = deadline + waited


@final
class PausedDeadlines:
    """The current task's deadlines, held still until :meth:`resume`, then moved on by the wait.

    A call queued for a busy worker thread is not yet working: its timeout
    starts counting when a thread takes it.
    """

    __slots__ = ("_deadlines", "_scopes", "_since")

    def __init__(self, scopes: tuple[anyio.CancelScope, ...]) -> None:
        self._scopes = scopes
        self._deadlines = [scope.deadline for scope in scopes]
        self._since = anyio.current_time()
        for scope in scopes:
            scope.deadline = math.inf

    @classmethod
    def pause(cls) -> PausedDeadlines | None:
        """Hold the current task's deadlines still; ``None`` if it has none."""
        scopes = _DEADLINES.get()
        return cls(scopes) if scopes else None

    def resume(self) -> None:
        """On the event loop: let the deadlines run again, later by the time they were held."""
        waited = anyio.current_time() - self._since
        for scope, deadline in zip(self._scopes, self._deadlines, strict=True):
            scope.deadline = deadline + waited


@final
@dataclass(frozen=True, init=False, repr=False, slots=True)
class Timeout:
    """Fail an item that takes longer than *seconds*, cancelling its call.

    A node's ``timeout=`` is the outermost of its policies (``Node.policies``):
    it bounds the whole item, every retry and backoff included, while
    ``Retry(attempt_timeout=)`` bounds each attempt. An overrun cancels the call
    and raises ``TimeoutError`` naming the node, which an enclosing ``Retry``
    retries like any other ``Exception``. Cancellation from outside propagates.
    A call running in a thread or process is abandoned at its deadline (see
    the executors); time spent waiting for room downstream does not count.

    Args:
        seconds: the time allowed.

    Raises:
        GraphError: if *seconds* is not > 0.

    Added in 0.1.
    """

    seconds: float
    slot: ClassVar[str] = "timeout"

    def __init__(self, seconds: float | timedelta) -> None:
        object.__setattr__(self, "seconds", to_seconds("seconds", seconds))

    def __repr__(self) -> str:
        return f"Timeout({self.seconds!r})"

    def wrap(self, call: Call, node: NodeContext) -> Call:
        """Return *call* bounded by this timeout."""
        seconds = self.seconds
        message = f"node {node.name!r} timed out after {seconds:g} s"

        async def timed(item: Any) -> Any:
            with bounded(seconds):
                return await call(item)
            raise TimeoutError(message)

        return timed
