"""Rate limits and quotas: several windows at once, a cost per call, in memory or in a store.

Everything here runs on anyio alone: time comes from ``anyio.current_time()``
(and wall time through it, see ``_clock``), waiting from ``anyio.sleep`` and
anyio events, so limits hold on asyncio and trio and are exact under virtual
clocks. Limiters may be created outside any event loop; they create their
anyio primitives when first used inside one.

A policy object is one budget wherever it is given: the same ``Rate`` or
``RateLimiter`` on two nodes (or in two graphs, or in ``paginate``) is one
shared budget; two objects are two budgets, even if they are equal.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import tzinfo
from typing import TYPE_CHECKING, Any, ClassVar, Final, final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import anyio
from anyio.lowlevel import cancel_shielded_checkpoint, checkpoint_if_cancelled

from .._core._exceptions import GraphError, describe_item
from .._core._validate import positive_int, to_seconds
from ._ledger import fits_calendar

if TYPE_CHECKING:
    import os
    from collections.abc import Awaitable, Callable, Sequence
    from datetime import timedelta
    from types import TracebackType

    from .._core._policy import Call, NodeContext
    from .._stores import StateStore
    from ._memory import MemoryBudget
    from ._stored import StoredBudget

__all__ = ["Rate", "RateLimiter", "budget_of"]

_MIN_WAIT: Final = 1e-6
"""Wall times (~1.7e9 s) are exact to ~2.4e-7 s: a shorter sleep might not move them at all."""

NO_ITEM: Final[Any] = object()
"""Stands for "no item given": ``acquire()`` outside a node."""


@final
@dataclass(frozen=True, init=False, repr=False, eq=False, slots=True)
class Rate:
    """At most *count* units in any interval of *per* seconds, or per calendar period.

    Each call costs one unit unless *cost* says otherwise: a number, or a
    function of the node's item (``cost=len`` for the rows of a batch, tokens,
    bytes), computed before the call. A call whose cost is above *count* could
    never go through: it fails at once with ``ValueError`` (for a fixed cost, at
    declaration with ``GraphError``).

    By default the window slides: no interval of length *per* ever holds more
    than *count* units. With *calendar* (a time zone such as
    ``"America/New_York"`` or ``"UTC"``), windows are calendar periods that
    reset together, as API quotas do: per day from local midnight (a day is 23
    or 25 hours across a daylight-saving change), per week from Monday, or per
    hour, minute... (*per* must then divide a day, or be a week).

    A ``Rate`` given to a node is a budget of its own, shared by every node and
    graph it is given to, for as long as it lives. Inside a
    :class:`RateLimiter` it only describes a window: the limiter is the budget.

    Args:
        count: units allowed per window (``>= 1``).
        per: window length in seconds or a timedelta (``fg.SECOND``,
            ``fg.MINUTE``, ``fg.HOUR``, ``fg.DAY``, ``fg.WEEK``).
        cost: units one call spends: an int ``>= 1``, or a function of the
            item returning an int ``>= 0``.
        calendar: make windows calendar periods in this time zone (an IANA
            name or a ``tzinfo``).

    Raises:
        GraphError: if *count* < 1, *per* <= 0, *cost* is neither an int between
            1 and *count* nor callable, or *calendar* is not a known time zone or
            does not suit *per*.

    Added in 0.1; *cost* and *calendar* added in 0.2.
    """

    slot: ClassVar[str] = "rate"
    count: int
    per: float
    cost: int | Callable[[Any], int]
    calendar: str | tzinfo | None
    _zone: tzinfo | None
    _budget: RateLimiter

    def __init__(
        self,
        count: int,
        *,
        per: float | timedelta = 1.0,
        cost: int | Callable[[Any], int] = 1,
        calendar: str | tzinfo | None = None,
    ) -> None:
        count = positive_int("count", count)
        per = to_seconds("per", per)
        if not callable(cost):
            if isinstance(cost, bool) or not isinstance(cost, int) or cost < 1:
                raise GraphError(
                    f"cost must be an int >= 1 or a function of the item (got {cost!r})"
                )
            if cost > count:
                raise GraphError(
                    f"cost={cost} can never fit a window of count={count}: no call could go"
                )
        object.__setattr__(self, "count", count)
        object.__setattr__(self, "per", per)
        object.__setattr__(self, "cost", cost)
        object.__setattr__(self, "calendar", calendar)
        object.__setattr__(self, "_zone", _zone(calendar, per))
        object.__setattr__(self, "_budget", RateLimiter(self))

    def __repr__(self) -> str:
        extra = ""
        if self.cost != 1:
            name = getattr(self.cost, "__qualname__", None)
            extra += f", cost={name if isinstance(name, str) else repr(self.cost)}"
        if self.calendar is not None:
            extra += f", calendar={self.calendar!r}"
        return f"Rate({self.count}, per={self.per!r}{extra})"

    def wrap(self, call: Call, node: NodeContext) -> Call:
        """Return *call* limited by this rate's own budget, shared wherever it is given."""
        return self._budget.wrap(call, node)

    def _charge(self, item: Any) -> int:
        """The units a call on *item* spends here.

        Raises:
            TypeError: if the cost is a function and no item is given, or it
                returns something other than an int ``>= 0``.
            ValueError: if the cost is above *count*: the call could never go.
        """
        cost = self.cost
        if callable(cost):
            if item is NO_ITEM:
                raise TypeError(f"{self!r} computes the cost of each item: call acquire(item)")
            cost = cost(item)
            if isinstance(cost, bool) or not isinstance(cost, int) or cost < 0:
                raise TypeError(
                    f"{self!r}: the cost of {describe_item(item)} must be an int >= 0 "
                    f"(got {cost!r})"
                )
            if cost > self.count:
                raise ValueError(
                    f"a call costing {cost} can never fit {self!r}: a window holds "
                    f"{self.count}; item {describe_item(item)}"
                )
        return cost


