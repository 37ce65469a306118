"""What may cross into a worker process, and how errors come back from one.

A function for a process pool must pickle, and under the ``spawn`` and
``forkserver`` start methods every module it refers to must be importable in a
fresh interpreter: a function defined in an interactive session or in a module
built in memory pickles by reference but cannot be found by the child. Both
are refused when the node is declared, not on its first item.

Exceptions raised in a worker process come back as themselves, with the
remote traceback as their ``__cause__`` (as ``concurrent.futures`` does); one
that cannot be pickled comes back as a :class:`RemoteError` carrying its type,
message and traceback.
"""

from __future__ import annotations

import io
import pickle
import sys
import traceback
import types
from typing import Any

from .._core._exceptions import GraphError, describe_error


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker process, shown as its cause."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return self.text


class RemoteError(RuntimeError):
    """An exception raised in a worker process that could not be sent back as itself."""


class _ModuleProbe(pickle.Pickler):
    """A pickler that notes the module of every function and class it pickles by reference."""

    def __init__(self) -> None:
        super().__init__(io.BytesIO(), protocol=pickle.HIGHEST_PROTOCOL)
        self.modules: set[str] = set()

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, type | types.FunctionType | types.BuiltinFunctionType):
            module = getattr(obj, "__module__", None)
            if isinstance(module, str):
                self.modules.add(module)
        return NotImplemented


def check_picklable(fn: Any, *, node: str, start_method: str) -> None:
    """Refuse *fn* if a worker process started with *start_method* could not receive it.

    Raises:
        GraphError: naming the node and what to change.
    """
    probe = _ModuleProbe()
    try:
        probe.dump(fn)
    except Exception as exc:
        raise GraphError(
            f"node {node!r} runs in worker processes, but its function {_name(fn)} cannot "
            f"be pickled ({describe_error(exc)}): define it at the top level of a module, "
            "not as a lambda or a nested function"
        ) from exc
    if start_method == "fork":
        return  # a forked child has every module of its parent
    for name in sorted(probe.modules):
        module = sys.modules.get(name)
        if module is None or _importable(module):
            continue
        raise GraphError(
            f"node {node!r} runs in worker processes started with {start_method!r}, but its "
            f"function {_name(fn)} comes from module {name!r}, which a new process cannot "
            "import (it was not loaded from a file): move the function into a module file"
        )


def _importable(module: types.ModuleType) -> bool:
    if module.__name__ == "__main__":
        return getattr(module, "__file__", None) is not None
    return getattr(module, "__spec__", None) is not None


def _name(fn: Any) -> str:
    return repr(getattr(fn, "__qualname__", None) or type(fn).__qualname__)


def dumps_error(error: BaseException) -> bytes:
    """In a worker process: *error* and its traceback, pickled, or a stand-in that pickles."""
    text = "".join(traceback.format_exception(error))
    if not isinstance(error, Exception):
        # SystemExit or KeyboardInterrupt in a call fails that item, not the run.
        error = RemoteError(f"the function raised {describe_error(error)}")
    try:
        return pickle.dumps((error, text), pickle.HIGHEST_PROTOCOL)
    except Exception:
        stand_in = RemoteError(describe_error(error))
        return pickle.dumps((stand_in, text), pickle.HIGHEST_PROTOCOL)


def loads_error(data: bytes) -> BaseException:
    """In the parent: the exception a worker process sent, its remote traceback as cause."""
    try:
        error, text = pickle.loads(data)
    except Exception as exc:
        error, text = RemoteError(f"an error that could not be unpickled ({exc!r})"), ""
    if text:
        error.__cause__ = RemoteTraceback(f'\n"""\n{text}"""')
    return error  # type: ignore[no-any-return]
