"""Lifecycle events and their hooks, dispatched so that side work can never break a run.

A hook is a sync or async callable taking one event. Register it with
``@graph.on(fg.ItemFailed)`` or ``open_run(graph, hooks=[(fg.ItemFailed, fn)])``.
Sync hooks are called on the event loop and should be quick. Async hooks run
as tasks in the run's task group, so the run waits for them before it returns
and cancels them if it fails. An exception raised by a hook is logged on the
``flowgraph.hooks`` logger and goes no further.
"""

from __future__ import annotations

import inspect
import logging
import warnings
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, TypeVar

from ._exceptions import GraphError

if TYPE_CHECKING:
    from ._policy import Failure
    from ._run import Run, RunResult
    from ._stats import NodeStatistics

logger = logging.getLogger("flowgraph.hooks")


@dataclass(frozen=True, slots=True)
class RunStarted:
    """A run has wired its nodes and is about to start them."""

    run: Run


@dataclass(frozen=True, slots=True)
class RunFinished:
    """A run has ended; ``error`` is set if it failed or was cancelled.

    Hooks for this event run after the run's task group has closed: async ones
    are awaited in turn, and cannot start side work in the run any more.
    """

    run: Run
    result: RunResult | None
    error: BaseException | None


@dataclass(frozen=True, slots=True)
class NodeStarted:
    """A node's workers are starting."""

    run: Run
    node: str


@dataclass(frozen=True, slots=True)
class NodeFinished:
    """Every worker of a node has finished its input."""

    run: Run
    node: str
    statistics: NodeStatistics

    @property
    def stats(self) -> NodeStatistics:
        """Deprecated name of :attr:`statistics`."""
        warnings.warn(
            "NodeFinished.stats is now NodeFinished.statistics", DeprecationWarning, stacklevel=2
        )
        return self.statistics


@dataclass(frozen=True, slots=True)
class ItemFailed:
    """A node gave up on an item; ``action`` says what its ``on_error`` policy does next."""

    run: Run
    failure: Failure
    action: Literal["raise", "skip", "dead_letter"]


@dataclass(frozen=True, slots=True)
class ItemDeadLettered:
    """A failed item was handed to the dead-letter store."""

    run: Run
    failure: Failure


@dataclass(frozen=True, slots=True)
class CheckpointCommitted:
    """The checkpoint store recorded new positions for some sources."""

    run: Run
    positions: Mapping[str, Any] = field(default_factory=dict)


Event: TypeAlias = (
    RunStarted
    | RunFinished
    | NodeStarted
    | NodeFinished
    | ItemFailed
    | ItemDeadLettered
    | CheckpointCommitted
)
EVENT_TYPES: tuple[type[Event], ...] = (
    RunStarted,
    RunFinished,
    NodeStarted,
    NodeFinished,
    ItemFailed,
    ItemDeadLettered,
    CheckpointCommitted,
)
E = TypeVar("E", bound=Event)
Hook = Callable[[E], Awaitable[None] | None]
HookTable = dict[type[Event], list[Callable[[Any], Any]]]


def add_hook(table: HookTable, event_type: type[Any], hook: Callable[[Any], Any]) -> None:
    """Register *hook* for *event_type*, refusing what could never be called."""
    if event_type not in EVENT_TYPES:
        names = ", ".join(t.__name__ for t in EVENT_TYPES)
        raise GraphError(f"cannot hook {event_type!r}: events are {names}")
    if not callable(hook):
        raise GraphError(f"a hook must be callable (got {hook!r})")
    table.setdefault(event_type, []).append(hook)


async def call_isolated(hook: Callable[[Any], Any], event: Event) -> None:
    """Call *hook*; log whatever it raises, except cancellation, which must propagate."""
    try:
        outcome = hook(event)
        if inspect.isawaitable(outcome):
            await outcome
    except Exception:
        logger.exception("hook %r failed on %s", hook, type(event).__name__)


def call_sync_isolated(hook: Callable[[Any], Any], event: Event) -> None:
    try:
        hook(event)
    except Exception:
        logger.exception("hook %r failed on %s", hook, type(event).__name__)


def is_async(hook: Callable[[Any], Any]) -> bool:
    target = hook if inspect.isroutine(hook) else type(hook).__call__
    return inspect.iscoroutinefunction(target)
