"""A concurrency cap shared by every node and graph that uses it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, final

import anyio
from anyio.lowlevel import RunVar

from .._core._validate import positive_int

if TYPE_CHECKING:
    from types import TracebackType

    from .._core._policy import Call, NodeContext

__all__ = ["Limit"]


@final
class Limit:
    """At most *total* calls in flight at once, shared by every node and graph using it.

    Backed by an ``anyio.CapacityLimiter`` created on first use in each event
    loop, so one ``Limit`` may be declared at import time and used by runs on
    either backend. Waiters are served in arrival order; a cancelled waiter takes
    no slot. Usable as ``async with limit:`` (one slot per task at a time) or as a
    node policy (each call of the node holds one slot while it runs).

    Args:
        total: calls allowed in flight (``>= 1``).

    Raises:
        GraphError: if *total* < 1.

    Added in 0.1.
    """

    __slots__ = ("_limiter", "_total")
    slot: ClassVar[str] = "limit"

    def __init__(self, total: int) -> None:
        self._total = positive_int("total", total)
        self._limiter: RunVar[anyio.CapacityLimiter] = RunVar("flowgraph.Limit")

    def __repr__(self) -> str:
        return f"Limit({self._total})"

    @property
    def total(self) -> int:
        """Calls allowed in flight at once."""
        return self._total

    def _current(self) -> anyio.CapacityLimiter:
        try:
            return self._limiter.get()
        except LookupError:
            limiter = anyio.CapacityLimiter(self._total)
            self._limiter.set(limiter)
            return limiter

    async def __aenter__(self) -> None:
        await self._current().acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._current().release()

    def wrap(self, call: Call, node: NodeContext) -> Call:
        """Return *call* that holds a slot of this limit while it runs."""

        async def limited(item: Any) -> Any:
            async with self:
                return await call(item)

        return limited
