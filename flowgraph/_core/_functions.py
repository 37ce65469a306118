"""What kind of function a user gave: async or sync, plain or generator, found once."""

from __future__ import annotations

import enum
import functools
import inspect
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable


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


def _target(fn: Any) -> Any:
    """The function that decides how *fn* behaves: through ``functools.partial``, wrappers
    that keep ``__wrapped__`` (``functools.wraps``) and callable objects' ``__call__``."""
    target = fn
    while True:
        if isinstance(target, functools.partial):
            target = target.func
        elif callable(getattr(target, "__wrapped__", None)):
            target = target.__wrapped__
        else:
            break
    if not inspect.isroutine(target) and not inspect.isclass(target) and callable(target):
        target = _target(type(target).__call__)
    return target


def fn_kind(fn: Callable[..., Any]) -> FnKind:
    """Classify *fn*: a wrapper is what it wraps, a callable object what its ``__call__`` is."""
    target = _target(fn)
    if inspect.isasyncgenfunction(target):
        return FnKind.ASYNC_GEN
    if inspect.iscoroutinefunction(target):
        return FnKind.ASYNC
    if inspect.isgeneratorfunction(target):
        return FnKind.SYNC_GEN
    return FnKind.SYNC
