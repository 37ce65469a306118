"""Drawing graphs: Mermaid and DOT text, shapes, settings, route labels, escaping."""

from __future__ import annotations

import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from typing import Any

import pytest

import flowgraph as fg
from flowgraph._core._draw import to_dot, to_mermaid


async def _noop(item: Any) -> Any:
    return item


async def _pages() -> Any:
    yield 1


def _small_graph() -> fg.Graph:
    graph = fg.Graph("breweries")
    pages = graph.source(_pages, name="pages")
    fetch = graph.transform(
        _noop, name="fetch", workers=8, retry=fg.Retry(attempts=5), rate=fg.Rate(10, per=1.0)
    )
    store = graph.sink(_noop, name="store")
    graph.chain(pages, fetch, store)
    return graph


def test_mermaid_of_a_small_graph() -> None:
    """A chain draws as a left-to-right flowchart with settings on the second line."""
    assert _small_graph().to_mermaid() == (
        "flowchart LR\n"
        '    n0(["pages"])\n'
        '    n1["fetch<br/>workers=8 · Retry(attempts=5) · Rate(10, per=1.0)"]\n'
        '    n2[("store")]\n'
        "    n0 --> n1\n"
        "    n1 --> n2\n"
    )


def test_dot_of_a_small_graph() -> None:
    """A chain draws as a digraph with one shape per kind."""
    assert _small_graph().to_dot() == (
        'digraph "breweries" {\n'
        "    rankdir=LR;\n"
        '    node [fontname="Helvetica"];\n'
        '    edge [fontname="Helvetica"];\n'
        '    n0 [label="pages", shape=box, style="rounded"];\n'
        '    n1 [label="fetch\\nworkers=8 · Retry(attempts=5) · Rate(10, per=1.0)", shape=box];\n'
        '    n2 [label="store", shape=cylinder];\n'
        "    n0 -> n1;\n"
        "    n1 -> n2;\n"
        "}\n"
    )


def test_graph_methods_match_the_functions() -> None:
    """``graph.to_mermaid()`` and ``graph.to_dot()`` are the drawing functions."""
    graph = _small_graph()
    assert graph.to_mermaid() == to_mermaid(graph)
    assert graph.to_dot() == to_dot(graph)


def test_every_non_default_setting_is_shown_in_order() -> None:
    """Workers, buffer, ordered, inline, then retry, rate, limit, timeout and on_error."""

    class Handler:
        async def handle(self, failure: fg.Failure) -> None: ...

    def parse(item: Any) -> Any:
        return item

    graph = fg.Graph("g")
    src = graph.source([1], name="src")
    mid = graph.transform(
        _noop,
        name="mid",
        workers=4,
        buffer=0,
        ordered=True,
        retry=fg.Retry(attempts=2),
        rate=fg.Rate(5, per=2.0),
        limit=fg.Limit(3),
        timeout=1.5,
        on_error="skip",
    )
    quick = graph.transform(parse, inline=True, on_error=Handler())
    graph.chain(src, mid, quick, graph.sink(_noop, name="out"))
    assert graph.to_mermaid().splitlines()[1:5] == [
        '    n0(["src"])',
        '    n1["mid<br/>workers=4 · buffer=0 · ordered · Retry(attempts=2) · Rate(5, per=2.0)'
        ' · Limit(3) · timeout=1.5s · on_error=skip"]',
        '    n2["parse<br/>inline · on_error=Handler"]',
        '    n3[("out")]',
    ]


def test_checkpointed_source_shows_its_settings() -> None:
    """A source shows checkpoint and a non-default max_in_flight; nothing else applies."""

    def numbers(after: Any) -> Any:
        return range(3)

    graph = fg.Graph("g")
    graph.connect(
        graph.source(numbers, checkpoint=True, max_in_flight=50), graph.sink(_noop, name="out")
    )
    assert '    n0(["numbers<br/>checkpoint · max_in_flight=50"])' in graph.to_mermaid()


def test_fan_out_and_fan_in_draw_every_edge_in_declaration_order() -> None:
    """Fan-out gives one arrow per downstream, fan-in one per upstream, unlabelled."""
    graph = fg.Graph("diamond")
    src = graph.source([1], name="src")
    left, right = graph.transform(_noop, name="left"), graph.transform(_noop, name="right")
    join = graph.sink(_noop, name="join")
    graph.connect(src, left, right)
    graph.connect(left, join)
    graph.connect(right, join)
    mermaid = graph.to_mermaid().splitlines()
    assert mermaid[-4:] == ["    n0 --> n1", "    n0 --> n2", "    n1 --> n3", "    n2 --> n3"]
    dot = graph.to_dot().splitlines()
    assert dot[-5:-1] == ["    n0 -> n1;", "    n0 -> n2;", "    n1 -> n3;", "    n2 -> n3;"]


