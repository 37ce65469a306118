"""Property: for any DAG shape and any worker/buffer settings, sinks get exactly what the topology implies.

Nodes suspend on some items and not others, so receivers take chunks (see
``flowgraph._core._edges``) at every kind of moment, full or still filling: none
may miss an item or see one twice.
"""

from __future__ import annotations

import functools
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
    pauses: list[int] = field(default_factory=list)  # per node: suspend on items divisible by it


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
    shape.buffers = draw(st.lists(BUFFERS, min_size=n, max_size=n))
    shape.pauses = draw(st.lists(PAUSES, min_size=len(sources) + n, max_size=len(sources) + n))
    return shape


BUFFERS = st.sampled_from([0, 1, 3, 16, 40, 100])
"""Small buffers carry one item per chunk; from 16 up, several."""

PAUSES = st.sampled_from([1, 2, 3, 7, 1000])
"""A node suspends on the items divisible by this: always, often, now and then, almost never."""


async def pause_on(x: int, every: int) -> None:
    if x % every == 0:
        await anyio.lowlevel.checkpoint()


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


def make_transform(op: str, flavour: str, pause: int) -> Callable[..., Any]:
    fn = OPS[op]
    if flavour == "async":

        async def a(x: int) -> int:
            await pause_on(x, pause)
            return fn(x)[0]

        return a
    if flavour == "sync":
        return lambda x: fn(x)[0]
    if flavour == "async_gen":

        async def ag(x: int) -> AsyncIterator[int]:
            for out in fn(x):
                await pause_on(out, pause)
                yield out

        return ag

    def sg(x: int) -> Iterator[int]:
        yield from fn(x)

    return sg


def build(shape: Shape) -> tuple[fg.Graph, list[Counter[int]]]:
    g = fg.Graph("property")
    pauses = iter(shape.pauses)
    nodes: list[fg.Node[..., Any]] = [
        g.source(paused(items, next(pauses)), name=f"s{i}") for i, items in enumerate(shape.sources)
    ]
    settings = iter(zip(shape.workers, shape.buffers, strict=True))
    for i, (op, flavour, ups) in enumerate(shape.transforms):
        if flavour in ("async", "sync") and op not in ("inc", "same"):
            flavour = "sync_gen"  # one-output flavours cannot express filters or flat-maps
        workers, buffer = next(settings)
        node = g.transform(
            make_transform(op, flavour, next(pauses)),
            name=f"t{i}_{op}",
            workers=workers,
            buffer=buffer,
        )
        for up in ups:
            g.connect(nodes[up], node)
        nodes.append(node)
    seen: list[Counter[int]] = []
    for i, ups in enumerate(shape.sinks):
        received: Counter[int] = Counter()
        seen.append(received)

        async def sink(
            x: int, received: Counter[int] = received, pause: int = next(pauses)
        ) -> None:
            await pause_on(x, pause)
            received[x] += 1

        workers, buffer = next(settings)
        node = g.sink(sink, name=f"k{i}", workers=workers, buffer=buffer)
        for up in ups:
            g.connect(nodes[up], node)
    return g, seen


def paused(items: list[int], pause: int) -> Callable[[], AsyncIterator[int]]:
    """A source of *items* that suspends before the items divisible by *pause*."""

    async def source() -> AsyncIterator[int]:
        for item in items:
            await pause_on(item, pause)
            yield item

    return source


@given(shape=shapes())
async def test_every_sink_receives_exactly_what_the_topology_implies(shape: Shape) -> None:
    """Fan-out copies, fan-in merges, flat-maps multiply, filters drop: nothing else changes."""
    g, seen = build(shape)
    with anyio.fail_after(10):
        await g.run()
    assert seen == expected(shape)


@given(
    items=st.lists(st.integers(0, 10_000), max_size=300),
    buffers=st.lists(BUFFERS, min_size=3, max_size=3),
    pauses=st.lists(PAUSES, min_size=4, max_size=4),
)
async def test_a_chain_of_single_workers_keeps_order(
    items: list[int], buffers: list[int], pauses: list[int]
) -> None:
    """One worker per node: items leave every node in the order they came, however chunked."""
    g = fg.Graph("chain")
    received: list[int] = []

    async def step(x: int, pause: int) -> int:
        await pause_on(x, pause)
        return x

    async def sink(x: int) -> None:
        await pause_on(x, pauses[3])
        received.append(x)

    middle = [
        g.transform(functools.partial(step, pause=pause), name=f"t{i}", buffer=buffer)
        for i, (pause, buffer) in enumerate(zip(pauses[1:3], buffers, strict=False))
    ]
    g.chain(
        g.source(paused(items, pauses[0]), name="s"),
        *middle,
        g.sink(sink, name="k", buffer=buffers[2]),
    )
    with anyio.fail_after(10):
        await g.run()
    assert received == items
