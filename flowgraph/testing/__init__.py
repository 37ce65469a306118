"""Test HTTP code against flaky APIs: fault injection, a fake API, reproducible seeds.

``VirtualClock`` runs any anyio code in virtual time on asyncio and trio.
``FakeAPI`` serves your own routes and records (or ready-made paginated ones) as
an ASGI app or directly as an httpx transport, async and sync, and records every
request for assertions. ``FlakyTransport`` wraps any httpx transport and injects
the faults of a seeded ``FaultPlan`` the way a network fails. Hypothesis
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
    from ._faults import Fault as Fault
    from ._faults import FaultKind as FaultKind
    from ._faults import Latency as Latency
    from ._faults import ScheduledFault as ScheduledFault
    from ._match import PathPattern as PathPattern
    from ._plan import FaultPlan as FaultPlan
    from ._records import RequestLog as RequestLog
    from ._records import RequestRecord as RequestRecord
    from ._routes import Collection as Collection
    from ._routes import Route as Route
    from ._server import open_server as open_server
    from ._transport import FlakyTransport as FlakyTransport

_HOMES = {
    "Collection": "_routes",
    "FakeAPI": "_fake_api",
    "FakeAPIStatistics": "_fake_api",
    "Fault": "_faults",
    "FaultKind": "_faults",
    "FaultPlan": "_plan",
    "FlakyTransport": "_transport",
    "Latency": "_faults",
    "PathPattern": "_match",
    "RequestLog": "_records",
    "RequestRecord": "_records",
    "Route": "_routes",
    "ScheduledFault": "_faults",
    "VirtualClock": "_clock",
    "open_server": "_server",
    "virtual_time_backend": "_clock",
}

__all__ = [
    "Collection",
    "FakeAPI",
    "FakeAPIStatistics",
    "Fault",
    "FaultKind",
    "FaultPlan",
    "FlakyTransport",
    "Latency",
    "PathPattern",
    "RequestLog",
    "RequestRecord",
    "Route",
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
            if isinstance(value, type) or callable(value):
                value.__module__ = __name__
            globals()[public] = value
    return globals()[name]


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
