"""New graphs made from a graph: a copy to extend, and a feed into the middle of it.

Both copy nodes with the options in effect, edges, routes, hooks and barriers;
replaying dead letters uses them to run items through part of a graph, or
through the graph with more sources.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from ._exceptions import GraphError
from ._nodes import NodeKind

if TYPE_CHECKING:
    from collections.abc import AsyncIterable, Iterable, Mapping

    from ._graph import Graph
    from ._topology import NodeRef

G = TypeVar("G", bound="Graph")


def unique(base: str, taken: Mapping[str, object]) -> str:
    """*base*, or *base* followed by the first number that makes it a name not in *taken*."""
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}{n}"
    return name


def feed(graph: G, node: NodeRef, items: Iterable[Any] | AsyncIterable[Any], **changes: Any) -> G:
    """A new graph feeding *items* into *node* and everything downstream of it."""
    start = graph._resolve(node)
    if start.kind is NodeKind.SOURCE:
        raise GraphError(f"cannot feed items into source {start.name!r}: it takes no input")
    reached = [start.name]
    for name in reached:
        reached.extend(d for d in graph._downstream[name] if d not in reached)
    fed = type(graph)(graph.name)
    fed._hooks = {kind: list(fns) for kind, fns in graph._hooks.items()}
    feeder = fed.source(items, name=unique("feed", graph._nodes))
    for name in reached:
        fed._add(graph._nodes[name].copy_to(fed, **(changes if name == start.name else {})))
    fed.connect(feeder, start.name)
    _copy_edges(graph, fed, reached)
    return fed


def copy(graph: G) -> G:
    """A copy of *graph* with the same name, defaults, nodes, edges, hooks and barriers."""
    copied = type(graph)(graph.name)
    copied.defaults = graph.defaults
    copied._hooks = {kind: list(fns) for kind, fns in graph._hooks.items()}
    copied._barriers = dict(graph._barriers)
    for node in graph._nodes.values():
        copied._add(node.copy_to(copied))
    _copy_edges(graph, copied, list(graph._nodes))
    return copied


def _copy_edges(graph: Graph, to: Graph, names: list[str]) -> None:
    """Declare in *to* the edges and routes leaving the nodes *names* of *graph*."""
    for name in names:
        if name in graph._routes:
            route = graph._routes[name]
            to.route(name, by=route.by, to=route.targets, default=route.default)
        else:
            for down in graph._downstream[name]:
                to.connect(name, down)
