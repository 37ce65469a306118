"""Policies: per-node behaviours that wrap a node's call (retry, rate limits, concurrency limits).

Each is a frozen, validated value with a ``wrap(call, node)`` method (the
``Policy`` protocol of ``_core/_policy``) and the name of the node option it
fills (``slot``), so a policy given to the wrong option is refused at declaration.
"""

from ._limit import Limit
from ._rate import Rate, RateLimiter
from ._retry import Retry

__all__ = ["Limit", "Rate", "RateLimiter", "Retry"]
