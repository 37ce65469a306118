"""flowgraph: concurrent data pipelines as graphs of functions, on asyncio or trio.

Declare a :class:`Graph` of sources, transforms and sinks, then
``await graph.run()`` in your own event loop or call :func:`run`.
"""

from __future__ import annotations

from ._core import Barrier as Barrier
from ._core import Batch as Batch
from ._core import CheckpointCommitted as CheckpointCommitted
from ._core import Event as Event
from ._core import Executor as Executor
from ._core import Failure as Failure
from ._core import FailureHandler as FailureHandler
from ._core import FlowgraphError as FlowgraphError
from ._core import Graph as Graph
from ._core import GraphDefaults as GraphDefaults
from ._core import GraphError as GraphError
from ._core import Inlet as Inlet
from ._core import ItemDeadLettered as ItemDeadLettered
from ._core import ItemFailed as ItemFailed
from ._core import Node as Node
from ._core import NodeError as NodeError
from ._core import NodeFinished as NodeFinished
from ._core import NodeKind as NodeKind
from ._core import NodeStarted as NodeStarted
from ._core import NodeStatistics as NodeStatistics
from ._core import Policy as Policy
from ._core import Positioned as Positioned
from ._core import Run as Run
from ._core import RunFinished as RunFinished
from ._core import RunOptions as RunOptions
from ._core import RunResult as RunResult
from ._core import RunStarted as RunStarted
from ._core import RunStatistics as RunStatistics
from ._core import SourceOptions as SourceOptions
from ._core import StoreError as StoreError
from ._core import Threads as Threads
from ._core import TransformOptions as TransformOptions
from ._core import open_run as open_run
from ._executors import Dask as Dask
from ._executors import Processes as Processes
from ._executors import Ray as Ray
from ._policies import DAY as DAY
from ._policies import HOUR as HOUR
from ._policies import MINUTE as MINUTE
from ._policies import SECOND as SECOND
from ._policies import WEEK as WEEK
from ._policies import Limit as Limit
from ._policies import Rate as Rate
from ._policies import RateLimiter as RateLimiter
from ._policies import Retry as Retry
from ._runner import Flow as Flow
from ._runner import FlowResult as FlowResult
from ._runner import ProgramOptions as ProgramOptions
from ._runner import open_progress as open_progress
from ._runner import run as run
from ._sinks import CSV as CSV
from ._sinks import CopyInto as CopyInto
from ._sinks import JsonLines as JsonLines
from ._sinks import Parquet as Parquet
from ._sinks import Upsert as Upsert
from ._sources import Window as Window
from ._sources import poll as poll
from ._sources import windows as windows
from ._stores import Checkpoints as Checkpoints
from ._stores import DeadLetter as DeadLetter
from ._stores import DeadLetters as DeadLetters
from ._stores import ReplayResult as ReplayResult
from ._stores import StateStore as StateStore
from ._stores import open_store as open_store

__version__ = "0.1.0"

__all__ = [  # noqa: RUF022 - plain sorted(), which tests/test_exports.py checks
    "Barrier",
    "Batch",
    "CSV",
    "CheckpointCommitted",
    "Checkpoints",
    "CopyInto",
    "DAY",
    "Dask",
    "DeadLetter",
    "DeadLetters",
    "Event",
    "Executor",
    "Failure",
    "FailureHandler",
    "Flow",
    "FlowResult",
    "FlowgraphError",
    "Graph",
    "GraphDefaults",
    "GraphError",
    "HOUR",
    "Inlet",
    "ItemDeadLettered",
    "ItemFailed",
    "JsonLines",
    "Limit",
    "MINUTE",
    "Node",
    "NodeError",
    "NodeFinished",
    "NodeKind",
    "NodeStarted",
    "NodeStatistics",
    "Parquet",
    "Policy",
    "Positioned",
    "Processes",
    "ProgramOptions",
    "Rate",
    "RateLimiter",
    "Ray",
    "ReplayResult",
    "Retry",
    "Run",
    "RunFinished",
    "RunOptions",
    "RunResult",
    "RunStarted",
    "RunStatistics",
    "SECOND",
    "SourceOptions",
    "StateStore",
    "StoreError",
    "Threads",
    "TransformOptions",
    "Upsert",
    "WEEK",
    "Window",
    "open_progress",
    "open_run",
    "open_store",
    "poll",
    "run",
    "windows",
]

for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("flowgraph."):
        _obj.__module__ = "flowgraph"
del _name, _obj
