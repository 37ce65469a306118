"""The engine: graphs, nodes, edges and runs. Imports anyio and the standard library only."""

from ._acks import CheckpointStore
from ._barriers import Barrier
from ._batch import Batch
from ._events import (
    CheckpointCommitted,
    Event,
    ItemDeadLettered,
    ItemFailed,
    NodeFinished,
    NodeStarted,
    RunFinished,
    RunStarted,
)
from ._exceptions import (
    AttemptsExhausted,
    FlowgraphError,
    GraphError,
    NodeError,
    StoreError,
    describe_error,
    describe_item,
)
from ._executor import BoundCall, Executor, ExecutorSpec, register_executor
from ._graph import Graph
from ._inlet import Inlet
from ._nodes import Node, NodeKind, Positioned
from ._options import GraphDefaults, OnError, RunOptions, SourceOptions, TransformOptions
from ._policy import (
    Call,
    Failure,
    FailureHandler,
    NodeContext,
    NodeCounters,
    Policy,
    current_node,
)
from ._run import Run, RunResult, open_run, run_graph
from ._stats import NodeStatistics, RunStatistics
from ._threads import Threads
from ._topology import Route

__all__ = [
    "AttemptsExhausted",
    "Barrier",
    "Batch",
    "BoundCall",
    "Call",
    "CheckpointCommitted",
    "CheckpointStore",
    "Event",
    "Executor",
    "ExecutorSpec",
    "Failure",
    "FailureHandler",
    "FlowgraphError",
    "Graph",
    "GraphDefaults",
    "GraphError",
    "Inlet",
    "ItemDeadLettered",
    "ItemFailed",
    "Node",
    "NodeContext",
    "NodeCounters",
    "NodeError",
    "NodeFinished",
    "NodeKind",
    "NodeStarted",
    "NodeStatistics",
    "OnError",
    "Policy",
    "Positioned",
    "Route",
    "Run",
    "RunFinished",
    "RunOptions",
    "RunResult",
    "RunStarted",
    "RunStatistics",
    "SourceOptions",
    "StoreError",
    "Threads",
    "TransformOptions",
    "current_node",
    "describe_error",
    "describe_item",
    "open_run",
    "register_executor",
    "run_graph",
]
