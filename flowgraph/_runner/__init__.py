"""Running a graph as a program does: a new event loop, one state store, signals and progress.

``fg.run`` builds on the engine's :func:`~flowgraph.open_run` and adds what a
script or a daemon needs around it; ``flowgraph run`` on the command line is
this, with arguments.
"""

from ._flow import Flow, FlowResult, FlowRun, open_flow
from ._progress import open_progress, require_rich, run_state
from ._replay import open_graph_run
from ._run import (
    DEFAULT_CHECKPOINT_EVERY,
    DEFAULT_CHECKPOINT_INTERVAL,
    DEFAULT_GRACE,
    Outcome,
    ProgramOptions,
    execute,
    run,
)
from ._signals import StopBeforeStart, catch_stop_signals, hold_stop_signals

__all__ = [
    "DEFAULT_CHECKPOINT_EVERY",
    "DEFAULT_CHECKPOINT_INTERVAL",
    "DEFAULT_GRACE",
    "Flow",
    "FlowResult",
    "FlowRun",
    "Outcome",
    "ProgramOptions",
    "StopBeforeStart",
    "catch_stop_signals",
    "execute",
    "hold_stop_signals",
    "open_flow",
    "open_graph_run",
    "open_progress",
    "require_rich",
    "run",
    "run_state",
]
