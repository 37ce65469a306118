"""``fg.run``: the plain-function entry point, with state, progress and signal handling."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from blocking import BlockingCalls

import flowgraph as fg
from flowgraph._runner._run import (
    DEFAULT_CHECKPOINT_EVERY,
    DEFAULT_CHECKPOINT_INTERVAL,
    Outcome,
    execute,
    run,
)
from flowgraph._runner._signals import StopBeforeStart, catch_stop_signals, hold_stop_signals
from flowgraph._stores import open_store

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


def signalling_graph(
    *signals: signal.Signals, then_sleep: float = 0.0, through: Callable[[int], int] | None = None
) -> fg.Graph:
    """An endless source whose sink sends *signals* to this process on its fifth item.

    *through*, if given, is a sync transform with 4 workers between them.
    """
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

    middle = [] if through is None else [graph.transform(through, workers=4, name="through")]
    graph.chain(graph.source(forever), *middle, graph.sink(sink, workers=2))
    return graph


def test_run_with_progress_returns_the_result(
    backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``run(graph, progress=True)`` runs to the end and shows the final lines on stderr."""
    result = run(counting_graph(), backend=backend, progress=True)
    assert (result.graph, result.stopped) == ("count", False)
    assert result.statistics["drop"].items_in == 30
    err = capsys.readouterr().err
    assert "count: numbers: in=0 out=30 " in err
    assert err.splitlines()[-1].startswith("count: drop: in=30 out=30 errors=0 ")


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
def test_signal_stops_the_run_gracefully(backend: str) -> None:
    """SIGTERM stops the sources and lets the items in flight finish: nothing is cancelled."""
    outcome = execute(signalling_graph(signal.SIGTERM), backend=backend, handle_signals=True)
    assert (outcome.signal, outcome.cancelled, outcome.result.stopped) == (
        signal.SIGTERM,
        False,
        True,
    )
    stats = outcome.result.statistics
    assert stats["sink"].items_in == stats["forever"].items_out > 5
    assert stats["sink"].busy == 0


@posix_only
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
    assert outcome.result.statistics["sink"].busy == 1


@posix_only
def test_grace_period_running_out_cancels(backend: str) -> None:
    """Items still in flight when the grace period ends are cancelled."""
    graph = signalling_graph(signal.SIGTERM, then_sleep=60)
    outcome = execute(graph, backend=backend, handle_signals=True, grace=0.1)
    assert (outcome.signal, outcome.cancelled) == (signal.SIGTERM, True)
    assert outcome.result.elapsed < 10


@posix_only
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


@posix_only
def test_ctrl_c_without_signal_handling_raises_keyboard_interrupt_after_the_threads(
    backend: str,
) -> None:
    """Ctrl-C interrupts a plain ``fg.run``: KeyboardInterrupt, unwrapped, once threads are done."""
    blocking = BlockingCalls()
    graph = signalling_graph(signal.SIGINT, then_sleep=60, through=blocking)
    began = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run(graph, backend=backend)
    assert time.monotonic() - began < 10
    assert blocking.started == blocking.finished > 5


async def test_run_inside_a_running_loop_points_to_await(
    anyio_backend: tuple[str, dict[str, Any]],
) -> None:
    """``fg.run`` inside async code says to ``await graph.run()`` instead, on either backend."""
    name, _ = anyio_backend
    graph = counting_graph()
    with pytest.raises(
        RuntimeError,
        match=rf"^fg\.run\(\) starts an event loop, but {name} is already running in this "
        r"thread: in async code, use 'await graph\.run\(\)' or 'async with fg\.open_run\(graph\)'$",
    ):
        fg.run(graph)
    assert (await graph.run()).statistics["drop"].items_in == 30


@posix_only
def test_signals_held_before_the_run_stop_it_at_once(backend: str) -> None:
    """A stop signal that came before the run (held for it) stops the run as it starts."""
    with hold_stop_signals() as received:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)
        assert received == [signal.SIGTERM, signal.SIGTERM]
        graph = signalling_graph()  # endless, and never signals itself
        outcome = execute(graph, backend=backend, handle_signals=True, received=received)
    assert (outcome.signal, outcome.cancelled, outcome.result.stopped) == (
        signal.SIGTERM,
        False,
        True,
    )
    assert outcome.result.statistics["forever"].items_out <= 1


@posix_only
def test_catch_stop_signals_raises_and_restores_the_handlers() -> None:
    """While the command loads its graph, a stop signal raises StopBeforeStart."""
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)

    def load_slowly() -> None:
        with catch_stop_signals():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)  # interrupted by the handler

    with pytest.raises(StopBeforeStart) as caught:
        load_slowly()
    assert caught.value.signal is signal.SIGINT
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


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


# -- state=: one store for checkpoints and dead letters -------------------------------


