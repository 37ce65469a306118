"""The exceptions flowgraph raises.

One tree, so callers catch at the level they care about::

    FlowgraphError
    ├── GraphError (also ValueError and TypeError)   a graph, node or policy was declared wrongly
    ├── NodeError                      a node failed on an item while running
    └── StoreError                     a state store (dead letters, checkpoints) failed

Every exception here pickles, because process pools and distributed executors
send them across processes.
"""

from __future__ import annotations

import reprlib
from typing import Any

_item_repr = reprlib.Repr()
_item_repr.maxlevel = 3
_item_repr.maxlist = _item_repr.maxtuple = _item_repr.maxdict = 5
_item_repr.maxstring = _item_repr.maxother = 60
_MAX_ITEM_REPR = 120


def describe_item(item: object) -> str:
    """Return a repr of *item* bounded to about 120 characters, for error messages."""
    text = _item_repr.repr(item)
    return text if len(text) <= _MAX_ITEM_REPR else text[: _MAX_ITEM_REPR - 3] + "..."


def describe_error(error: BaseException) -> str:
    """Return ``"TypeName: message"`` (or just the type name) for error messages."""
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class FlowgraphError(Exception):
    """Base class of every error flowgraph raises on purpose."""


class GraphError(FlowgraphError, ValueError, TypeError):
    """A graph, node, policy or argument was declared in a way that cannot run.

    Raised at declaration time (or at the latest when a run starts, before
    anything is opened), never halfway through a run. It is a ``ValueError``
    and a ``TypeError`` too, so a bad value and a value of the wrong type are
    one family of error, caught either way.
    """


class NodeError(FlowgraphError):
    """A node's function failed on an item and the node's policy is to fail the run.

    The original exception is the ``__cause__``.

    Attributes:
        node: name of the node that failed.
        item: the input item it failed on (``None`` for a source).
        attempts: how many times the function was called on the item.
    """

    def __init__(
        self, node: str, item: Any, attempts: int = 1, *, cause: str = "", where: str = ""
    ) -> None:
        self.node = node
        self.item = item
        self.attempts = attempts
        self.cause = cause
        self._where = where
        if not where:
            where = f"node {node!r} failed on item {describe_item(item)}"
            if attempts > 1:
                where += f" after {attempts} attempts"
        super().__init__(f"{where}; last error: {cause}" if cause else where)

    @classmethod
    def for_source(cls, node: str, produced: int, error: BaseException) -> NodeError:
        """The error of a source that failed while producing items."""
        items = "item" if produced == 1 else "items"
        where = f"source {node!r} failed after producing {produced} {items}"
        return cls(node, None, cause=describe_error(error), where=where)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_node_error, (self.node, self.item, self.attempts, self.cause, self._where))


def _rebuild_node_error(node: str, item: Any, attempts: int, cause: str, where: str) -> NodeError:
    return NodeError(node, item, attempts, cause=cause, where=where)


class StoreError(FlowgraphError):
    """A state store (dead letters, checkpoints) could not be read or written."""


class AttemptsExhausted(Exception):
    """Raised by a retrying policy when it gives up, to tell the worker how many attempts ran.

    The worker unwraps it: the exception that reaches the user (or the dead-letter
    store) is ``error``, with ``attempts`` recorded beside it.
    """

    def __init__(self, error: BaseException, attempts: int) -> None:
        super().__init__(error, attempts)
        self.error = error
        self.attempts = attempts


class PartialOutputError(Exception):
    """A generator node failed after sending *sent* outputs of its item.

    Retries pass it through, since running the generator again would send those
    outputs twice (unless the node is ``idempotent=True``); the worker hands the
    original ``error`` to the node's ``on_error``.
    """

    def __init__(self, error: Exception, sent: int) -> None:
        super().__init__(error, sent)
        self.error = error
        self.sent = sent
