"""Policies: per-node behaviours that wrap a node's call (retry, rate limits and quotas, limits).

Each is a frozen, validated value with a ``wrap(call, node)`` method (the
``Policy`` protocol of ``_core/_policy``) and the name of the node option it
fills (``slot``), so a policy given to the wrong option is refused at declaration.
Rate limits keep their windows in memory or, for quotas that outlive a process,
in a state store (``_memory``, ``_stored``, both on ``_ledger``); ``_clock`` says
what time it is.
"""

from ._clock import DAY, HOUR, MINUTE, SECOND, WEEK, wall_time
from ._limit import Limit
from ._rate import Rate, RateLimiter, budget_of
from ._retry import Retry

__all__ = [
    "DAY",
    "HOUR",
    "MINUTE",
    "SECOND",
    "WEEK",
    "Limit",
    "Rate",
    "RateLimiter",
    "Retry",
    "budget_of",
    "wall_time",
]
