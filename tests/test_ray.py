"""Sync nodes as tasks on a real local Ray: fg.Ray (#12).

Ray (two CPUs) is started once per session by the ``ray_session`` fixture of
``tests/clusters.py``.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
import remote

import flowgraph as fg
from flowgraph._executors._pickling import RemoteTraceback
from flowgraph.testing import VirtualClock

pytestmark = pytest.mark.xdist_group("ray")  # one cluster per session


@pytest.fixture
def ray(ray_session: Any) -> fg.Ray:
    return fg.Ray()


def _chain(fn: Any, items: list[Any], **options: Any) -> tuple[fg.Graph, list[Any]]:
    g = fg.Graph("ray")
    seen: list[Any] = []
    g.chain(
        g.source(items, name="src"),
        g.transform(fn, name="work", **options),
        g.sink(seen.append, name="out", executor="loop"),
    )
    return g, seen


async def test_calls_run_as_ray_tasks(ray: fg.Ray) -> None:
    """Items go to Ray's worker processes; results come back into the graph; a generator's
    outputs are all sent."""
    g, seen = _chain(remote.pid_and_square, list(range(30)), executor=ray, workers=4)
    result = await g.run()
    assert sorted(square for _, square in seen) == [x * x for x in range(30)]
    assert os.getpid() not in {pid for pid, _ in seen}
    assert result.statistics["work"].items_out == 30
    g, seen = _chain(remote.digits, [123, 45], executor=ray)
    await g.run()
    assert sorted(seen) == [1, 2, 3, 4, 5]


async def test_an_exception_comes_back_as_itself_with_the_remote_traceback(ray: fg.Ray) -> None:
    g, _ = _chain(remote.fail_on_three, [1, 3], executor=ray)
    with pytest.raises(fg.NodeError) as caught:
        await g.run()
    error = caught.value.__cause__
    assert type(error) is ValueError
    assert str(error) == "three is not allowed (got 3)"
    assert isinstance(error.__cause__, RemoteTraceback)
    assert "in fail_on_three" in str(error.__cause__)


async def test_a_call_that_overruns_its_timeout_is_cancelled(ray: fg.Ray) -> None:
    """A task blocked in time.sleep ignores ray.cancel: it is force-cancelled half a second later,
    and the run, which waits up to a second for it, ends without it."""
    g, seen = _chain(
        remote.sleep_for, [0.01, 30.0], executor=ray, workers=2, timeout=0.3, on_error="skip"
    )
    started = time.monotonic()
    result = await g.run()
    assert time.monotonic() - started < 5
    stats = result.statistics["work"]
    assert (stats.skipped, stats.abandoned) == (1, 0)
    assert seen == [0.01]


async def test_timeouts_on_ray_hold_in_virtual_time(
    ray: fg.Ray, virtual_clock: VirtualClock
) -> None:
    g, seen = _chain(remote.spin, [0.1, 30.0], executor=ray, timeout=1, on_error="skip")
    result = await g.run()
    assert seen == [0.1]
    assert result.statistics["work"].skipped == 1
    assert 1.1 <= anyio.current_time() < 10


async def test_a_dead_worker_is_rays_business(ray: fg.Ray, tmp_path: Path) -> None:
    """Ray retries a task whose worker died; with max_retries=0 the item fails at once."""
    g, seen = _chain(remote.die, [("exit", 1, str(tmp_path / "died-once"))], executor=ray)
    await g.run()
    assert seen == [1]
    failures: list[BaseException] = []
    no_retries = fg.Ray(options={"max_retries": 0})
    g, seen = _chain(remote.die, [("exit", 2, "")], executor=no_retries, on_error="skip")
    g.on(fg.ItemFailed)(lambda event: failures.append(event.failure.error))
    await g.run()
    assert seen == []
    assert [type(error).__name__ for error in failures] == ["WorkerCrashedError"]


def test_what_cannot_go_to_ray_is_refused(ray: fg.Ray) -> None:
    lock = threading.Lock()
    with pytest.raises(
        fg.GraphError,
        match=r"^node 'locked' runs on Ray, but its function cannot be pickled \(TypeError: "
        r"cannot pickle '_thread.lock' object\)$",
    ):
        fg.Graph("g").transform(lambda x: lock, name="locked", executor=ray)
    assert repr(fg.Ray("auto", options={"num_cpus": 1}, namespace="etl")) == (
        "Ray('auto', options={'num_cpus': 1}, namespace='etl')"
    )


def test_without_ray_installed_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ImportError, match=r"^fg.Ray needs ray: pip install 'flowgraph\[ray\]'$"):
        fg.Ray()
