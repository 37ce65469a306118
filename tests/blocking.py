"""A sync node function that blocks its thread and counts the calls begun and ended."""

from __future__ import annotations

import threading
import time


class BlockingCalls:
    """Sleep 10 ms and return the item; ``started == finished`` once no call is running."""

    def __init__(self) -> None:
        self.started = self.finished = 0
        self._lock = threading.Lock()

    def __call__(self, x: int) -> int:
        with self._lock:
            self.started += 1
        time.sleep(0.01)
        with self._lock:
            self.finished += 1
        return x
