"""A rate budget kept in a state store: windows in wall time, one transaction per attempt.

Each attempt to spend reads the budget's windows, checks them and, if every
one has room, records the call, all in one store transaction holding the
budget's row (``_stores._quotas``): two processes can never both spend the
last unit. A waiting caller sleeps until the windows it read would have room,
then tries again, since another process may have spent meanwhile.

Time is wall time (``_clock.wall_time``), which every process sharing the store
agrees on, read inside the transaction once the row is held: a call is stamped
when it is granted, however long another process held the row. While the store
works in its thread (opening, spending, closing), a virtual clock is told so
(through ``_core._threads.run_sync_in_thread``) and flows at the real rate instead of jumping
ahead: in virtual as in real time, a stored budget is exact to within the
duration of a store call.
"""

from __future__ import annotations

import os
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING

import anyio
from anyio.lowlevel import RunVar

from .._core._exceptions import GraphError, StoreError
from .._stores import StateStore, open_store, target_repr
from .._stores._quotas import update_quota
from ._clock import wall_reader
from ._ledger import Ledger, window

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

    from .._stores import JSONValue
    from ._rate import Rate

__all__ = ["StoredBudget"]


class _Session:
    """The store one event loop has open for a budget, and how many calls use it."""

    __slots__ = ("exits", "lock", "store", "users")

    def __init__(self) -> None:
        self.lock = anyio.Lock()
        self.store: StateStore | None = None
        self.exits: AsyncExitStack | None = None
        self.users = 0


class StoredBudget:
    """The windows of *rates*, kept under *name* in *store*."""

    __slots__ = ("_keys", "_name", "_rates", "_sessions", "_target")

    def __init__(
        self, rates: Sequence[Rate], store: str | os.PathLike[str] | StateStore, name: str
    ) -> None:
        if not isinstance(store, str | os.PathLike | StateStore):
            raise GraphError(f"store must be a URL, a path or a StateStore (got {store!r})")
        self._target = store
        self._name = name
        self._rates = tuple(rates)
        # A window's history is found again under the same position, length and calendar.
        self._keys = [
            f"{n}:{rate.per!r}" + ("" if rate._zone is None else f":{rate._zone}")
            for n, rate in enumerate(rates)
        ]
        self._sessions: RunVar[_Session] = RunVar("flowgraph.RateLimiter.store")

    def target_repr(self) -> str:
        return target_repr(self._target)

    def _ledger(self, state: JSONValue) -> Ledger:
        ledger = Ledger(self._keys, [window(r.count, r.per, r._zone) for r in self._rates])
        try:
            ledger.load(state)
        except (TypeError, ValueError) as exc:
            raise StoreError(
                f"the stored state of rate budget {self._name!r} is not valid ({exc}); "
                "delete its row from flowgraph_quotas to start afresh"
            ) from exc
        return ledger

    @asynccontextmanager
    async def session(self) -> AsyncIterator[Callable[[Sequence[int]], Awaitable[float]]]:
        """Hold the store open (per event loop) and yield ``spend(costs) -> seconds to wait``."""
        if isinstance(self._target, StateStore):
            store = self._target
            yield lambda costs: self._spend(store, costs)
            return
        try:
            session = self._sessions.get()
        except LookupError:
            session = _Session()
            self._sessions.set(session)
        async with session.lock:
            if session.store is None:
                exits = AsyncExitStack()
                session.store = await exits.enter_async_context(open_store(self._target))
                session.exits = exits
            session.users += 1
            opened = session.store
        try:
            yield lambda costs: self._spend(opened, costs)
        finally:
            with anyio.CancelScope(shield=True):
                async with session.lock:
                    session.users -= 1
                    if session.users == 0 and session.exits is not None:
                        exits, session.exits, session.store = session.exits, None, None
                        await exits.aclose()

    async def _spend(self, store: StateStore, costs: Sequence[int]) -> float:
        """One transaction: spend *costs* and return 0, or return the seconds to wait."""
        read_wall = wall_reader()

        def update(state: JSONValue) -> tuple[JSONValue, float]:
            at = read_wall()
            ledger = self._ledger(state)
            delay = ledger.wait(at, costs)
            if delay <= 0:
                ledger.take(at, costs)
            return ledger.dump(), delay

        return await update_quota(store, self._name, update)