def test_route_edges_are_labelled_with_their_keys() -> None:
    """Keys sharing a target are joined; the default target is labelled ``default``."""
    graph = fg.Graph("router")
    src = graph.source([1], name="src")
    books, music, other = (graph.sink(_noop, name=n) for n in ("books", "music", "other"))
    graph.route(src, by=lambda item: item, to={"book": books, 1: books, "cd": music}, default=other)
    assert graph.to_mermaid().splitlines()[-3:] == [
        '    n0 -->|"book, 1"| n1',
        '    n0 -->|"cd"| n2',
        '    n0 -->|"default"| n3',
    ]
    assert graph.to_dot().splitlines()[-4:-1] == [
        '    n0 -> n1 [label="book, 1"];',
        '    n0 -> n2 [label="cd"];',
        '    n0 -> n3 [label="default"];',
    ]


def test_default_target_also_named_by_a_key() -> None:
    """A target that is both a key's and the default gets one edge with both labels."""
    graph = fg.Graph("g")
    src = graph.source([1], name="src")
    a, b = graph.sink(_noop, name="a"), graph.sink(_noop, name="b")
    graph.route(src, by=lambda item: item, to={"x": a, "y": b}, default=a)
    assert graph.to_mermaid().splitlines()[-2:] == [
        '    n0 -->|"x, default"| n1',
        '    n0 -->|"y"| n2',
    ]


NASTY = 'say "hi" #1; <b>&amp;</b> \\ été 🚀'


def _nasty_graph() -> fg.Graph:
    graph = fg.Graph('my "graph"')
    src = graph.source([1], name=NASTY)
    graph.route(src, by=lambda item: item, to={'k"<&>': graph.sink(_noop, name="two\nlines")})
    return graph


def test_mermaid_escapes_names_and_keys() -> None:
    """Quotes, entities, HTML and newlines cannot break out of a Mermaid label."""
    lines = _nasty_graph().to_mermaid().splitlines()
    assert lines == [
        "flowchart LR",
        '    n0(["say #34;hi#34; #35;1; #60;b#62;#38;amp;#60;/b#62; \\ été 🚀"])',
        '    n1[("two<br/>lines")]',
        '    n0 -->|"k#34;#60;#38;#62;"| n1',
    ]


def test_mermaid_output_is_well_formed() -> None:
    """Every line is a node or an edge statement, with quoted labels free of raw quotes."""
    node = re.compile(r'^    n\d+(\(\[|\[\(|\[)"[^"]*"(\]\)|\)\]|\])$')
    edge = re.compile(r'^    n\d+ -->(\|"[^"]*"\|)? n\d+$')
    for graph in (_small_graph(), _nasty_graph()):
        header, *body = graph.to_mermaid().splitlines()
        assert header == "flowchart LR"
        assert all(node.match(line) or edge.match(line) for line in body), body


def test_dot_escapes_names_and_keys() -> None:
    """Quotes and backslashes are escaped; newlines become DOT line breaks."""
    lines = _nasty_graph().to_dot().splitlines()
    assert lines[0] == 'digraph "my \\"graph\\"" {'
    assert lines[4:7] == [
        '    n0 [label="say \\"hi\\" #1; <b>&amp;amp;</b> \\\\ été 🚀", shape=box, style="rounded"];',
        '    n1 [label="two\\nlines", shape=cylinder];',
        '    n0 -> n1 [label="k\\"<&amp;>"];',
    ]


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz dot is not installed")
def test_dot_output_renders_with_graphviz() -> None:
    """Graphviz parses the output and shows names, settings and keys verbatim."""
    graph = _nasty_graph()
    fetch = graph.transform(_noop, name="trailing\\", workers=2)
    graph.connect(fetch, graph.sink(_noop, name="end"))
    graph.connect(graph.source([1], name="other source"), fetch)
    done = subprocess.run(
        ["dot", "-Tsvg"], input=graph.to_dot(), capture_output=True, text=True, check=True
    )
    assert done.stderr == ""
    texts = [el.text for el in ET.fromstring(done.stdout).iter("{http://www.w3.org/2000/svg}text")]
    assert NASTY in texts
    assert {"two", "lines", 'k"<&>', "trailing\\", "workers=2", "other source"} <= set(texts)
