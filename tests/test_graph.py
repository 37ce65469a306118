"""Declaring graphs: every mistake is a GraphError raised before anything runs."""

from __future__ import annotations

from typing import Any

import pytest

import flowgraph as fg


async def agen() -> Any:
    yield 1


async def atransform(x: int) -> int:
    return x


def stransform(x: int) -> int:
    return x


async def asink(x: int) -> None:
    pass


def linear() -> tuple[fg.Graph, fg.Node[..., Any], fg.Node[..., Any], fg.Node[..., Any]]:
    g = fg.Graph("g")
    return g, g.source(agen), g.transform(atransform), g.sink(asink)


def test_decorator_and_plain_call_forms_declare_the_same_node() -> None:
    """@graph.transform, @graph.transform(...) and graph.transform(fn) all declare nodes."""
    g = fg.Graph("g")

    @g.transform
    async def one(x: int) -> int:
        return x

    @g.transform(workers=2)
    async def two(x: int) -> int:
        return x

    three = g.transform(stransform, name="three", buffer=3)
    assert [n.name for n in g.nodes.values()] == ["one", "two", "three"]
    assert (two.workers, three.buffer) == (2, 3)


async def test_decorated_function_stays_callable() -> None:
    """A node calls through to the function it wraps."""
    g = fg.Graph("g")

    @g.transform
    async def double(x: int) -> int:
        return 2 * x

    assert await double(21) == 42


def test_chain_builds_edges_in_order() -> None:
    """chain(a, b, c) connects a->b and b->c."""
    g, src, t, sink = linear()
    g.chain(src, t, sink)
    assert g.edges == [("agen", "atransform"), ("atransform", "asink")]
    assert g.upstream(sink) == ["atransform"]


def test_nodes_can_be_referred_to_by_name() -> None:
    """connect() accepts node names as well as nodes."""
    g, *_ = linear()
    g.chain("agen", "atransform", "asink")
    g.validate()


def test_sink_cannot_have_downstream() -> None:
    """A sink used as an upstream is refused when the edge is added."""
    g, src, t, sink = linear()
    with pytest.raises(fg.GraphError, match=r"^sink 'asink' cannot have downstream 'atransform'$"):
        g.chain(src, sink, t)


def test_source_cannot_have_upstream() -> None:
    """A source used as a downstream is refused."""
    g, src, t, _ = linear()
    with pytest.raises(fg.GraphError, match=r"^source 'agen' cannot have upstream 'atransform'$"):
        g.connect(t, src)


def test_cycle_is_refused_with_its_path() -> None:
    """An edge that would close a cycle names the cycle."""
    g = fg.Graph("g")
    a = g.transform(atransform, name="a")
    b = g.transform(atransform, name="b")
    c = g.transform(atransform, name="c")
    g.chain(a, b, c)
    with pytest.raises(
        fg.GraphError, match=r"^edge 'c' -> 'a' would create a cycle: a -> b -> c -> a$"
    ):
        g.connect(c, a)


def test_self_loop_is_a_cycle() -> None:
    """A node connected to itself is a cycle."""
    g = fg.Graph("g")
    a = g.transform(atransform, name="a")
    with pytest.raises(fg.GraphError, match=r"would create a cycle: a -> a$"):
        g.connect(a, a)


def test_duplicate_edge_is_refused() -> None:
    """Connecting the same pair twice is an error, not a silent double delivery."""
    g, src, t, _ = linear()
    g.connect(src, t)
    with pytest.raises(fg.GraphError, match=r"^'agen' is already connected to 'atransform'$"):
        g.connect(src, t)


def test_duplicate_names_are_refused() -> None:
    """Two nodes with one name are refused, with the remedy."""
    g = fg.Graph("g")
    g.transform(atransform)
    with pytest.raises(
        fg.GraphError,
        match=r"^graph 'g' already has a node named 'atransform'; pass name= to tell them apart$",
    ):
        g.transform(atransform)


@pytest.mark.parametrize("workers", [0, -1, 1.5, True])
def test_workers_must_be_a_positive_int(workers: Any) -> None:
    """workers < 1 (or not an int) is refused at declaration."""
    g = fg.Graph("g")
    with pytest.raises(
        fg.GraphError,
        match=rf"^workers of transform 'atransform' must be an int >= 1 \(got {workers!r}\)$",
    ):
        g.transform(atransform, workers=workers)


def test_buffer_must_not_be_negative() -> None:
    """buffer < 0 is refused at declaration; 0 is a rendezvous and allowed."""
    g = fg.Graph("g")
    g.sink(asink, buffer=0)
    with pytest.raises(
        fg.GraphError, match=r"^buffer of transform 'atransform' must be an int >= 0 \(got -1\)$"
    ):
        g.transform(atransform, buffer=-1)


def test_inline_requires_a_sync_function() -> None:
    """inline=True on an async function is refused: only sync functions run inline."""
    g = fg.Graph("g")
    g.transform(stransform, inline=True)
    with pytest.raises(
        fg.GraphError, match=r"^inline=True runs a sync function .* drop inline=True$"
    ):
        g.transform(atransform, inline=True)


def test_route_requires_a_sync_key_function() -> None:
    """An async by= function is refused: routing keys are computed on the event loop."""
    g, src, t, _sink = linear()

    async def key(x: int) -> int:
        return x

    with pytest.raises(fg.GraphError, match=r"^route by= of 'agen' must be a plain sync function"):
        g.route(src, by=key, to={0: t})  # type: ignore[arg-type]


