"""The small protocol through which policies (retry, rate, errors...) reach the engine.

The engine builds each node's *call* once per run: the node's function adapted
to ``async (item) -> outputs``, then wrapped by each of the node's policies in
order, so the first policy listed is the outermost. The per-item loop only ever
awaits the finished call; policies cost nothing on nodes that do not use them.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

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
    engine can report the attempt count.
    """

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
