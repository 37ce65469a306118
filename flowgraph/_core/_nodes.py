"""Node kinds, their options, and the adapters that turn any user function into one call shape.

A node wraps one user function. Whatever its flavour (async or sync, plain or
generator), the engine sees the same thing at run time: ``await call(item)``
returning the node's output, plus a flag saying whether that output is one item
or an iterable of items to emit one by one.
"""

from __future__ import annotations

import enum
import functools
import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Literal, ParamSpec, TypeVar, final

from ._exceptions import GraphError, describe_item
from ._policy import FailureHandler, Policy, Timeout
from ._validate import to_seconds

if TYPE_CHECKING:
    from collections.abc import AsyncIterable, Callable, Iterable
    from datetime import timedelta

    from ._graph import Graph

P = ParamSpec("P")
R = TypeVar("R")

OnError = Literal["raise", "skip", "dead_letter"] | FailureHandler
"""What a node does with an item whose function still fails after its policies gave up."""

DEFAULT_BUFFER = 16
DEFAULT_MAX_IN_FLIGHT = 1000


class NodeKind(enum.Enum):
    """The role of a node in a graph."""

    #: Produces items; has no upstream.
    SOURCE = "source"
    #: Turns each input item into zero, one or many output items.
    TRANSFORM = "transform"
    #: Consumes items; has no downstream.
    SINK = "sink"


class FnKind(enum.Enum):
    """The calling convention of a user function, found once at declaration."""

    #: ``async def f(x)``: awaited; its return value is one output.
    ASYNC = "async"
    #: ``async def f(x): yield ...``: each yielded value is an output.
    ASYNC_GEN = "async generator"
    #: ``def f(x)``: run in a worker thread (or inline); its return value is one output.
    SYNC = "sync"
    #: ``def f(x): yield ...``: run in a worker thread; each yielded value is an output.
    SYNC_GEN = "sync generator"

    @property
    def is_async(self) -> bool:
        return self in (FnKind.ASYNC, FnKind.ASYNC_GEN)


def fn_kind(fn: Callable[..., Any]) -> FnKind:
    """Classify *fn*, looking through ``functools.partial`` and callable objects."""
    target: Any = fn
    while isinstance(target, functools.partial):
        target = target.func
    if not inspect.isroutine(target) and not inspect.isclass(target) and callable(target):
        target = type(target).__call__
    if inspect.isasyncgenfunction(target):
        return FnKind.ASYNC_GEN
    if inspect.iscoroutinefunction(target):
        return FnKind.ASYNC
    if inspect.isgeneratorfunction(target):
        return FnKind.SYNC_GEN
    return FnKind.SYNC


def fn_name(fn: object) -> str:
    name = getattr(fn, "__name__", None)
    if isinstance(name, str) and name.isidentifier():
        return name
    raise GraphError(f"cannot name the node for {fn!r}: pass name=")


@final
@dataclass(slots=True)
class Positioned:
    """An item from a checkpointed source, with the position to resume after it.

    The position is any JSON value: an offset, a cursor, a timestamp, a dict.
    On restart the source is called with the last committed position and should
    produce the items *after* it. Not frozen: a source makes one per item, and
    a frozen dataclass takes twice as long to make.
    """

    item: Any
    position: Any


