"""Sources beyond plain iterables, with checkpointed positions: polling, time windows."""

from ._poll import poll
from ._windows import Window, windows

__all__ = ["Window", "poll", "windows"]