def _zone(calendar: str | tzinfo | None, per: float) -> tzinfo | None:
    if calendar is None:
        return None
    if isinstance(calendar, tzinfo):
        zone = calendar
    elif isinstance(calendar, str):
        try:
            zone = ZoneInfo(calendar)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise GraphError(f"calendar={calendar!r} is not a known time zone") from exc
    else:
        raise GraphError(
            f"calendar must be a time zone name such as 'UTC' or a tzinfo (got {calendar!r})"
        )
    if not fits_calendar(per):
        raise GraphError(
            f"calendar windows must divide a day or be a week (per={per!r}); "
            "use fg.SECOND, fg.MINUTE, fg.HOUR, fg.DAY or fg.WEEK"
        )
    return zone


def budget_of(rate: Rate | RateLimiter) -> RateLimiter:
    """The budget a rate policy spends: a ``RateLimiter`` itself, or a ``Rate``'s own."""
    return rate if isinstance(rate, RateLimiter) else rate._budget


@final
class RateLimiter:
    """One budget, limited by several windows at once, kept in memory or in a state store.

    ``RateLimiter(Rate(10, per=fg.SECOND), Rate(1_000, per=fg.DAY, cost=len))``
    lets a call through only when every window has room for its cost. Sliding
    windows never hold more than ``count`` units in any interval of ``per``
    seconds, with no burst at window edges; calendar windows reset together at
    the period's start (see :class:`Rate`). Memory stays bounded: see ``_ledger``
    (at most ``count`` entries per window while ``count <= 1024``, about 1,024
    above, at a cost of holding calls back by at most ``per / 1024``).

    One object is one budget: share it between nodes, graphs and ``paginate``.

    **In memory** (no *store*), history lives in the running loop's clock. When
    a later run uses the limiter from a new event loop, the history carries
    over unchanged if the clock continues (the same virtual clock, or asyncio's
    standard loops, which all read ``time.monotonic()``), and is moved by the
    real time elapsed between the loops otherwise (trio's real clock starts at
    a random origin in every run).

    **In a state store** (*store* and *name*), the windows are kept in wall time
    under *name*, so a restart, another process or another daemon sharing the
    store spends the same budget. Each attempt to spend is one transaction that
    holds the budget's row, so no two processes can both spend the last unit.
    The store is opened while calls are acquiring and closed when none is;
    pass an open :class:`~flowgraph.StateStore` to keep one connection.
    Under a virtual clock, wall time follows it, and it flows at the real rate
    while the store works: the budget is exact to within a store call.

    Waiters in one process are served first come, first served: a later caller
    never overtakes an earlier one, even if the budget would fit it (so a big
    cost at the head holds back small ones behind it). A waiter cancelled while
    queued consumes no budget and leaves the queue at once; in a store, a call
    cancelled once its transaction has started finishes it, and may have spent.

    Usable as ``async with limiter:``, ``await limiter.acquire(item)``, or as a
    node policy (each call of the node acquires once, with its item).

    Args:
        rates: the windows.
        store: a state store URL (``sqlite:///state.db``, ``postgresql://...``),
            a path, or an open :class:`~flowgraph.StateStore`.
        name: the key of the budget in the store; needed with *store*.

    Raises:
        GraphError: if no rate is given, *store* comes without a *name*, or
            *name* is empty. TypeError: if an argument is not a Rate.

    Added in 0.1; *store*, *name* and costs added in 0.2.
    """

    __slots__ = ("_fixed", "_memory", "_name", "_rates", "_stored", "_waiters")
    slot: ClassVar[str] = "rate"

    def __init__(
        self,
        *rates: Rate,
        store: str | os.PathLike[str] | StateStore | None = None,
        name: str | None = None,
    ) -> None:
        if not rates:
            raise GraphError(
                "RateLimiter needs at least one Rate, e.g. RateLimiter(Rate(10, per=1))"
            )
        for rate in rates:
            if not isinstance(rate, Rate):
                raise TypeError(f"RateLimiter takes Rate objects (got {rate!r})")
        if name is not None and (not isinstance(name, str) or not name):
            raise GraphError(f"name must be a non-empty string (got {name!r})")
        self._rates = rates
        self._name = name
        # Invariant: _fixed holds every window's cost when none depends on the item.
        fixed = [rate.cost for rate in rates if isinstance(rate.cost, int)]
        self._fixed = fixed if len(fixed) == len(rates) else None
        self._memory: MemoryBudget | None = None
        self._stored: StoredBudget | None = None
        if store is None:
            from ._memory import MemoryBudget

            self._memory = MemoryBudget(rates)
        else:
            if name is None:
                raise GraphError(
                    "a RateLimiter kept in a store needs name=, the key of its budget there "
                    "(e.g. name='partner-api')"
                )
            from ._stored import StoredBudget

            self._stored = StoredBudget(rates, store, name)
        # Invariant: _waiters[0] is the only waiter allowed to take budget.
        self._waiters: deque[anyio.Event] = deque()

    def __repr__(self) -> str:
        parts = [repr(rate) for rate in self._rates]
        if self._stored is not None:
            parts.append(f"store={self._stored.target_repr()}")
        if self._name is not None:
            parts.append(f"name={self._name!r}")
        return f"RateLimiter({', '.join(parts)})"

    @property
    def rates(self) -> tuple[Rate, ...]:
        """The windows this limiter enforces."""
        return self._rates

    @property
    def name(self) -> str | None:
        """The budget's name (its key in the store)."""
        return self._name

    def costs(self, item: Any = NO_ITEM) -> Sequence[int]:
        """The units a call on *item* spends in each window, in the order of :attr:`rates`.

        Raises:
            TypeError: if a cost is a function of the item and none is given, or it does not
                return an int >= 0. ValueError: if a cost is above its window's count.
        """
        if self._fixed is not None:
            return self._fixed
        return [rate._charge(item) for rate in self._rates]

    async def acquire(self, item: Any = NO_ITEM, /) -> None:
        """Wait until every window has room for the call on *item*, in arrival order; spend it.

        A checkpoint even when the budget has room. If cancelled while waiting,
        no budget is taken and the next waiter moves up.

        Raises:
            ValueError: at once, if the call costs more than a window can ever hold.
            TypeError: if a window's cost is a function of the item and none is given.
            StoreError: if the store fails (a store-kept limiter).
        """
        costs = self.costs(item)
        await checkpoint_if_cancelled()
        memory = self._memory
        if memory is not None and not self._waiters and memory.take_or_wait(costs) <= 0:
            await cancel_shielded_checkpoint()
            return
        if memory is not None:
            await self._queue(costs, memory.spend)
        else:
            assert self._stored is not None
            async with self._stored.session() as spend:
                await self._queue(costs, spend)

    async def _queue(
        self, costs: Sequence[int], spend: Callable[[Sequence[int]], Awaitable[float]]
    ) -> None:
        turn = anyio.Event()
        self._waiters.append(turn)
        try:
            if self._waiters[0] is not turn:
                await turn.wait()
            # A timer may fire a hair early in float time: re-check until the windows have room.
            while (delay := await spend(costs)) > 0:  # noqa: ASYNC110 - waits on time
                await anyio.sleep(max(delay, _MIN_WAIT))
        finally:
            was_first = self._waiters[0] is turn
            self._waiters.remove(turn)
            if was_first and self._waiters:
                self._waiters[0].set()

    def acquire_nowait(self, item: Any = NO_ITEM, /) -> None:
        """Spend at once if every window has room and nobody is waiting.

        Raises:
            anyio.WouldBlock: if the call would have to wait.
            RuntimeError: for a limiter kept in a store, which must wait for it.
            ValueError, TypeError: as :meth:`acquire`.
        """
        if self._memory is None:
            raise RuntimeError(
                "a RateLimiter kept in a store cannot spend without waiting for the store: "
                "use await acquire()"
            )
        costs = self.costs(item)
        if self._waiters or self._memory.take_or_wait(costs) > 0:
            raise anyio.WouldBlock

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def wrap(self, call: Call, node: NodeContext) -> Call:
        """Return *call* that spends from this limiter, with its item, before every invocation."""
        acquire = self.acquire

        async def limited(item: Any) -> Any:
            await acquire(item)
            return await call(item)

        return limited
