"""The engine: graphs, nodes, edges and runs. Imports anyio and the standard library only."""

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
from ._nodes import Node, NodeKind, OnError
from ._policy import Call, Failure, FailureHandler, NodeContext, NodeCounters, Policy
from ._run import Run, RunResult, open_run, run, run_graph
from ._stats import NodeStatistics, RunStatistics

__all__ = [
    "AttemptsExhausted",
    "Call",
    "Failure",
    "FailureHandler",
    "FlowgraphError",
    "Graph",
    "GraphError",
    "Node",
    "NodeContext",
    "NodeCounters",
    "NodeError",
    "NodeKind",
    "NodeStatistics",
    "OnError",
    "Policy",
    "Route",
    "Run",
    "RunResult",
    "RunStatistics",
    "StoreError",
    "describe_error",
    "describe_item",
    "open_run",
    "run",
    "run_graph",
]
