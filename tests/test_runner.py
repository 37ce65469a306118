"""``fg.run``: the plain-function entry point, with progress and signal handling."""

from __future__ import annotations

import importlib.util
import os
import signal
import threading
from typing import Any

import anyio
import pytest

import flowgraph as fg
from flowgraph._runner import Outcome, execute, run

BACKENDS = [
    pytest.param("asyncio", id="asyncio"),
    pytest.param(
        "trio",
        id="trio",
        marks=pytest.mark.skipif(importlib.util.find_spec("trio") is None, reason="needs trio"),
    ),
]

posix_only = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="POSIX signals")


def counting_graph(items: int = 30) -> fg.Graph:
    graph = fg.Graph("count")

    async def square(x: int) -> int:
        await anyio.sleep(0.001)
        return x * x

    async def drop(x: int) -> None:
        pass

    graph.chain(
        graph.source(range(items), name="numbers"), graph.transform(square), graph.sink(drop)
    )
    return graph


def signalling_graph(*signals: signal.Signals, then_sleep: float = 0.0) -> fg.Graph:
    """An endless source whose sink sends *signals* to this process on its fifth item."""
    graph = fg.Graph("signalled")

    async def forever() -> Any:
        n = 0
        while True:
            yield n
            n += 1
            await anyio.sleep(0.001)

    async def sink(x: int) -> None:
        if x == 5:
            for signum in signals:
                os.kill(os.getpid(), signum)
                await anyio.sleep(0.05)
            await anyio.sleep(then_sleep)

    graph.chain(graph.source(forever), graph.sink(sink, workers=2))
    return graph


@pytest.mark.parametrize("backend", BACKENDS)
def test_run_with_progress_returns_the_result(
    backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``run(graph, progress=True)`` runs to the end and shows the final lines on stderr."""
    result = run(counting_graph(), backend=backend, progress=True)
    assert (result.graph, result.stopped) == ("count", False)
    assert result.stats["drop"].items_in == 30
    err = capsys.readouterr().err
    assert "count: numbers: in=0 out=30 " in err
    assert err.splitlines()[-1].startswith("count: drop: in=30 out=30 errors=0 ")


@pytest.mark.parametrize("backend", BACKENDS)
def test_run_passes_other_options_to_open_run(backend: str) -> None:
    """Hooks, dead letters and the like reach the run unchanged."""
    seen: list[str] = []
    result = run(
        counting_graph(3),
        backend=backend,
        hooks=[(fg.RunFinished, lambda event: seen.append(event.result.graph))],
    )
    assert seen == [result.graph]


@posix_only
@pytest.mark.parametrize("backend", BACKENDS)
def test_signal_stops_the_run_gracefully(backend: str) -> None:
    """SIGTERM stops the sources and lets the items in flight finish: nothing is cancelled."""
    outcome = execute(signalling_graph(signal.SIGTERM), backend=backend, handle_signals=True)
    assert (outcome.signal, outcome.cancelled, outcome.result.stopped) == (
        signal.SIGTERM,
        False,
        True,
    )
    stats = outcome.result.stats
    assert stats["sink"].items_in == stats["forever"].items_out > 5
    assert stats["sink"].in_flight == 0


@posix_only
@pytest.mark.parametrize("backend", BACKENDS)
def test_second_signal_cancels_at_once(backend: str) -> None:
    """A second signal cancels the items in flight without waiting for the grace period."""
    graph = signalling_graph(signal.SIGINT, signal.SIGTERM, then_sleep=60)
    outcome = execute(graph, backend=backend, handle_signals=True, grace=60)
    assert (outcome.signal, outcome.cancelled, outcome.result.stopped) == (
        signal.SIGINT,
        True,
        True,
    )
    assert outcome.result.elapsed < 10
    assert outcome.result.stats["sink"].in_flight == 1


@posix_only
@pytest.mark.parametrize("backend", BACKENDS)
def test_grace_period_running_out_cancels(backend: str) -> None:
    """Items still in flight when the grace period ends are cancelled."""
    graph = signalling_graph(signal.SIGTERM, then_sleep=60)
    outcome = execute(graph, backend=backend, handle_signals=True, grace=0.1)
    assert (outcome.signal, outcome.cancelled) == (signal.SIGTERM, True)
    assert outcome.result.elapsed < 10


@posix_only
@pytest.mark.parametrize("backend", BACKENDS)
def test_signal_handlers_are_restored_after_the_run(backend: str) -> None:
    """The run's handlers are removed when it ends, putting back the ones set before."""

    def handler(signum: int, frame: object) -> None:
        pass

    before = signal.signal(signal.SIGINT, handler), signal.signal(signal.SIGTERM, handler)
    try:
        assert isinstance(execute(counting_graph(3), backend=backend, handle_signals=True), Outcome)
        assert signal.getsignal(signal.SIGINT) is signal.getsignal(signal.SIGTERM) is handler
    finally:
        signal.signal(signal.SIGINT, before[0])
        signal.signal(signal.SIGTERM, before[1])


def test_run_without_signals_reports_no_signal() -> None:
    """A run that finishes its input was neither signalled nor cancelled."""
    outcome = execute(counting_graph(3))
    assert (outcome.signal, outcome.cancelled, outcome.result.stopped) == (None, False, False)


def test_signal_handling_needs_the_main_thread() -> None:
    """Outside the main thread, ``handle_signals=True`` is refused before anything runs."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            run(counting_graph(), handle_signals=True)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    assert len(errors) == 1
    assert isinstance(errors[0], RuntimeError)
    assert str(errors[0]) == (
        "handle_signals=True works only in the main thread, where Python delivers signals"
    )


def test_negative_grace_is_refused() -> None:
    """The grace period is a duration >= 0."""
    with pytest.raises(fg.GraphError, match=r"^grace must be >= 0 \(got -1\)$"):
        run(counting_graph(), handle_signals=True, grace=-1)
