"""Node and run options: one typed definition, graph defaults, and errors that name the fix (#11, #14)."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from typing import Any

import pytest

import flowgraph as fg


async def double(x: int) -> int:
    return 2 * x


async def collect(x: Any) -> None:
    pass


def test_graph_defaults_apply_to_nodes_that_do_not_set_them() -> None:
    """fg.Graph("g", buffer=100, workers=4, retry=...) sets every node's option unless it sets its own."""
    retry = fg.Retry(attempts=2)
    g = fg.Graph("g", buffer=100, workers=4, retry=retry, max_in_flight=50)

    def src(position: int | None) -> list[fg.Positioned]:
        return []

    source = g.source(src, checkpoint=True)
    t = g.transform(double)
    s = g.sink(collect, workers=1)
    assert (t.buffer, t.workers, t.retry) == (100, 4, retry)
    assert (s.buffer, s.workers, s.retry) == (100, 1, retry)
    assert source.max_in_flight == 50


def test_a_fed_copy_keeps_the_options_in_effect() -> None:
    """graph.feed() copies nodes with their options, graph defaults included."""
    g = fg.Graph("g", buffer=64, workers=3)
    g.chain(g.source([1], name="src"), g.transform(double), g.sink(collect))
    fed = g.feed("double", [2])
    assert (fed.nodes["double"].buffer, fed.nodes["double"].workers) == (64, 3)


@pytest.mark.parametrize(
    ("declare", "message"),
    [
        (
            lambda g: g.transform(double, workrs=3),
            r"^transform 'double' has no option 'workrs': did you mean 'workers'\? valid ones "
            r"are batch, buffer, executor, idempotent, inline, key, limit, on_error, ordered, rate, "
            r"retry, timeout, workers$",
        ),
        (
            lambda g: g.sink(collect, on_eror="skip"),
            r"^sink 'collect' has no option 'on_eror': did you mean 'on_error'\?",
        ),
        (
            lambda g: g.source([1], name="src", workers=2),
            r"^source 'src' has no option 'workers': valid ones are checkpoint, idempotent, "
            r"max_in_flight, on_error, rate, retry, timeout$",
        ),
        (
            lambda g: fg.Graph("g", worker=2),  # type: ignore[call-arg]
            r"^graph 'g' has no default 'worker': did you mean 'workers'\?",
        ),
        (
            lambda g: fg.Graph("g", workers=0),
            r"^workers of graph 'g' must be an int >= 1 \(got 0\)$",
        ),
        (
            lambda g: fg.Graph("g", retry=fg.Limit(2)),
            r"^retry= of graph 'g' got Limit\(2\), which is a limit policy: pass it as limit=$",
        ),
        (
            lambda g: g.transform(double, ordered="yes"),
            r"^ordered of transform 'double' must be True, False or 'key' \(got 'yes'\)$",
        ),
    ],
)
def test_unknown_or_bad_options_are_refused_with_the_fix(declare: Any, message: str) -> None:
    """A misspelt or invalid option is a GraphError at declaration naming the nearest valid one."""
    with pytest.raises(fg.GraphError, match=message):
        declare(fg.Graph("g"))


def test_graph_error_is_a_value_error_and_a_type_error() -> None:
    """One family for bad arguments: a wrong value and a wrong type are both GraphError."""
    with pytest.raises(fg.GraphError, match=r"^timeout of transform 'double' must be a number"):
        fg.Graph("g").transform(double, timeout="soon")  # type: ignore[call-overload]
    assert issubclass(fg.GraphError, ValueError)
    assert issubclass(fg.GraphError, TypeError)


async def test_an_unknown_run_option_is_refused_before_anything_opens() -> None:
    """graph.run(dead_leters=...) names the option it meant."""
    g = fg.Graph("g")
    g.chain(g.source([1], name="src"), g.sink(collect))
    with pytest.raises(
        fg.GraphError, match=r"^a run has no option 'dead_leters': did you mean 'dead_letters'\?"
    ):
        await g.run(dead_leters=None)  # type: ignore[call-arg]


def test_an_unknown_program_option_is_refused_before_a_loop_starts() -> None:
    """fg.run(handle_signal=...) names the option it meant, before any backend starts."""
    g = fg.Graph("g")
    g.chain(g.source([1], name="src"), g.sink(collect))
    with pytest.raises(
        fg.GraphError,
        match=r"^fg.run\(\) has no option 'handle_signal': did you mean 'handle_signals'\?",
    ):
        fg.run(g, handle_signal=False)  # type: ignore[call-overload]


class _RecordingSink:
    """A sink holding a resource: records when the run opens and closes it."""

    def __init__(self) -> None:
        self.__name__ = "recording"
        self.events: list[str] = []

    async def __aenter__(self) -> _RecordingSink:
        self.events.append("open")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.events.append("close")

    async def __call__(self, item: Any) -> None:
        pass


async def test_declaration_errors_come_before_any_resource_is_opened() -> None:
    """A dead-letter node without a store is refused before the sink's connection opens (#14)."""
    sink = _RecordingSink()
    g = fg.Graph("g")
    g.chain(g.source([1], name="src"), g.sink(sink, on_error="dead_letter"))
    with pytest.raises(fg.GraphError, match=r"has no dead-letter store"):
        await g.run()
    assert sink.events == []


async def test_changing_a_running_graph_is_refused() -> None:
    """Nodes, edges and hooks cannot be added while the graph runs (#14)."""
    g = fg.Graph("g")
    g.chain(g.source([1, 2], name="src"), g.sink(collect))
    message = r"^graph 'g' is running: declare its nodes, edges and hooks before it runs"
    async with fg.open_run(g):
        with pytest.raises(fg.GraphError, match=message):
            g.sink(double, name="late")
        with pytest.raises(fg.GraphError, match=message):
            g.connect("src", "collect")
        with pytest.raises(fg.GraphError, match=message):
            g.on(fg.RunFinished)(print)
    g.sink(double, name="after")  # allowed again once the run is over


def _logged(fn: Any) -> Any:
    @functools.wraps(fn)
    def wrapper(*args: Any) -> Any:
        return fn(*args)

    return wrapper


@_logged
async def _wrapped_expand(x: int) -> AsyncIterator[int]:
    yield x
    yield x + 100


@_logged
async def _wrapped_double(x: int) -> int:
    return 2 * x


async def test_functions_behind_wraps_keep_their_kind() -> None:
    """A functools.wraps wrapper of an async generator is an async generator node (#14)."""
    g = fg.Graph("g")
    seen: list[int] = []

    async def keep(x: int) -> None:
        seen.append(x)

    g.chain(
        g.source([1, 2], name="src"),
        g.transform(_wrapped_expand),
        g.transform(_wrapped_double),
        g.sink(keep),
    )
    await g.run()
    assert sorted(seen) == [2, 4, 202, 204]


class Scale:
    def __init__(self, factor: int) -> None:
        self.factor = factor

    def __call__(self, x: int) -> int:
        return self.factor * x


def test_partials_and_callable_objects_are_named_after_what_they_call() -> None:
    """No name= needed for functools.partial or a callable object (#14)."""
    g = fg.Graph("g")
    assert g.transform(functools.partial(double)).name == "double"
    assert g.transform(Scale(3)).name == "Scale"


async def test_a_generator_sink_counts_what_it_consumed() -> None:
    """A sink written as a generator reports its consumed items as items_out (#14)."""
    g = fg.Graph("g")

    def writer(x: int) -> Any:
        yield x

    g.chain(g.source(range(5), name="src"), g.sink(writer))
    result = await g.run()
    assert result.statistics["writer"].items_out == 5
