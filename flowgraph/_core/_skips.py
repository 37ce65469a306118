"""Skipped items in the log: the first few one by one, then a count a minute.

``on_error="skip"`` drops an item and goes on; a node that skips thousands
must not flood the log, and one that skips a few must say which.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import anyio

from ._exceptions import describe_error, describe_item

if TYPE_CHECKING:
    from ._policy import Failure

logger = logging.getLogger("flowgraph")

SKIPS_LOGGED = 5
"""Skipped items a node logs one by one; after them it logs a count every SKIP_LOG_INTERVAL."""
SKIP_LOG_INTERVAL = 60.0


class SkipLog:
    """Logs a node's skipped items: the first few one by one, then a count per interval."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.logged = 0
        self.unlogged = 0
        self.since = 0.0

    def skipped(self, failure: Failure) -> None:
        if self.logged < SKIPS_LOGGED:
            self.logged += 1
            logger.warning(
                "node %r skipped item %s after %d attempt(s): %s%s",
                self.node,
                describe_item(failure.item),
                failure.attempts,
                describe_error(failure.error),
                " (further skips are counted once a minute)" if self.logged == SKIPS_LOGGED else "",
            )
            self.since = anyio.current_time()
            return
        self.unlogged += 1
        if anyio.current_time() - self.since >= SKIP_LOG_INTERVAL:
            self.flush()

    def flush(self) -> None:
        if self.unlogged:
            logger.warning("node %r skipped %d more item(s)", self.node, self.unlogged)
            self.unlogged = 0
            self.since = anyio.current_time()
