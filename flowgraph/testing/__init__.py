"""Test HTTP code against flaky APIs: fault injection, a fake paginated API, reproducible seeds.

``VirtualClock`` runs sleeps, timeouts and rate limits in virtual time on
asyncio and trio. ``FlakyTransport`` wraps any async httpx transport and injects the faults of a
seeded ``FaultPlan``; ``FakeAPI`` is a deterministic paginated ASGI app to test
against, in-process or on a loopback port with ``open_server``. Hypothesis
strategies live in ``flowgraph.testing.strategies``, imported only on request.

Names load on first use, so that the pytest plugin (``flowgraph.testing.pytest_plugin``,
loaded by every pytest run wherever flowgraph is installed) imports nothing heavy, and
works without httpx; using ``FlakyTransport`` without httpx raises an ImportError saying
what to install.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._clock import VirtualClock as VirtualClock
    from ._clock import virtual_time_backend as virtual_time_backend
    from ._fake_api import FakeAPI as FakeAPI
    from ._fake_api import FakeAPIStatistics as FakeAPIStatistics
    from ._fake_api import open_server as open_server
    from ._faults import Fault as Fault
    from ._faults import FaultKind as FaultKind
    from ._faults import FaultPlan as FaultPlan
    from ._faults import Latency as Latency
    from ._faults import ScheduledFault as ScheduledFault
    from ._transport import FlakyTransport as FlakyTransport
    from ._transport import RequestRecord as RequestRecord

_HOMES = {
    "FakeAPI": "_fake_api",
    "FakeAPIStatistics": "_fake_api",
    "Fault": "_faults",
    "FaultKind": "_faults",
    "FaultPlan": "_faults",
    "FlakyTransport": "_transport",
    "Latency": "_faults",
    "RequestRecord": "_transport",
    "ScheduledFault": "_faults",
    "VirtualClock": "_clock",
    "open_server": "_fake_api",
    "virtual_time_backend": "_clock",
}

__all__ = [
    "FakeAPI",
    "FakeAPIStatistics",
    "Fault",
    "FaultKind",
    "FaultPlan",
    "FlakyTransport",
    "Latency",
    "RequestRecord",
    "ScheduledFault",
    "VirtualClock",
    "open_server",
    "virtual_time_backend",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        module = importlib.import_module(f"{__name__}.{home}")
    except ImportError as exc:
        if exc.name != "httpx":
            raise
        raise ImportError(
            "flowgraph.testing needs httpx: pip install 'flowgraph[testing]'"
        ) from exc
    for public, where in _HOMES.items():
        if where == home:
            value = getattr(module, public)
            value.__module__ = __name__
            globals()[public] = value
    return globals()[name]


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
