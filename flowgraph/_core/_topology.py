"""The structure of a graph: its nodes by name, its edges and routes, and the checks on them.

Every edge is checked as it is added (a sink with a downstream, a source with
an upstream, a repeated edge, a cycle), and :meth:`Topology.validate` checks
the whole before a run: every node reachable from a source, every output
going somewhere. :class:`~flowgraph.Graph` adds declaring nodes, hooks and
barriers on top.
"""

from __future__ import annotations

import itertools
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from ._exceptions import GraphError
from ._functions import FnKind, fn_kind
from ._inlet import Inlet
from ._nodes import Node, NodeKind

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable, Iterator, Mapping

P = ParamSpec("P")
R = TypeVar("R")
NodeRef = Node[..., Any] | Inlet | str


@dataclass(frozen=True, slots=True)
class Route:
    """Send each item of ``upstream`` to the one downstream that ``by(item)`` names."""

    by: Callable[[Any], Hashable]
    targets: Mapping[Hashable, str]
    default: str | None


class Topology:
    """Nodes by name and the edges between them, checked as they are added."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._nodes: dict[str, Node[..., Any]] = {}
        self._downstream: dict[str, list[str]] = {}
        self._upstream: dict[str, list[str]] = {}
        self._routes: dict[str, Route] = {}
        self._runs = 0

    @contextmanager
    def running(self) -> Iterator[None]:
        """Mark the graph as running for the block: changing it meanwhile is refused."""
        self._runs += 1
        try:
            yield
        finally:
            self._runs -= 1

    def _check_not_running(self) -> None:
        if self._runs:
            raise GraphError(
                f"graph {self.name!r} is running: declare its nodes, edges and hooks before "
                "it runs, or build another graph"
            )

    def _add(self, node: Node[P, R]) -> Node[P, R]:
        self._check_not_running()
        if node.name in self._nodes:
            raise GraphError(
                f"graph {self.name!r} already has a node named {node.name!r}; "
                "pass name= to tell them apart"
            )
        self._nodes[node.name] = node
        self._downstream[node.name] = []
        self._upstream[node.name] = []
        return node

    # -- edges -----------------------------------------------------------------------

    def connect(self, upstream: NodeRef, *downstream: NodeRef) -> None:
        """Send every item of *upstream* to each of *downstream* (fan-out).

        Connecting several upstreams to one node merges them (fan-in): the node's
        input ends when all of them have finished.

        Raises:
            GraphError: for unknown nodes, a sink used as upstream, a source used as
                downstream, a repeated edge, or an edge that would close a cycle.
        """
        if not downstream:
            raise GraphError("connect() needs at least one downstream node")
        up = self._resolve(upstream)
        if up.name in self._routes:
            raise GraphError(
                f"{up.kind.value} {up.name!r} already routes its items; it cannot also fan out"
            )
        for target in downstream:
            self._add_edge(up, self._resolve(target))

    def chain(self, *nodes: NodeRef) -> None:
        """Connect *nodes* in a line: ``chain(a, b, c)`` is ``connect(a, b); connect(b, c)``."""
        if len(nodes) < 2:
            raise GraphError("chain() needs at least two nodes")
        for up, down in itertools.pairwise(nodes):
            self.connect(up, down)

    def route(
        self,
        upstream: NodeRef,
        *,
        by: Callable[[Any], Hashable],
        to: Mapping[Hashable, NodeRef],
        default: NodeRef | None = None,
    ) -> None:
        """Send each item of *upstream* to exactly one downstream: ``to[by(item)]``.

        *by* is a quick sync function called on the event loop for every item. An
        item whose key is not in *to* goes to *default*; with no default it fails
        the node like any other error (so it can be skipped or dead-lettered).
        """
        up = self._resolve(upstream)
        if up.name in self._routes or self._downstream[up.name]:
            raise GraphError(f"{up.kind.value} {up.name!r} already has downstream nodes")
        if not callable(by) or fn_kind(by) is not FnKind.SYNC:
            raise GraphError(
                f"route by= of {up.name!r} must be a plain sync function returning a key "
                f"(got {by!r})"
            )
        if not to:
            raise GraphError(f"route of {up.name!r} needs at least one target in to=")
        targets = {key: self._resolve(node) for key, node in to.items()}
        fallback = None if default is None else self._resolve(default)
        for node in {
            n.name: n for n in [*targets.values(), *([fallback] if fallback else [])]
        }.values():
            self._add_edge(up, node)
        self._routes[up.name] = Route(
            by=by,
            targets={key: node.name for key, node in targets.items()},
            default=None if fallback is None else fallback.name,
        )

    def _add_edge(self, up: Node[..., Any], down: Node[..., Any]) -> None:
        self._check_not_running()
        if up.kind is NodeKind.SINK:
            raise GraphError(f"sink {up.name!r} cannot have downstream {down.name!r}")
        if down.kind is NodeKind.SOURCE:
            raise GraphError(f"source {down.name!r} cannot have upstream {up.name!r}")
        if down.name in self._downstream[up.name]:
            raise GraphError(f"{up.name!r} is already connected to {down.name!r}")
        path = self._path(down.name, up.name)
        if path is not None:
            cycle = " -> ".join([*path, down.name])
            raise GraphError(f"edge {up.name!r} -> {down.name!r} would create a cycle: {cycle}")
        self._downstream[up.name].append(down.name)
        self._upstream[down.name].append(up.name)

    def _path(self, start: str, goal: str) -> list[str] | None:
        """Return a path of node names from *start* to *goal*, if there is one."""
        stack: list[tuple[str, list[str]]] = [(start, [start])]
        seen: set[str] = set()
        while stack:
            name, path = stack.pop()
            if name == goal:
                return path
            if name not in seen:
                seen.add(name)
                stack.extend((nxt, [*path, nxt]) for nxt in self._downstream[name])
        return None

    def _resolve(self, ref: NodeRef) -> Node[..., Any]:
        if isinstance(ref, Inlet):
            ref = ref.node
        if isinstance(ref, Node):
            if ref.graph is not self:
                raise GraphError(f"node {ref.name!r} belongs to graph {ref.graph.name!r}")
            return ref
        if isinstance(ref, str) and ref in self._nodes:
            return self._nodes[ref]
        raise GraphError(f"graph {self.name!r} has no node {ref!r}")

    # -- inspection and validation ---------------------------------------------------

    @property
    def nodes(self) -> Mapping[str, Node[..., Any]]:
        """The nodes by name, in declaration order."""
        return dict(self._nodes)

    @property
    def edges(self) -> list[tuple[str, str]]:
        """Every edge as ``(upstream, downstream)``, in declaration order."""
        return [(up, down) for up, downs in self._downstream.items() for down in downs]

    def upstream(self, node: NodeRef) -> list[str]:
        """Names of the nodes that feed *node*."""
        return list(self._upstream[self._resolve(node).name])

    def downstream(self, node: NodeRef) -> list[str]:
        """Names of the nodes that *node* feeds."""
        return list(self._downstream[self._resolve(node).name])

    def route_of(self, node: NodeRef) -> Route | None:
        """The routing rule of *node*, or ``None`` if it fans out to every downstream."""
        return self._routes.get(self._resolve(node).name)

    def validate(self) -> None:
        """Check that every node is wired so that the graph can run and finish.

        Raises:
            GraphError: naming the first node that is not wired correctly.
        """
        if not self._nodes:
            raise GraphError(f"graph {self.name!r} has no nodes")
        for name, node in self._nodes.items():
            ups, downs = self._upstream[name], self._downstream[name]
            if node.kind is NodeKind.SOURCE and not downs:
                raise GraphError(f"source {name!r} has no downstream: connect it to a node")
            if node.kind is not NodeKind.SOURCE and not ups:
                raise GraphError(
                    f"{node.kind.value} {name!r} has no upstream, so no source can reach it"
                )
            if node.kind is NodeKind.TRANSFORM and not downs:
                raise GraphError(
                    f"transform {name!r} has no downstream, so its output would go nowhere: "
                    "connect it, or declare it with graph.sink"
                )