@final
class Node(Generic[P, R]):
    """One function in a graph, with the options that say how it runs.

    Created by :meth:`Graph.source`, :meth:`Graph.transform` and :meth:`Graph.sink`;
    calling the node calls the wrapped function unchanged, so decorated functions
    stay usable (and testable) on their own.
    """

    __slots__ = (
        "buffer",
        "checkpoint",
        "fn",
        "fn_kind",
        "graph",
        "inline",
        "kind",
        "limit",
        "max_in_flight",
        "name",
        "on_error",
        "ordered",
        "rate",
        "retry",
        "timeout",
        "workers",
    )

    def __init__(
        self,
        fn: Callable[P, R],
        *,
        graph: Graph,
        kind: NodeKind,
        name: str | None = None,
        workers: int = 1,
        buffer: int = DEFAULT_BUFFER,
        ordered: bool = False,
        inline: bool = False,
        retry: Policy | None = None,
        rate: Policy | None = None,
        limit: Policy | None = None,
        timeout: float | timedelta | None = None,
        on_error: OnError = "raise",
        checkpoint: bool = False,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    ) -> None:
        self.fn = fn
        self.graph = graph
        self.kind = kind
        self.name = name if name is not None else fn_name(fn)
        self.fn_kind = fn_kind(fn)
        self.workers = workers
        self.buffer = buffer
        self.ordered = ordered
        self.inline = inline
        self.retry = retry
        self.rate = rate
        self.limit = limit
        self.timeout = (
            None
            if timeout is None
            else Timeout(to_seconds(f"timeout of {kind.value} {self.name!r}", timeout))
        )
        self.on_error = on_error
        self.checkpoint = checkpoint
        self.max_in_flight = max_in_flight
        self._validate()

    def _validate(self) -> None:
        label = f"{self.kind.value} {self.name!r}"
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1:
            raise GraphError(f"workers of {label} must be an int >= 1 (got {self.workers!r})")
        if isinstance(self.buffer, bool) or not isinstance(self.buffer, int) or self.buffer < 0:
            raise GraphError(f"buffer of {label} must be an int >= 0 (got {self.buffer!r})")
        if (
            isinstance(self.max_in_flight, bool)
            or not isinstance(self.max_in_flight, int)
            or self.max_in_flight < 1
        ):
            raise GraphError(
                f"max_in_flight of {label} must be an int >= 1 (got {self.max_in_flight!r})"
            )
        if self.checkpoint and not _accepts(self.fn, None):
            raise GraphError(
                f"checkpointed {label} must accept one argument, the position to resume "
                "after (None on the first run)"
            )
        if self.kind is NodeKind.SOURCE and not self.checkpoint and not _accepts(self.fn):
            raise GraphError(
                f"{label} needs an argument, but only checkpointed sources get one: declare "
                "it with checkpoint=True to be handed the position to resume after"
            )
        if self.inline and self.fn_kind.is_async:
            raise GraphError(
                f"inline=True runs a sync function on the event loop, but {label} is an "
                f"{self.fn_kind.value} function; drop inline=True"
            )
        for option in ("retry", "rate", "limit"):
            check_slot(f"{option}= of {label}", option, getattr(self, option))
        if self.on_error not in ("raise", "skip", "dead_letter") and not isinstance(
            self.on_error, FailureHandler
        ):
            raise GraphError(
                f"on_error of {label} must be 'raise', 'skip', 'dead_letter' or an object "
                f"with an async handle(failure) method (got {self.on_error!r})"
            )

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    def copy_to(self, graph: Graph, **changes: Any) -> Node[P, R]:
        """Declare the same node in *graph*, with some options changed."""
        options: dict[str, Any] = {
            "kind": self.kind,
            "name": self.name,
            "workers": self.workers,
            "buffer": self.buffer,
            "ordered": self.ordered,
            "inline": self.inline,
            "retry": self.retry,
            "rate": self.rate,
            "limit": self.limit,
            "timeout": None if self.timeout is None else self.timeout.seconds,
            "on_error": self.on_error,
        }
        if self.kind is NodeKind.SOURCE:
            options = {
                "kind": self.kind,
                "name": self.name,
                "checkpoint": self.checkpoint,
                "max_in_flight": self.max_in_flight,
            }
        return Node(self.fn, graph=graph, **{**options, **changes})

    def __repr__(self) -> str:
        return f"<{self.kind.value} {self.name!r} of graph {self.graph.name!r}>"

    @property
    def policies(self) -> tuple[Policy, ...]:
        """The node's policies, outermost first: the timeout bounds every attempt
        together, each retry attempt waits for a concurrency slot, then rate budget."""
        chain = (self.timeout, self.retry, self.limit, self.rate)
        return tuple(p for p in chain if p is not None)


_EXAMPLES = {
    "retry": "fg.Retry(attempts=5)",
    "rate": "fg.Rate(10, per=1.0)",
    "limit": "fg.Limit(4)",
}


def check_slot(where: str, slot: str, value: object) -> None:
    """Refuse *value* for the node option *slot* unless it is a policy that fills that slot."""
    if value is None:
        return
    if not isinstance(value, Policy):
        raise GraphError(f"{where} must be a policy such as {_EXAMPLES[slot]} (got {value!r})")
    if value.slot != slot:
        raise GraphError(
            f"{where} got {value!r}, which is a {value.slot} policy: pass it as {value.slot}="
        )


def _accepts(fn: Callable[..., Any], *args: Any) -> bool:
    """Whether *fn* can be called with *args*, as far as its signature says."""
    try:
        inspect.signature(fn).bind(*args)
    except TypeError:
        return False
    except ValueError:  # pragma: no cover - builtins without a signature
        return True
    return True


@final
class Collection:
    """The source function of an iterable given directly to ``Graph.source``.

    Calling it returns the iterable; the engine reads a collection on the event
    loop, and ``len()`` of the source (for progress) is that of the collection.
    """

    __slots__ = ("items",)

    def __init__(self, items: Iterable[Any] | AsyncIterable[Any]) -> None:
        self.items = items

    def __call__(self) -> Iterable[Any] | AsyncIterable[Any]:
        return self.items

    def __repr__(self) -> str:
        return f"Collection({describe_item(self.items)})"