def checkpointed_graph(limit: int, resumed: list[Any], failing: int | None = None) -> fg.Graph:
    """Offsets 0..limit-1 from a checkpointed source; *failing* is dead-lettered."""
    graph = fg.Graph("offsets")

    async def offsets(after: int | None) -> AsyncIterator[fg.Positioned]:
        resumed.append(after)
        for n in range(0 if after is None else after + 1, limit):
            yield fg.Positioned(n, n)

    def check(n: int) -> int:
        if n == failing:
            raise ValueError(f"bad {n}")
        return n

    async def drop(n: int) -> None:
        pass

    graph.chain(
        graph.source(offsets, checkpoint=True),
        graph.transform(check, on_error="dead_letter"),
        graph.sink(drop),
    )
    return graph


def stored(db: Path) -> tuple[dict[str, Any], list[Any]]:
    """The checkpoints of graph 'offsets' in *db*, and the items of its dead letters."""

    async def read() -> tuple[dict[str, Any], list[Any]]:
        letters = await fg.DeadLetters(db).list()
        return await fg.Checkpoints(db).load("offsets"), [d.item for d in letters]

    return anyio.run(read)


def test_state_opens_one_store_for_checkpoints_and_dead_letters(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``state=`` opens its store once; checkpoints and dead letters both land in it."""
    opened: list[object] = []

    def counting_open_store(url: Any) -> Any:
        opened.append(url)
        return open_store(url)

    monkeypatch.setattr("flowgraph._runner._run.open_store", counting_open_store)
    db = tmp_path / "state.db"
    run(checkpointed_graph(10, [], failing=4), backend=backend, state=db, checkpoint_every=3)
    assert opened == [db]
    assert stored(db) == ({"offsets": 9}, [4])


def test_state_resumes_after_the_last_commit(tmp_path: Path) -> None:
    """A second run on the same ``state=`` starts its checkpointed source after the first's end."""
    resumed: list[Any] = []
    url = f"sqlite:///{tmp_path / 'state.db'}"
    assert run(checkpointed_graph(5, resumed), state=url).statistics["drop"].items_in == 5
    assert run(checkpointed_graph(8, resumed), state=url).statistics["drop"].items_in == 3
    assert resumed == [None, 4]


def test_explicit_dead_letters_take_the_place_of_the_state_store(tmp_path: Path) -> None:
    """``dead_letters=`` beside ``state=`` keeps the dead letters; checkpoints stay in the state."""
    state, other = tmp_path / "state.db", tmp_path / "other.db"
    graph = checkpointed_graph(6, [], failing=2)
    run(graph, state=state, dead_letters=fg.DeadLetters(other))
    assert stored(state) == ({"offsets": 5}, [])
    assert stored(other) == ({}, [2])


@posix_only
def test_graceful_stop_commits_the_last_checkpoint(backend: str, tmp_path: Path) -> None:
    """After a stop signal every consumed item is acknowledged, and the final commit records it."""
    graph = fg.Graph("offsets")
    consumed: list[int] = []

    async def forever(after: int | None) -> AsyncIterator[fg.Positioned]:
        n = 0
        while True:
            yield fg.Positioned(n, n)
            n += 1
            await anyio.sleep(0.001)

    async def sink(n: int) -> None:
        consumed.append(n)
        if n == 5:
            os.kill(os.getpid(), signal.SIGTERM)

    graph.chain(graph.source(forever, checkpoint=True), graph.sink(sink, workers=2))
    db = tmp_path / "state.db"
    # Commits only when the run ends: every= and interval= never come due.
    outcome = execute(
        graph,
        backend=backend,
        handle_signals=True,
        state=db,
        checkpoint_every=10_000,
        checkpoint_interval=3600,
    )
    assert (outcome.signal, outcome.cancelled) == (signal.SIGTERM, False)
    assert sorted(consumed) == list(range(len(consumed)))
    assert stored(db) == ({"forever": len(consumed) - 1}, [])


def test_bad_state_url_fails_before_the_run_starts() -> None:
    """A ``state=`` that is not a store URL raises ValueError, and no node is called."""
    resumed: list[Any] = []
    with pytest.raises(ValueError, match=r"^unsupported state store URL scheme 'http'; "):
        run(checkpointed_graph(5, resumed), state="http://example.com/state")
    assert resumed == []


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ({"checkpoint_every": 0}, r"^checkpoint_every must be an int >= 1 \(got 0\)$"),
        ({"checkpoint_interval": 0}, r"^checkpoint_interval must be > 0 \(got 0\)$"),
    ],
)
def test_checkpoint_settings_are_checked(option: dict[str, Any], message: str) -> None:
    """``checkpoint_every`` is an int >= 1 and ``checkpoint_interval`` a duration > 0."""
    with pytest.raises(fg.GraphError, match=message):
        run(counting_graph(), **option)


def test_checkpoint_defaults_are_those_of_checkpoints() -> None:
    """``run``'s checkpoint defaults are ``fg.Checkpoints``' own."""
    defaults = fg.Checkpoints()
    assert (defaults.every, defaults.interval) == (
        DEFAULT_CHECKPOINT_EVERY,
        DEFAULT_CHECKPOINT_INTERVAL,
    )
