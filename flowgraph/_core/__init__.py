"""The engine: graphs, nodes, edges and runs. Imports anyio and the standard library only."""

from ._acks import CheckpointStore
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
from ._graph import Graph, Route
from ._nodes import Node, NodeKind, Positioned
from ._options import GraphDefaults, OnError, RunOptions, SourceOptions, TransformOptions
from ._policy import Call, Failure, FailureHandler, NodeContext, NodeCounters, Policy
from ._run import Run, RunResult, open_run, run_graph
from ._stats import NodeStatistics, RunStatistics

__all__ = [
    "AttemptsExhausted",
    "Call",
    "CheckpointCommitted",
    "CheckpointStore",
    "Event",
    "Failure",
    "FailureHandler",
    "FlowgraphError",
    "Graph",
    "GraphDefaults",
    "GraphError",
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
    "TransformOptions",
    "describe_error",
    "describe_item",
    "open_run",
    "run_graph",
]
