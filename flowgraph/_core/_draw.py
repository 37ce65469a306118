"""Draw a graph as Mermaid or Graphviz DOT text, for docs, reviews and ``flowgraph show``.

Both formats show the same thing: one box per node, shaped by its kind (a
rounded box for a source, a plain box for a transform, a cylinder for a sink),
labelled with the node's name and the options that differ from the defaults,
and one arrow per edge, labelled with the route keys that select it. Output
follows declaration order, so the same graph always draws the same text and
diffs of drawings stay small.

Node names are arbitrary strings, so nodes get generated identifiers (``n0``,
``n1``...) and names only ever appear inside quoted, escaped labels.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._nodes import NodeKind
from ._options import DEFAULT_BUFFER, DEFAULT_MAX_IN_FLIGHT

if TYPE_CHECKING:
    from collections.abc import Hashable, Iterator

    from ._graph import Graph
    from ._nodes import Node

SEPARATOR = " · "
"""Between the settings on a label's second line."""

# Mermaid: a quoted label inside (open, close) brackets.
_MERMAID_SHAPES = {
    NodeKind.SOURCE: ("([", "])"),
    NodeKind.TRANSFORM: ("[", "]"),
    NodeKind.SINK: ("[(", ")]"),
}
_DOT_SHAPES = {
    NodeKind.SOURCE: 'shape=box, style="rounded"',
    NodeKind.TRANSFORM: "shape=box",
    NodeKind.SINK: "shape=cylinder",
}


def settings(node: Node[..., Any]) -> list[str]:
    """The node's options that differ from their defaults, short, in a fixed order."""
    parts: list[str] = []
    if node.kind is NodeKind.SOURCE:
        if node.checkpoint:
            parts.append("checkpoint")
        if node.max_in_flight != DEFAULT_MAX_IN_FLIGHT:
            parts.append(f"max_in_flight={node.max_in_flight}")
        return parts
    if node.workers != 1:
        parts.append(f"workers={node.workers}")
    if node.buffer != DEFAULT_BUFFER:
        parts.append(f"buffer={node.buffer}")
    if node.ordered:
        parts.append("ordered")
    if node.inline:
        parts.append("inline")
    parts.extend(repr(p) for p in (node.retry, node.rate, node.limit) if p is not None)
    if node.timeout is not None:
        parts.append(f"timeout={node.timeout.seconds:g}s")
    if isinstance(node.on_error, str):
        if node.on_error != "raise":
            parts.append(f"on_error={node.on_error}")
    else:
        parts.append(f"on_error={type(node.on_error).__name__}")
    return parts


def edge_labels(graph: Graph) -> dict[tuple[str, str], str]:
    """Labels of routed edges: the keys that choose each target, then ``default``."""
    labels: dict[tuple[str, str], str] = {}
    for name in graph.nodes:
        route = graph.route_of(name)
        if route is None:
            continue
        keys: dict[str, list[str]] = {}
        for key, target in route.targets.items():
            keys.setdefault(target, []).append(_key_text(key))
        if route.default is not None:
            keys.setdefault(route.default, []).append("default")
        for target, texts in keys.items():
            labels[name, target] = ", ".join(texts)
    return labels


def _key_text(key: Hashable) -> str:
    return key if isinstance(key, str) else repr(key)


# -- Mermaid -------------------------------------------------------------------------

# Inside a quoted Mermaid label, "#code;" is an entity: these characters would
# otherwise end the label, start an entity, or be read as HTML.
_MERMAID_ESCAPES = {c: f"#{ord(c)};" for c in '"#&<>`'}


def _mermaid_text(text: str) -> str:
    out = []
    for char in text:
        if char in _MERMAID_ESCAPES:
            out.append(_MERMAID_ESCAPES[char])
        elif char == "\n":
            out.append("<br/>")
        elif not char.isprintable():
            out.append(f"#{ord(char)};")
        else:
            out.append(char)
    return "".join(out)


def to_mermaid(graph: Graph) -> str:
    """Return *graph* as a Mermaid ``flowchart LR``, one statement per line."""
    lines = ["flowchart LR"]
    for id_, node, texts in _nodes(graph):
        opening, closing = _MERMAID_SHAPES[node.kind]
        label = "<br/>".join(_mermaid_text(text) for text in texts)
        lines.append(f'    {id_}{opening}"{label}"{closing}')
    for up, down, key in _edges(graph):
        arrow = "-->" if key is None else f'-->|"{_mermaid_text(key)}"|'
        lines.append(f"    {up} {arrow} {down}")
    return "\n".join(lines) + "\n"


# -- DOT -----------------------------------------------------------------------------


def _dot_string(text: str) -> str:
    """A DOT quoted string for a label.

    In labels Graphviz reads ``\\n`` as a line break, ``\\\\`` as a backslash and
    decodes HTML entities, so ``&`` is written ``&amp;``.
    """
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("&", "&amp;")
    escaped = escaped.replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\n")
    return f'"{escaped}"'


def to_dot(graph: Graph) -> str:
    """Return *graph* as a Graphviz ``digraph``, laid out left to right."""
    lines = [
        f"digraph {_dot_string(graph.name)} {{",
        "    rankdir=LR;",
        '    node [fontname="Helvetica"];',
        '    edge [fontname="Helvetica"];',
    ]
    for id_, node, texts in _nodes(graph):
        label = _dot_string("\n".join(texts))
        lines.append(f"    {id_} [label={label}, {_DOT_SHAPES[node.kind]}];")
    for up, down, key in _edges(graph):
        attrs = "" if key is None else f" [label={_dot_string(key)}]"
        lines.append(f"    {up} -> {down}{attrs};")
    lines.append("}")
    return "\n".join(lines) + "\n"


# -- shared --------------------------------------------------------------------------


def _nodes(graph: Graph) -> Iterator[tuple[str, Node[..., Any], list[str]]]:
    """``(id, node, label lines)`` per node: the name, then its settings if any."""
    for i, (name, node) in enumerate(graph.nodes.items()):
        extra = settings(node)
        yield f"n{i}", node, [name, SEPARATOR.join(extra)] if extra else [name]


def _edges(graph: Graph) -> Iterator[tuple[str, str, str | None]]:
    """``(upstream id, downstream id, label or None)`` per edge."""
    ids = {name: f"n{i}" for i, name in enumerate(graph.nodes)}
    labels = edge_labels(graph)
    for up, down in graph.edges:
        yield ids[up], ids[down], labels.get((up, down))