def test_on_error_must_be_known() -> None:
    """An unknown on_error value is refused, listing what is allowed."""
    g = fg.Graph("g")
    with pytest.raises(
        fg.GraphError, match=r"^on_error of sink 'asink' must be 'raise', 'skip', 'dead_letter'"
    ):
        g.sink(asink, on_error="ignore")  # type: ignore[call-overload]


def test_policies_must_be_policies() -> None:
    """retry= with something that is not a policy is refused."""
    g = fg.Graph("g")
    with pytest.raises(fg.GraphError, match=r"^retry= of transform 'atransform' must be a policy"):
        g.transform(atransform, retry=5)  # type: ignore[call-overload]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"retry": fg.Rate(10)},
            r"^retry= of transform 'atransform' got Rate\(10, per=1\.0\), which is a rate "
            r"policy: pass it as rate=$",
        ),
        (
            {"limit": fg.Retry(attempts=2)},
            r"^limit= of transform 'atransform' got Retry\(attempts=2\), which is a retry "
            r"policy: pass it as retry=$",
        ),
        (
            {"rate": fg.Limit(3)},
            r"^rate= of transform 'atransform' got Limit\(3\), which is a limit policy: "
            r"pass it as limit=$",
        ),
    ],
)
def test_a_policy_in_the_wrong_slot_is_refused(options: dict[str, Any], message: str) -> None:
    """A policy given to another option is named with the option it belongs to (#11)."""
    with pytest.raises(fg.GraphError, match=message):
        fg.Graph("g").transform(atransform, **options)


def test_timeout_must_be_positive() -> None:
    """timeout=0 is refused."""
    g = fg.Graph("g")
    with pytest.raises(
        fg.GraphError, match=r"^timeout of transform 'atransform' must be > 0 \(got 0\)$"
    ):
        g.transform(atransform, timeout=0)


def test_transform_whose_output_goes_nowhere_is_refused() -> None:
    """A transform with no downstream fails validation, suggesting graph.sink."""
    g, src, t, _ = linear()
    g.connect(src, t)
    with pytest.raises(
        fg.GraphError,
        match=r"^transform 'atransform' has no downstream, so its output would go nowhere",
    ):
        g.validate()


def test_node_unreachable_from_a_source_is_refused() -> None:
    """A sink with no upstream can never receive anything."""
    g, src, t, _sink = linear()
    g.connect(src, t)
    g.connect(t, g.sink(asink, name="other"))
    with pytest.raises(
        fg.GraphError, match=r"^sink 'asink' has no upstream, so no source can reach it$"
    ):
        g.validate()


def test_source_with_no_downstream_is_refused() -> None:
    """A source whose items go nowhere fails validation."""
    g = fg.Graph("g")
    g.source(agen)
    with pytest.raises(fg.GraphError, match=r"^source 'agen' has no downstream"):
        g.validate()


async def test_invalid_graph_fails_before_anything_runs() -> None:
    """run() validates first: no node function is called on an invalid graph."""
    called = []
    g = fg.Graph("g")

    @g.source
    async def src() -> Any:
        called.append("src")
        yield 1

    g.connect(src, g.transform(atransform))
    with pytest.raises(fg.GraphError):
        await g.run()
    assert called == []


def test_empty_graph_is_refused() -> None:
    """A graph with no nodes cannot run."""
    with pytest.raises(fg.GraphError, match=r"^graph 'g' has no nodes$"):
        fg.Graph("g").validate()


def test_nodes_of_another_graph_are_refused() -> None:
    """Edges only join nodes of the same graph."""
    _g1, src, *_ = linear()
    g2, _, t2, _ = linear()
    with pytest.raises(fg.GraphError, match=r"^node 'agen' belongs to graph 'g'$"):
        g2.connect(src, t2)


def test_unknown_node_name_is_refused() -> None:
    """A misspelt node name is an error naming it."""
    g, *_ = linear()
    with pytest.raises(fg.GraphError, match=r"^graph 'g' has no node 'agne'$"):
        g.connect("agne", "asink")


def test_route_and_fan_out_do_not_mix() -> None:
    """A node either fans out to all downstreams or routes to one of them."""
    g, src, t, sink = linear()
    g.route(src, by=lambda x: x, to={1: t})
    with pytest.raises(fg.GraphError, match=r"^source 'agen' already routes its items"):
        g.connect(src, sink)


def test_source_from_iterable_needs_a_name() -> None:
    """A source given as an iterable has no function name to borrow."""
    g = fg.Graph("g")
    with pytest.raises(fg.GraphError, match=r"^a source given as an iterable needs name=$"):
        g.source([1, 2, 3])


def test_source_must_be_iterable_or_callable() -> None:
    """Passing a number as a source is refused."""
    g = fg.Graph("g")
    with pytest.raises(
        fg.GraphError, match=r"^a source must be a function or an iterable \(got int\)$"
    ):
        g.source(3, name="x")  # type: ignore[call-overload]


def test_repr_names_the_graph_and_node() -> None:
    """Reprs say what a thing is."""
    g, src, *_ = linear()
    assert repr(g) == "<Graph 'g': 3 nodes>"
    assert repr(src) == "<source 'agen' of graph 'g'>"
