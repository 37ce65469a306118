"""Test HTTP code against flaky APIs: fault injection, a fake paginated API, reproducible seeds.

``VirtualClock`` runs sleeps, timeouts and rate limits in virtual time on
asyncio and trio. ``FlakyTransport`` wraps any async httpx transport and injects the faults of a
seeded ``FaultPlan``; ``FakeAPI`` is a deterministic paginated ASGI app to test
against, in-process or on a loopback port with ``open_server``. Hypothesis
strategies live in ``flowgraph.testing.strategies``, imported only on request.
"""

from __future__ import annotations

try:
    import httpx as _httpx  # noqa: F401
except ImportError as exc:
    raise ImportError("flowgraph.testing needs httpx: pip install 'flowgraph[testing]'") from exc

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

for _name in __all__:
    globals()[_name].__module__ = "flowgraph.testing"
del _name
