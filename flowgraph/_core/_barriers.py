"""Barriers: call a function once per run, when every one of a set of nodes has finished.

``@graph.after(a, b, c)`` is the chord of task queues ("when these three
steps have all finished, merge") as part of the graph: the function runs in
the run's task group, once all of *a*, *b* and *c* have drained their input,
with their final statistics. It is part of the run, unlike a hook: the run
waits for it, and its error fails the run as a :class:`NodeError` naming the
barrier. A run that fails or is cancelled before the nodes finish never
calls it; a graceful stop does, once the nodes have drained.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, final

import anyio
import anyio.lowlevel
import anyio.to_thread

from ._exceptions import GraphError, NodeError, describe_error
from ._functions import FnKind, fn_kind
from ._threads import run_sync_in_thread

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from ._events import NodeFinished
    from ._run import Run
    from ._stats import NodeStatistics


@final
@dataclass(frozen=True, slots=True)
class Barrier:
    """A function a run calls once, when every node in *nodes* has finished.

    Declared with :meth:`Graph.after`. Attributes: *name* (in errors), *nodes*
    (names, in the order given) and *fn*, which takes ``{node name:
    NodeStatistics}``; an async *fn* runs on the event loop, a sync one in a
    worker thread.
    """

    name: str
    nodes: tuple[str, ...]
    fn: Callable[[Mapping[str, NodeStatistics]], Any]

    def __post_init__(self) -> None:
        label = f"barrier {self.name!r}"
        if not callable(self.fn):
            raise GraphError(f"{label} must be a function (got {self.fn!r})")
        if fn_kind(self.fn) in (FnKind.ASYNC_GEN, FnKind.SYNC_GEN):
            raise GraphError(f"{label} must be a plain function, not a generator")
        try:
            inspect.signature(self.fn).bind({})
        except TypeError:
            raise GraphError(
                f"{label} must take one argument: the statistics of its nodes by name"
            ) from None
        except ValueError:  # pragma: no cover - builtins without a signature
            pass

    def describe(self) -> str:
        """``barrier 'merge' (after 'a', 'b')``, for messages."""
        return f"barrier {self.name!r} (after {', '.join(map(repr, self.nodes))})"


class BarrierRun:
    """One barrier in one run: counts its nodes as they finish, then calls the function."""

    def __init__(self, barrier: Barrier, run: Run) -> None:
        self.barrier = barrier
        self.run = run
        self.left = set(barrier.nodes)
        self.ready = anyio.Event()

    def node_finished(self, event: NodeFinished) -> None:
        """The run's own ``NodeFinished`` hook."""
        self.left.discard(event.node)
        if not self.left:
            self.ready.set()

    async def wait_and_call(self) -> None:
        """Wait until every node has finished, then call the function once.

        Raises:
            NodeError: naming the barrier, if the function raised; the run fails.
        """
        await self.ready.wait()
        # A node that fails finishes too, a moment before its error cancels the run:
        # this checkpoint lets that cancellation arrive before the barrier does anything.
        await anyio.lowlevel.checkpoint()
        barrier = self.barrier
        nodes = self.run.statistics().nodes
        statistics = {name: nodes[name] for name in barrier.nodes}
        try:
            if fn_kind(barrier.fn) is FnKind.ASYNC:
                await barrier.fn(statistics)
            else:
                await run_sync_in_thread(barrier.fn, statistics)
        except Exception as exc:
            raise NodeError(
                barrier.name,
                None,
                cause=describe_error(exc),
                where=f"{barrier.describe()} failed",
            ) from exc
        finally:
            self.run.node_finished()
