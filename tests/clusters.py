"""A Dask LocalCluster and a local Ray for the tests, each started once per session (#12).

Loaded as a pytest plugin by ``conftest.py``. Where dask.distributed or ray is
not installed the tests that need it are skipped, unless
``FLOWGRAPH_REQUIRE_EXTRAS=1`` (as in CI), where they fail instead. Both
clusters are small (two single-threaded worker processes, two CPUs) and keep
the functions of ``tests/remote.py`` pickled by value, so workers need not
import the tests.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
import remote


def require(module: str, extra: str) -> ModuleType:
    """Import *module*, or skip the test (fail it where extras are required)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        message = f"{module} is not installed: pip install 'flowgraph[{extra}]'"
        if os.environ.get("FLOWGRAPH_REQUIRE_EXTRAS") == "1":
            pytest.fail(f"{message} (FLOWGRAPH_REQUIRE_EXTRAS=1): {exc}")
        pytest.skip(message)


@pytest.fixture(scope="session")
def dask_client() -> Iterator[Any]:
    """A client of a LocalCluster of two worker processes with one thread each.

    A task whose worker dies is given one more worker (``allowed-failures`` 1),
    so a lost worker's task is run again, and a task that kills every worker
    fails soon with ``KilledWorker``.
    """
    distributed = require("distributed", "dask")
    import cloudpickle
    import dask

    cloudpickle.register_pickle_by_value(remote)
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        cluster = distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0"
        )
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


@pytest.fixture(scope="session")
def ray_session() -> Iterator[Any]:
    """A local Ray with two CPUs, or the Ray this process is already connected to."""
    ray = require("ray", "ray")
    ray.cloudpickle.register_pickle_by_value(remote)
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    if started:
        ray.shutdown()
