"""The benchmark scripts stay runnable as the engine changes under them.

They are not run here (they take minutes); each must import, and the one that
carries a copy of the worker loop (``bench_stats``) must still run a graph with it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from flowgraph._core import _workers

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def test_every_benchmark_script_imports() -> None:
    names = sorted(path.stem for path in BENCHMARKS.glob("*.py"))
    assert {"bench_core", "bench_scale", "bench_stats", "soak"} <= set(names)
    code = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    done = subprocess.run(
        [sys.executable, "-c", code, *names], cwd=BENCHMARKS, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


def test_the_stripped_worker_loop_of_bench_stats_still_runs_w1(
    monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import bench_stats  # type: ignore[import-not-found]
    from _pipelines import Tally, linear_graph  # type: ignore[import-not-found]

    monkeypatch.setattr(_workers, "_consume", bench_stats.consume_without_statistics)
    tally = Tally()
    anyio.run(linear_graph(5_000, tally).run, backend=backend)
    tally.check(5_000, 5_000 * 4_999 // 2)
