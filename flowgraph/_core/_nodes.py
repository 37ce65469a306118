"""Nodes: one user function with its kind, calling convention and options.

A node is declared once and inert: it holds what the function is (async or
sync, plain or generator, found once here) and the options in effect, checked
when it is declared. How the engine calls it is ``_calls``'s job.
"""

from __future__ import annotations

import enum
import functools
import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Literal, ParamSpec, TypeVar, final

from ._exceptions import GraphError, describe_item
from ._executor import check_function
from ._functions import fn_kind
from ._options import (
    DEFAULTS,
    SOURCE_OPTIONS,
    TRANSFORM_OPTIONS,
    OnError,
    check_names,
    check_option,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterable, Callable, Hashable, Iterable

    from ._batch import Batch
    from ._executor import ExecutorSpec
    from ._graph import Graph
    from ._policy import Policy, Timeout

P = ParamSpec("P")
R = TypeVar("R")


class NodeKind(enum.Enum):
    """The role of a node in a graph."""

    #: Produces items; has no upstream.
    SOURCE = "source"
    #: Turns each input item into zero, one or many output items.
    TRANSFORM = "transform"
    #: Consumes items; has no downstream.
    SINK = "sink"


def fn_name(fn: object) -> str:
    """The default node name: the function's ``__name__``, through ``functools.partial``,
    or the class name of a callable object."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    name = getattr(fn, "__name__", None)
    if name is None and callable(fn) and not inspect.isroutine(fn):
        name = type(fn).__name__
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
    stay usable (and testable) on their own. ``options`` holds every option in
    effect (the node's own, else its graph's defaults, else flowgraph's).
    """

    __slots__ = (
        "batch",
        "buffer",
        "checkpoint",
        "executor",
        "fn",
        "fn_kind",
        "graph",
        "idempotent",
        "inline",
        "key",
        "kind",
        "limit",
        "max_in_flight",
        "name",
        "on_error",
        "options",
        "ordered",
        "rate",
        "retry",
        "timeout",
        "workers",
    )

    batch: Batch | None
    buffer: int
    checkpoint: bool
    executor: ExecutorSpec | None
    idempotent: bool
    inline: bool
    key: Callable[[Any], Hashable] | None
    limit: Policy | None
    max_in_flight: int
    on_error: OnError
    ordered: bool | Literal["key"]
    rate: Policy | None
    retry: Policy | None
    timeout: Timeout | None
    workers: int

    def __init__(
        self,
        fn: Callable[P, R],
        *,
        graph: Graph,
        kind: NodeKind,
        name: str | None = None,
        **options: Any,
    ) -> None:
        self.fn = fn
        self.graph = graph
        self.kind = kind
        self.name = name if name is not None else fn_name(fn)
        self.fn_kind = fn_kind(fn)
        label = f"{kind.value} {self.name!r}"
        known = SOURCE_OPTIONS if kind is NodeKind.SOURCE else TRANSFORM_OPTIONS
        check_names(f"{label} has no option", options, known - {"name"})
        self.options = {k: options.get(k, DEFAULTS[k]) for k in known if k != "name"}
        for option in DEFAULTS:
            value = self.options.get(option, DEFAULTS[option])
            setattr(self, option, check_option(label, option, value))
        self._check_function(label)

    def _check_function(self, label: str) -> None:
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
        if self.fn_kind.is_async and self.executor not in (None, "loop"):
            raise GraphError(
                f"{label} is an {self.fn_kind.value} function, which runs on the event loop: "
                f"executor={self.executor!r} is for sync functions; drop it"
            )
        if self.inline and self.executor not in (None, "loop"):
            raise GraphError(
                f"{label} has inline=True (run on the event loop) and executor="
                f"{self.executor!r}: choose one"
            )
        if (self.ordered == "key") != (self.key is not None):
            raise GraphError(
                f"{label}: ordered='key' and key= go together (key= says what the order is per)"
            )
        if self.ordered == "key" and self.batch is not None:
            raise GraphError(f"{label}: ordered='key' keeps items apart; it cannot have batch=")
        if self.executor is not None:
            check_function(self.executor, self.fn, node=self.name)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    def copy_to(self, graph: Graph, **changes: Any) -> Node[P, R]:
        """Declare the same node, with the same options in effect, in *graph*; *changes* win."""
        options = {**self.options, **changes}
        return Node(self.fn, graph=graph, kind=self.kind, name=self.name, **options)

    def __repr__(self) -> str:
        return f"<{self.kind.value} {self.name!r} of graph {self.graph.name!r}>"

    @property
    def runs_on_loop(self) -> bool:
        """Whether the function is called on the event loop (async, inline, ``"loop"``)."""
        return self.fn_kind.is_async or self.inline or self.executor == "loop"

    @property
    def policies(self) -> tuple[Policy, ...]:
        """The node's policies, outermost first: the timeout bounds every attempt
        together, each retry attempt waits for a concurrency slot, then rate budget."""
        chain = (self.timeout, self.retry, self.limit, self.rate)
        return tuple(p for p in chain if p is not None)


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
