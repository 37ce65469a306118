"""Virtual time on asyncio and trio, handed to anyio through backend options.

A test that sleeps for minutes finishes in milliseconds: whenever every task is
waiting on a timer, the clock jumps straight to the next deadline instead of
waiting for it. The clock only ever moves forward, and only by jumps, so
``anyio.current_time()`` is exact and runs are reproducible.

The two halves share one interface, :class:`VirtualClock`:

* trio: ``trio.testing.MockClock(autojump_threshold=...)`` given as ``clock=``.
* asyncio: a ``SelectorEventLoop`` given as ``loop_factory=``, whose ``time()`` is
  virtual and whose selector polls real I/O without blocking; when nothing is
  ready it advances virtual time to the next timer instead of sleeping.

Threads: while a node's call runs in one of flowgraph's worker threads, the
clock does not jump: virtual time flows at the real rate, so a timeout on a
sync node means what it means in real time, and a call that takes 5 ms takes 5
virtual ms. As soon as no thread works for the loop, the clock jumps again.
Other threads (``anyio.to_thread`` calls of your own) are invisible to the
clock: give it an ``autojump_threshold`` longer than their work takes, and it
jumps only after the loop has been idle that long in real time.
"""

from __future__ import annotations

import asyncio
import math
import selectors
import sys
import time
import weakref
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final, TypeVar, TypeVarTuple, Unpack, final

import anyio

from .._core import _threads

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from trio.testing import MockClock

T_Retval = TypeVar("T_Retval")
PosArgsT = TypeVarTuple("PosArgsT")

__all__ = ["VirtualClock", "virtual_time_backend"]

_BACKENDS: Final = ("asyncio", "trio")


def _seconds(name: str, value: float | timedelta) -> float:
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise TypeError(f"{name} must be a number of seconds or a timedelta (got {value!r})")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{name} must be >= 0 (got {value!r})")
    return float(seconds)


@final
class VirtualClock:
    """Virtual time for one backend, jumping to the next timer whenever all tasks wait.

    Run a coroutine function under it with :meth:`run`, or hand
    :attr:`anyio_backend` to anyio (as the ``anyio_backend`` fixture of a test, or
    to ``anyio.run(..., backend=name, backend_options=options)``). Virtual time
    starts at 0.0 and carries on across runs that reuse the same clock.

    Args:
        backend: ``"asyncio"`` or ``"trio"``.
        autojump_threshold: real seconds the event loop must stay idle before
            the clock jumps. ``0`` jumps at once; a longer threshold lets work in
            worker threads finish first (see the module docstring).

    Raises:
        ValueError: if *backend* is unknown or *autojump_threshold* is negative.
        ImportError: if *backend* is ``"trio"`` and trio is not installed.
    """

    __slots__ = (
        "__weakref__",
        "_autojump_threshold",
        "_backend",
        "_flowing",
        "_held",
        "_mock",
        "_now",
    )

    def __init__(self, backend: str, *, autojump_threshold: float | timedelta = 0.0) -> None:
        if backend not in _BACKENDS:
            raise ValueError(f"backend must be 'asyncio' or 'trio' (got {backend!r})")
        self._backend = backend
        self._autojump_threshold = _seconds("autojump_threshold", autojump_threshold)
        self._now = 0.0
        self._flowing = 0  # threads doing a node's work: time flows at the real rate
        self._held = 0  # threads doing the engine's I/O: time stands still
        self._mock: MockClock | None = None
        if backend == "trio":
            try:
                from trio.testing import MockClock
            except ImportError as exc:
                raise ImportError(
                    "virtual time on trio needs trio: pip install 'flowgraph[trio]'"
                ) from exc
            self._mock = MockClock(autojump_threshold=self._autojump_threshold)
            _TRIO_CLOCKS[self._mock] = self

    def __repr__(self) -> str:
        return f"VirtualClock({self._backend!r}, autojump_threshold={self._autojump_threshold!r})"

    @property
    def backend(self) -> str:
        """The backend name this clock drives."""
        return self._backend

    @property
    def autojump_threshold(self) -> float:
        """Real seconds of idleness before the clock jumps."""
        return self._autojump_threshold

    @property
    def anyio_backend(self) -> tuple[str, dict[str, Any]]:
        """``(name, options)`` for anyio: the value of an ``anyio_backend`` fixture."""
        if self._mock is not None:
            return ("trio", {"clock": self._mock})
        return ("asyncio", {"loop_factory": self._new_event_loop})

    def current_time(self) -> float:
        """Return the virtual time, as ``anyio.current_time()`` reads it inside a run."""
        if self._mock is not None:
            return self._mock.current_time()
        return self._now

    def run(
        self, func: Callable[[Unpack[PosArgsT]], Awaitable[T_Retval]], *args: *PosArgsT
    ) -> T_Retval:
        """Run ``func(*args)`` in a new event loop of this clock's backend, in virtual time.

        ``anyio.run`` with this clock installed: any anyio, asyncio or trio code
        inside sleeps, times out and rate-limits in virtual time, and the call
        returns (or raises) what *func* does. Call it from synchronous code, not
        from inside a running event loop. Virtual time carries on from the
        previous run of the same clock.

        Added in 0.1.
        """
        name, options = self.anyio_backend
        return anyio.run(func, *args, backend=name, backend_options=options)

    def jump(self, seconds: float | timedelta) -> None:
        """Move virtual time forward by *seconds*; timers now due fire at the next checkpoint.

        Raises:
            ValueError: if *seconds* is negative.
        """
        step = _seconds("seconds", seconds)
        if self._mock is not None:
            self._mock.jump(step)
        else:
            self._now += step

    @property
    def threads_busy(self) -> bool:
        """Whether flowgraph's worker threads are working for this clock's loop."""
        return self._flowing + self._held > 0

    @property
    def flowing(self) -> bool:
        """Whether virtual time passes at the real rate: a node's call works in a thread."""
        return self._flowing > 0

    def _threads(self, delta: int, flowing: bool) -> None:
        """A thread started (+1) or stopped (-1) working for this clock's loop.

        While a node's call works in a thread, virtual time flows at the real
        rate; while only the engine's own I/O works, it stands still; either way
        it never jumps ahead of a working thread.
        """
        if flowing:
            self._flowing += delta
        else:
            self._held += delta
        if self._mock is None:
            return
        self._mock.rate = 1.0 if self._flowing else 0.0
        self._mock.autojump_threshold = math.inf if self.threads_busy else self._autojump_threshold

    def _new_event_loop(self) -> asyncio.AbstractEventLoop:
        return _VirtualTimeEventLoop(self)


