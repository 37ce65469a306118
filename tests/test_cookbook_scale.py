"""The cookbook's "Scale only the middle" recipe: one graph on processes, Dask and Ray (#17).

examples/scale_the_middle.py counts the primes below a limit, block by block,
in a layer of 8 workers. Each executor's run must collect every block once,
with the count a sieve of Eratosthenes gives. The Dask and Ray tests use the
session clusters of tests/clusters.py, in the xdist groups of test_dask.py and
test_ray.py, so each cluster starts once.
"""

from __future__ import annotations

import importlib
import math
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from test_cookbook import EXAMPLES

import flowgraph as fg

LIMIT, WIDTH = 200_000, 5_000


@pytest.fixture(scope="module")
def middle() -> Iterator[ModuleType]:
    """The recipe's module, imported by its own name, as worker processes import it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(EXAMPLES))  # passed on to the processes the tests start
        yield importlib.import_module("scale_the_middle")


def sieve_counts(limit: int, width: int) -> dict[int, int]:
    """The primes of each block below *limit*, by block start: what the layer must find."""
    sieve = bytearray([1]) * limit
    sieve[:2] = b"\0\0"
    for n in range(2, math.isqrt(limit - 1) + 1):
        if sieve[n]:
            sieve[n * n :: n] = bytes(len(range(n * n, limit, n)))
    return {start: sum(sieve[start : start + width]) for start in range(0, limit, width)}


def check_run(result: fg.RunResult, counts: dict[int, int]) -> None:
    assert counts == sieve_counts(LIMIT, WIDTH)  # every block, each with its own count
    assert sum(counts.values()) == 17_984  # the primes below 200,000
    layer = result.statistics["count_primes"]
    assert (layer.items_in, layer.items_out, layer.workers) == (40, 40, 8)
    assert result.statistics["collect"].items_in == 40  # each block collected once


async def test_the_layer_runs_in_worker_processes(middle: ModuleType) -> None:
    """On a pool of two processes, every block is counted once and correctly."""
    pool = fg.Processes(2)
    try:
        graph, counts = middle.build_graph(pool, limit=LIMIT, width=WIDTH)
        check_run(await graph.run(), counts)
    finally:
        pool.close()


@pytest.mark.xdist_group("dask")
async def test_the_same_graph_runs_on_dask(middle: ModuleType, dask_client: Any) -> None:
    """Only the executor changes: the layer's calls are tasks of a Dask LocalCluster."""
    import cloudpickle

    cloudpickle.register_pickle_by_value(middle)  # the workers need not import examples/
    graph, counts = middle.build_graph(fg.Dask(dask_client), limit=LIMIT, width=WIDTH)
    check_run(await graph.run(), counts)


@pytest.mark.xdist_group("ray")
async def test_the_same_graph_runs_on_ray(middle: ModuleType, ray_session: Any) -> None:
    """Only the executor changes: the layer's calls are tasks of a local Ray."""
    ray_session.cloudpickle.register_pickle_by_value(middle)
    graph, counts = middle.build_graph(fg.Ray(), limit=LIMIT, width=WIDTH)
    check_run(await graph.run(), counts)


def run_script(
    *args: str, cwd: Path, blocked: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the script as a reader would; with *blocked*, as if that module were not installed."""
    path = str(EXAMPLES / "scale_the_middle.py")
    code = (
        f"import runpy, sys; sys.modules[{blocked!r}] = None; sys.argv = {[path, *args]!r}; "
        f"runpy.run_path({path!r}, run_name='__main__')"
    )
    command = [sys.executable, "-c", code] if blocked else [sys.executable, path, *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=60)


def test_the_script_counts_on_processes_and_shows_its_progress(tmp_path: Path) -> None:
    """By default the script runs on processes, prints the count, and its progress on stderr."""
    proc = run_script("--limit", str(LIMIT), "--width", str(WIDTH), "--cpus", "2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    first, second = proc.stdout.splitlines()
    assert first == "primes below 200,000: 17,984, in 40 blocks"
    assert re.fullmatch(
        r"on processes, 2 worker processes, 8 blocks at a time: [\d.]+s, [\d,]+ blocks/s", second
    )
    # Not a terminal: the progress display prints the final statistics as plain lines.
    assert "primes: count_primes: in=40 out=40 errors=0 " in proc.stderr
    assert "primes: collect: in=40 out=40 " in proc.stderr


@pytest.mark.parametrize(
    ("executor", "module", "message"),
    [
        (
            "dask",
            "distributed",
            "--executor dask needs Dask's distributed: pip install 'flowgraph[dask]'",
        ),
        ("ray", "ray", "--executor ray needs Ray: pip install 'flowgraph[ray]'"),
    ],
    ids=["dask", "ray"],
)
def test_a_missing_extra_is_named_with_its_install_command(
    executor: str, module: str, message: str, tmp_path: Path
) -> None:
    """Without Dask or Ray installed, --executor says what to install, and nothing runs."""
    proc = run_script("--executor", executor, cwd=tmp_path, blocked=module)
    assert (proc.returncode, proc.stdout, proc.stderr) == (1, "", message + "\n")
