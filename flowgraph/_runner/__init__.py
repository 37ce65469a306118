"""Running a graph as a program does: a new event loop, one state store, signals and progress.

``fg.run`` builds on the engine's :func:`~flowgraph.open_run` and adds what a
script or a daemon needs around it; ``flowgraph run`` on the command line is
this, with arguments.
"""

from ._progress import open_progress, require_rich
from ._run import (
    DEFAULT_CHECKPOINT_EVERY,
    DEFAULT_CHECKPOINT_INTERVAL,
    DEFAULT_GRACE,
    Outcome,
    execute,
    run,
)

__all__ = [
    "DEFAULT_CHECKPOINT_EVERY",
    "DEFAULT_CHECKPOINT_INTERVAL",
    "DEFAULT_GRACE",
    "Outcome",
    "execute",
    "open_progress",
    "require_rich",
    "run",
]