_TRIO_CLOCKS: weakref.WeakKeyDictionary[Any, VirtualClock] = weakref.WeakKeyDictionary()


def _current_virtual_clock() -> VirtualClock | None:
    """The virtual clock driving the running event loop, if any."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        trio = sys.modules.get("trio")
        if trio is None:
            return None
        try:
            return _TRIO_CLOCKS.get(trio.lowlevel.current_clock())
        except RuntimeError:
            return None
    return loop._virtual_clock if isinstance(loop, _VirtualTimeEventLoop) else None


def _threads_busy(delta: int, flowing: bool) -> None:
    clock = _current_virtual_clock()
    if clock is not None:
        clock._threads(delta, flowing)


_threads.BUSY_HOOK = _threads_busy


def virtual_time_backend(
    name: str, *, autojump_threshold: float | timedelta = 0.0
) -> tuple[str, dict[str, Any]]:
    """Return ``(name, options)`` that run anyio on *name* with a fresh virtual clock.

    Use it as the value of an ``anyio_backend`` fixture::

        @pytest.fixture(params=["asyncio", "trio"])
        def anyio_backend(request):
            return virtual_time_backend(request.param)

    Raises:
        ValueError: if *name* is neither ``"asyncio"`` nor ``"trio"``.
        ImportError: if *name* is ``"trio"`` and trio is not installed.
    """
    return VirtualClock(name, autojump_threshold=autojump_threshold).anyio_backend


class _AutojumpSelector(selectors.DefaultSelector):
    """A selector that advances the clock instead of blocking until the next timer.

    The asyncio loop calls ``select(timeout)`` only when no callback is ready;
    ``timeout`` is then the delay until the earliest timer (``None`` when there
    is none, in which case only real I/O or another thread can wake the loop).
    """

    def __init__(self, clock: VirtualClock) -> None:
        super().__init__()
        self._clock = clock

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None or timeout <= 0:
            return super().select(timeout)
        if self._clock.threads_busy:
            # A thread works: never jump past it; let time flow if it is a node's call.
            started = time.monotonic()
            ready = super().select(timeout)
            if self._clock.flowing:
                self._clock.jump(min(timeout, time.monotonic() - started))
            return ready
        ready = super().select(self._clock.autojump_threshold)
        if not ready:
            self._clock.jump(timeout)
        return ready


class _VirtualTimeEventLoop(asyncio.SelectorEventLoop):
    """A selector event loop whose ``time()`` is the clock's virtual time."""

    def __init__(self, clock: VirtualClock) -> None:
        self._virtual_clock = clock
        super().__init__(_AutojumpSelector(clock))
        # asyncio runs timers due before time() + _clock_resolution. Past ~97 virtual days
        # a float step is over the default 1e-9, so a timer due exactly now would never run.
        self._clock_resolution = 1e-6

    def time(self) -> float:
        return self._virtual_clock.current_time()
