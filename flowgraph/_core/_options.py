"""The options of nodes and runs: one typed definition each, one check per option.

``Graph.source``, ``Graph.transform`` and ``Graph.sink`` take their keyword
options as the TypedDicts below, so type checkers see every option and its
type, and a graph can set defaults for its nodes (``fg.Graph("g", buffer=100,
retry=fg.Retry())``) with the same names. At run time every option passes
through :func:`check_option`: an unknown name is refused with the nearest valid
one, a bad value with a message naming the node and what is allowed.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from datetime import timedelta  # noqa: TC003 - typing.get_type_hints resolves the TypedDicts
from typing import TYPE_CHECKING, Any, Final, Literal, TypedDict

from ._acks import CheckpointStore
from ._batch import Batch, check_batch
from ._events import Event
from ._exceptions import GraphError
from ._executor import ExecutorSpec, check_executor
from ._functions import FnKind, fn_kind
from ._policy import FailureHandler, Policy, Timeout
from ._validate import int_at_least, to_seconds, unknown_name

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ._graph import Graph

OnError = Literal["raise", "skip", "dead_letter"] | FailureHandler
"""What a node does with an item whose function still fails after its policies gave up."""

DEFAULT_BUFFER: Final = 16
DEFAULT_MAX_IN_FLIGHT: Final = 1000


class TransformOptions(TypedDict, total=False):
    """The options of ``Graph.transform`` and ``Graph.sink``; see :meth:`Graph.transform`."""

    name: str
    workers: int
    buffer: int
    ordered: bool | Literal["key"]
    key: Callable[[Any], Hashable] | None
    batch: Batch | int | None
    inline: bool
    executor: ExecutorSpec | None
    idempotent: bool
    retry: Policy | None
    rate: Policy | None
    limit: Policy | None
    timeout: float | timedelta | None
    on_error: OnError


class SourceOptions(TypedDict, total=False):
    """The options of ``Graph.source``; see :meth:`Graph.source`."""

    name: str
    checkpoint: bool
    max_in_flight: int
    retry: Policy | None
    rate: Policy | None
    timeout: float | timedelta | None
    on_error: OnError
    idempotent: bool


class GraphDefaults(TypedDict, total=False):
    """Defaults for every node of a graph: ``fg.Graph("g", buffer=100, workers=4)``.

    Each applies to the nodes that take that option and do not set it themselves.
    A policy object given as a default is one budget shared by every node (a
    ``Rate`` default limits the graph's nodes together).
    """

    workers: int
    buffer: int
    ordered: bool
    inline: bool
    executor: ExecutorSpec | None
    retry: Policy | None
    rate: Policy | None
    limit: Policy | None
    timeout: float | timedelta | None
    on_error: OnError
    max_in_flight: int


DEFAULTS: Final[Mapping[str, Any]] = {
    "workers": 1,
    "buffer": DEFAULT_BUFFER,
    "ordered": False,
    "key": None,
    "batch": None,
    "inline": False,
    "executor": None,
    "idempotent": False,
    "retry": None,
    "rate": None,
    "limit": None,
    "timeout": None,
    "on_error": "raise",
    "checkpoint": False,
    "max_in_flight": DEFAULT_MAX_IN_FLIGHT,
}
"""The value of every node option that neither the node nor its graph sets."""

TRANSFORM_OPTIONS: Final = frozenset(TransformOptions.__optional_keys__)
SOURCE_OPTIONS: Final = frozenset(SourceOptions.__optional_keys__)
GRAPH_DEFAULTS: Final = frozenset(GraphDefaults.__optional_keys__)

_POLICY_EXAMPLES: Final = {
    "retry": "fg.Retry(attempts=5)",
    "rate": "fg.Rate(10, per=1.0)",
    "limit": "fg.Limit(4)",
}


def check_slot(where: str, slot: str, value: object) -> None:
    """Refuse *value* for the option *slot* unless it is a policy that fills that slot."""
    if value is None:
        return
    if not isinstance(value, Policy):
        example = _POLICY_EXAMPLES[slot]
        raise GraphError(f"{where} must be a policy such as {example} (got {value!r})")
    if value.slot != slot:
        raise GraphError(
            f"{where} got {value!r}, which is a {value.slot} policy: pass it as {value.slot}="
        )


def _flag(where: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise GraphError(f"{where} must be True or False (got {value!r})")
    return value


def check_key(where: str, value: object) -> Callable[[Any], Hashable] | None:
    """``key=`` takes a plain sync function of the item."""
    if value is None:
        return None
    if not callable(value) or fn_kind(value) is not FnKind.SYNC:
        raise GraphError(f"{where} must be a plain sync function returning the item's key")
    return value


def _ordered(where: str, value: object) -> bool | Literal["key"]:
    if value == "key" or isinstance(value, bool):
        return value
    raise GraphError(f"{where} must be True, False or 'key' (got {value!r})")


def _on_error(where: str, value: object) -> OnError:
    if value in ("raise", "skip", "dead_letter") or isinstance(value, FailureHandler):
        return value
    raise GraphError(
        f"{where} must be 'raise', 'skip', 'dead_letter' or an object with an async "
        f"handle(failure) method (got {value!r})"
    )


def _timeout(where: str, value: object) -> Timeout | None:
    return None if value is None else Timeout(to_seconds(where, value))  # type: ignore[arg-type]


def _policy(slot: str) -> Callable[[str, object], object]:
    def check(where: str, value: object) -> object:
        check_slot(where, slot, value)
        return value

    return check


_CHECKS: Final[dict[str, Callable[[str, Any], Any]]] = {
    "workers": lambda where, value: int_at_least(where, value, 1),
    "buffer": lambda where, value: int_at_least(where, value, 0),
    "max_in_flight": lambda where, value: int_at_least(where, value, 1),
    "ordered": _ordered,
    "key": check_key,
    "batch": check_batch,
    "inline": _flag,
    "idempotent": _flag,
    "checkpoint": _flag,
    "executor": lambda where, value: None if value is None else check_executor(where, value),
    "retry": _policy("retry"),
    "rate": _policy("rate"),
    "limit": _policy("limit"),
    "timeout": _timeout,
    "on_error": _on_error,
}


def check_option(label: str, option: str, value: Any) -> Any:
    """Return *value* checked (and normalised: a timeout becomes a ``Timeout``) for *option*.

    *label* names the owner in messages: ``"transform 'fetch'"``, ``"graph 'g'"``.
    """
    where = f"{option}= of {label}" if option in _POLICY_EXAMPLES else f"{option} of {label}"
    return _CHECKS[option](where, value)


def check_names(missing: str, given: Iterable[str], known: frozenset[str]) -> None:
    """Refuse option names not in *known*, suggesting the nearest valid one.

    *missing* starts the message: ``"transform 'fetch' has no option"``.
    """
    for name in given:
        if name not in known:
            raise unknown_name(missing, name, known)


HookSpec = tuple[type[Event], Callable[[Any], Any]]
"""A hook for a run: ``(event type, sync or async callable taking the event)``."""


class RunOptions(TypedDict, total=False):
    """The options of :func:`open_run`, ``Graph.run`` and :func:`flowgraph.run`.

    Attributes:
        dead_letters: where ``on_error="dead_letter"`` nodes send failed items,
            such as ``fg.DeadLetters("sqlite:///state.db")``. If it is an async
            context manager, the run opens it for its duration.
        checkpoints: where checkpointed sources load their resume positions and
            the run commits them, such as ``fg.Checkpoints("sqlite:///state.db")``.
            Opened for the run's duration if it is an async context manager.
        hooks: ``(event type, hook)`` pairs, added to the graph's own hooks.
        log_interval: log one line per node every this many seconds (``None``: never).
            A summary line per node is logged at the end of every run.
    """

    dead_letters: FailureHandler | None
    checkpoints: CheckpointStore | None
    hooks: Iterable[HookSpec]
    log_interval: float | timedelta | None


RUN_OPTIONS: Final = frozenset(RunOptions.__optional_keys__)


def check_run_options(graph: Graph, options: RunOptions) -> None:
    """Refuse what cannot run before anything is opened: the graph, the options, the stores."""
    graph.validate()
    check_names("a run has no option", options, RUN_OPTIONS)
    checkpoints = options.get("checkpoints")
    if checkpoints is not None and not isinstance(checkpoints, CheckpointStore):
        raise GraphError(
            f"checkpoints= must be a checkpoint store such as fg.Checkpoints(...) "
            f"(got {checkpoints!r})"
        )
    if options.get("dead_letters") is None:
        for node in graph.nodes.values():
            if node.on_error == "dead_letter":
                raise GraphError(
                    f"{node.kind.value} {node.name!r} has on_error='dead_letter' but the run "
                    "has no dead-letter store: pass dead_letters= to run()"
                )
