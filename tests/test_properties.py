"""Property: for any DAG shape and any worker/buffer settings, sinks get exactly what the topology implies."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.lowlevel
from hypothesis import given
from hypothesis import strategies as st

import flowgraph as fg

OPS: dict[str, Callable[[int], list[int]]] = {
    "inc": lambda x: [x + 1],
    "dup": lambda x: [x, x],
    "even": lambda x: [x] if x % 2 == 0 else [],
    "same": lambda x: [x],
}


@dataclass
class Shape:
    """A DAG in topological order: each node lists the indexes of its upstreams."""

    sources: list[list[int]]
    transforms: list[tuple[str, str, list[int]]] = field(default_factory=list)  # op, flavour, ups
    sinks: list[list[int]] = field(default_factory=list)
    workers: list[int] = field(default_factory=list)
    buffers: list[int] = field(default_factory=list)


@st.composite
def shapes(draw: st.DrawFn) -> Shape:
    sources = draw(st.lists(st.lists(st.integers(0, 50), max_size=8), min_size=1, max_size=3))
    shape = Shape(sources=sources)
    producers = list(range(len(sources)))
    for _ in range(draw(st.integers(0, 4))):
        ups = draw(st.lists(st.sampled_from(producers), min_size=1, max_size=3, unique=True))
        op = draw(st.sampled_from(sorted(OPS)))
        flavour = draw(st.sampled_from(["async", "sync", "async_gen", "sync_gen"]))
        shape.transforms.append((op, flavour, ups))
        producers.append(len(producers))
    for _ in range(draw(st.integers(1, 3))):
        shape.sinks.append(
            draw(st.lists(st.sampled_from(producers), min_size=1, max_size=3, unique=True))
        )
    fed = {up for _, _, ups in shape.transforms for up in ups} | {
        up for ups in shape.sinks for up in ups
    }
    for producer in producers:
        if producer not in fed:
            shape.sinks[0].append(producer)
    n = len(shape.transforms) + len(shape.sinks)
    shape.workers = draw(st.lists(st.integers(1, 4), min_size=n, max_size=n))
    shape.buffers = draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
    return shape


def expected(shape: Shape) -> list[Counter[int]]:
    outputs: list[Counter[int]] = [Counter(items) for items in shape.sources]
    for op, _, ups in shape.transforms:
        out: Counter[int] = Counter()
        for up in ups:
            for item, count in outputs[up].items():
                for result in OPS[op](item):
                    out[result] += count
        outputs.append(out)
    return [sum((outputs[up] for up in ups), Counter()) for ups in shape.sinks]


def make_transform(op: str, flavour: str) -> Callable[..., Any]:
    fn = OPS[op]
    if flavour == "async":

        async def a(x: int) -> int:
            await anyio.lowlevel.checkpoint()
            return fn(x)[0]

        return a
    if flavour == "sync":
        return lambda x: fn(x)[0]
    if flavour == "async_gen":

        async def ag(x: int) -> AsyncIterator[int]:
            for out in fn(x):
                yield out

        return ag

    def sg(x: int) -> Iterator[int]:
        yield from fn(x)

    return sg


def build(shape: Shape) -> tuple[fg.Graph, list[Counter[int]]]:
    g = fg.Graph("property")
    nodes: list[fg.Node[..., Any]] = [
        g.source(list(items), name=f"s{i}") for i, items in enumerate(shape.sources)
    ]
    settings = iter(zip(shape.workers, shape.buffers, strict=True))
    for i, (op, flavour, ups) in enumerate(shape.transforms):
        if flavour in ("async", "sync") and op not in ("inc", "same"):
            flavour = "sync_gen"  # one-output flavours cannot express filters or flat-maps
        workers, buffer = next(settings)
        node = g.transform(
            make_transform(op, flavour), name=f"t{i}_{op}", workers=workers, buffer=buffer
        )
        for up in ups:
            g.connect(nodes[up], node)
        nodes.append(node)
    seen: list[Counter[int]] = []
    for i, ups in enumerate(shape.sinks):
        received: Counter[int] = Counter()
        seen.append(received)

        async def sink(x: int, received: Counter[int] = received) -> None:
            received[x] += 1

        workers, buffer = next(settings)
        node = g.sink(sink, name=f"k{i}", workers=workers, buffer=buffer)
        for up in ups:
            g.connect(nodes[up], node)
    return g, seen


@given(shape=shapes())
async def test_every_sink_receives_exactly_what_the_topology_implies(shape: Shape) -> None:
    """Fan-out copies, fan-in merges, flat-maps multiply, filters drop: nothing else changes."""
    g, seen = build(shape)
    with anyio.fail_after(10):
        await g.run()
    assert seen == expected(shape)
