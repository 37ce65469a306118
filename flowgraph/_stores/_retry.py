"""Bounded exponential backoff for a store's own calls, on the errors a store can outlive.

A SQLite file locked by another writer, a PostgreSQL server restarting or a
connection cut: each store says which of its driver's errors are transient
(it raises :class:`Transient`), and :func:`retrying` calls again after 0.05 s,
0.1 s, 0.2 s ... (at most 2 s apart, with jitter so that processes sharing a
store do not retry in step) until the call succeeds or *retry_for* seconds
have passed since the first failure; then it raises one :class:`StoreError`
naming the store, what it was doing, how long it tried and the last error.

Time is read through anyio, so the waits follow a virtual clock in tests.
"""

from __future__ import annotations

import logging
import random
from typing import TYPE_CHECKING, TypeVar

import anyio

from .._core._exceptions import StoreError
from .._core._validate import to_seconds

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from datetime import timedelta

_T = TypeVar("_T")

logger = logging.getLogger("flowgraph.stores")

DEFAULT_RETRY_FOR = 60.0
"""Seconds a store keeps retrying a call that fails with a transient error, by default."""

FIRST_DELAY = 0.05
MAX_DELAY = 2.0


class Transient(StoreError):
    """A store call failed in a way that may pass: retry it (never seen by users)."""


def check_retry_for(retry_for: float | timedelta) -> float:
    """Return *retry_for* in seconds; raise ``GraphError`` unless it is finite and >= 0."""
    return to_seconds("retry_for", retry_for, inclusive=True)


async def retrying(
    call: Callable[[], Awaitable[_T]], *, store: str, action: str, retry_for: float
) -> _T:
    """Await ``call()``, calling again on :class:`Transient` errors for up to *retry_for* seconds.

    A cancellation during a wait cancels the retries; a call in progress is
    never abandoned (the store's calls are not).

    Raises:
        StoreError: the call's own non-transient error at once, or, once
            *retry_for* seconds have passed, one naming *store*, *action*, the
            attempts and the last transient error.
    """
    try:
        return await call()
    except Transient as exc:
        error = exc
    started = anyio.current_time()
    deadline = started + retry_for
    delay, attempts = FIRST_DELAY, 1
    while True:
        now = anyio.current_time()
        if now >= deadline:
            raise StoreError(
                f"{store}: {action} failed after {attempts} "
                f"{'attempt' if attempts == 1 else 'attempts'} in {now - started:.3g}s; "
                f"last error: {error}"
            ) from error
        wait = min(delay * random.uniform(0.5, 1.0), deadline - now)
        logger.warning("%s: %s failed (%s); retrying in %.2gs", store, action, error, wait)
        await anyio.sleep(wait)
        delay = min(delay * 2, MAX_DELAY)
        attempts += 1
        try:
            return await call()
        except Transient as exc:
            error = exc
