"""Quota state: one JSON document per named budget, read and rewritten in one transaction.

A persistent rate limit (``fg.RateLimiter(..., store=..., name=...)``) keeps its
windows here so that a restart, a second process or a second daemon sharing the
store spends from the same budget. The store knows nothing of windows: it runs
the limiter's *update* on the current state inside a write transaction that
holds the budget's row, so two processes can never both spend the last unit.

The row is taken with ``INSERT ... ON CONFLICT DO UPDATE ... RETURNING``: it
creates the row the first time and locks it every time (PostgreSQL's row lock;
SQLite's write lock is already held by ``BEGIN IMMEDIATE``), and returns the
latest committed state even when another transaction held the row meanwhile.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any, TypeVar

from .._core._exceptions import StoreError
from ._sql import SQLStateStore

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._protocol import JSONValue, StateStore
    from ._sql import Cursor

__all__ = ["load_quota", "update_quota"]

_T = TypeVar("_T")


def _sql_store(store: StateStore) -> SQLStateStore:
    if not isinstance(store, SQLStateStore):
        raise StoreError(
            f"quotas need a SQLite or PostgreSQL state store from fg.open_store "
            f"(got {type(store).__name__})"
        )
    return store


async def update_quota(
    store: StateStore, name: str, update: Callable[[JSONValue], tuple[JSONValue, _T]]
) -> _T:
    """Run *update* on the state of budget *name* and store what it returns, atomically.

    *update* gets the stored state (``None`` the first time) and returns the new
    state and a result, which this returns. It runs in the store's worker
    thread while the budget's row is held, so it must be quick and must not
    touch the event loop. If it raises, nothing is written.

    Raises:
        StoreError: if the store is not a SQL store, or the transaction failed.
    """
    sql_store = _sql_store(store)

    def work(cur: Cursor) -> _T:
        now = time.time()
        cur.execute(
            "INSERT INTO flowgraph_quotas (name, state, updated_at) VALUES (?, ?, ?)"
            " ON CONFLICT (name) DO UPDATE SET updated_at = flowgraph_quotas.updated_at"
            " RETURNING state",
            (name, "null", now),
        )
        state, result = update(json.loads(cur.fetchone()[0]))
        cur.execute(
            "UPDATE flowgraph_quotas SET state = ?, updated_at = ? WHERE name = ?",
            (json.dumps(state, allow_nan=False), now, name),
        )
        return result

    return await sql_store._run(work, action=f"updating quota {name!r}", write=True)


async def load_quota(store: StateStore, name: str) -> JSONValue:
    """Return the stored state of budget *name*, ``None`` if it has none."""
    sql_store = _sql_store(store)

    def work(cur: Cursor) -> Any:
        cur.execute("SELECT state FROM flowgraph_quotas WHERE name = ?", (name,))
        return cur.fetchone()

    row = await sql_store._run(work, action=f"reading quota {name!r}")
    state: JSONValue = None if row is None else json.loads(row[0])
    return state
