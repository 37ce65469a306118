"""pytest plugin for testing code against flaky APIs: seeded faults, a fake API, virtual time.

pytest loads it through the ``pytest11`` entry point named ``flowgraph``, in
every pytest run of every environment where flowgraph is installed, whether
the project uses flowgraph or not. So it lives in this top-level module, not
in the package (importing ``flowgraph.testing.anything`` would import all of
flowgraph first), and it imports nothing but pytest and the standard library
until a fixture needs more: Hypothesis keeps its ``_hypothesis_pytestplugin``
outside its package for the same reason. It only adds names under its own
prefix (``--flowgraph-seed``, ``flowgraph_*`` markers); ``-p no:flowgraph``
turns it off, ``-p flowgraph`` loads it when plugin autoloading is disabled.

Fixtures:

* ``fault_seed``: the seed of this test's faults: ``--flowgraph-seed=N`` if
  given, else ``@pytest.mark.flowgraph_seed(N)``, else a fresh random seed.
  When a test that used it fails, its report says
  ``flowgraph fault seed: N (rerun with --flowgraph-seed=N)``.
* ``fault_plan``: :func:`default_fault_plan` ``(fault_seed)``: about 25% of
  requests fail, never more than 3 times in a row per URL. Override it.
* ``fake_api``: a :class:`~flowgraph.testing.FakeAPI`; parametrize it
  indirectly with a dict of its options.
* ``flaky_transport``: a :class:`~flowgraph.testing.FlakyTransport` over
  ``httpx.ASGITransport(fake_api)`` applying ``fault_plan``.
* ``virtual_clock``: the :class:`~flowgraph.testing.VirtualClock` the test runs
  under (requesting it puts the test in virtual time).

Virtual time: ``@pytest.mark.flowgraph_virtual_time`` (or requesting
``virtual_clock``) gives the test's ``anyio_backend`` a fresh virtual clock,
keeping its backend and other options, so the test runs on asyncio and trio
alike with sleeps, timeouts, backoffs and rate limits taking no real time. It
needs a function-scoped ``anyio_backend`` fixture (anyio's own default is
module-scoped, since a clock cannot be shared between tests): define one in
``conftest.py``, e.g. ``@pytest.fixture(params=["asyncio", "trio"])`` returning
``request.param``.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Generator

    from flowgraph.testing import FakeAPI, FaultPlan, FlakyTransport, VirtualClock

__all__ = ["DEFAULT_FAULT_PROBABILITIES", "default_fault_plan"]

DEFAULT_FAULT_PROBABILITIES: dict[str, float] = {
    "connect_error": 0.05,
    "read_timeout": 0.05,
    "server_error": 0.10,
    "rate_limited": 0.05,
}
"""The fault kinds and probabilities of the default ``fault_plan``: 25% of requests fail."""

DEFAULT_MAX_CONSECUTIVE = 3
"""No URL fails more often than this in a row, so a client making 4 attempts always succeeds."""

_SEED_KEY = pytest.StashKey[int]()
_CLOCK_KEY = pytest.StashKey["VirtualClock"]()
_VIRTUAL_TIME = "flowgraph_virtual_time"


def default_fault_plan(seed: int) -> FaultPlan:
    """The plan the ``fault_plan`` fixture returns: 25% failures, at most 3 in a row per URL.

    Connection errors, read timeouts, 5xx responses and 429s with ``Retry-After: 1``.
    """
    from flowgraph.testing import FaultPlan

    return FaultPlan(
        seed=seed,
        probabilities=DEFAULT_FAULT_PROBABILITIES,
        max_consecutive=DEFAULT_MAX_CONSECUTIVE,
    )


# -- configuration ----------------------------------------------------------------------


def _seed_option(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise pytest.UsageError(f"--flowgraph-seed must be an integer (got {text!r})") from None


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("flowgraph", "flowgraph fault injection")
    group.addoption(
        "--flowgraph-seed",
        dest="flowgraph_seed",
        metavar="SEED",
        type=_seed_option,
        default=None,
        help="seed of every test's fault_seed fixture, to replay the faults of a failed run",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "flowgraph_seed(seed): the fault_seed of this test, unless --flowgraph-seed is given.",
    )
    config.addinivalue_line(
        "markers",
        f"{_VIRTUAL_TIME}(autojump_threshold=0): run this test's anyio_backend under a "
        "fresh flowgraph.testing.VirtualClock (needs a function-scoped anyio_backend).",
    )


def pytest_report_header(config: pytest.Config) -> str | None:
    seed = config.getoption("flowgraph_seed", None)
    return None if seed is None else f"flowgraph fault seed: {seed} (from --flowgraph-seed)"


# -- fixtures -----------------------------------------------------------------------------


@pytest.fixture
def fault_seed(request: pytest.FixtureRequest) -> int:
    """The seed of this test's faults; a failing test's report shows it."""
    seed: int | None = request.config.getoption("flowgraph_seed", None)
    if seed is None:
        marker = request.node.get_closest_marker("flowgraph_seed")
        if marker is not None:
            seed = _marker_seed(marker)
    if seed is None:
        seed = random.SystemRandom().randrange(2**32)
    request.node.stash[_SEED_KEY] = seed
    request.node.user_properties.append(("flowgraph_fault_seed", seed))
    return seed


def _marker_seed(marker: pytest.Mark) -> int:
    given = [*marker.args, *marker.kwargs.values()]
    seed = given[0] if len(given) == 1 and set(marker.kwargs) <= {"seed"} else None
    if isinstance(seed, bool) or not isinstance(seed, int):
        pytest.fail(
            "@pytest.mark.flowgraph_seed takes one int seed, e.g. flowgraph_seed(1234) "
            f"(got args={marker.args!r}, kwargs={marker.kwargs!r})",
            pytrace=False,
        )
    return seed


@pytest.fixture
def fault_plan(fault_seed: int) -> FaultPlan:
    """The faults to inject: :func:`default_fault_plan` seeded with ``fault_seed``."""
    return default_fault_plan(fault_seed)


@pytest.fixture
def fake_api(request: pytest.FixtureRequest) -> FakeAPI:
    """A fresh ``FakeAPI()``; ``parametrize("fake_api", [{"records": 10}], indirect=True)``."""
    from flowgraph.testing import FakeAPI

    options: Any = getattr(request, "param", None)
    if options is None:
        return FakeAPI()
    if isinstance(options, FakeAPI):
        return options
    if isinstance(options, dict):
        return FakeAPI(**options)
    raise TypeError(
        f"indirect parameters of fake_api must be a dict of FakeAPI options (got {options!r})"
    )


@pytest.fixture
def flaky_transport(fake_api: FakeAPI, fault_plan: FaultPlan) -> FlakyTransport:
    """``FlakyTransport(httpx.ASGITransport(app=fake_api), fault_plan)``, for an AsyncClient."""
    import httpx

    from flowgraph.testing import FlakyTransport

    return FlakyTransport(httpx.ASGITransport(app=fake_api), fault_plan)


@pytest.fixture
def virtual_clock(request: pytest.FixtureRequest, anyio_backend: object) -> VirtualClock:
    """The virtual clock this test runs under; requesting it puts the test in virtual time."""
    clock: VirtualClock | None = request.node.stash.get(_CLOCK_KEY, None)
    if clock is None:
        pytest.fail(_no_clock_message(request.node.nodeid), pytrace=False)
    return clock


def _no_clock_message(nodeid: str) -> str:
    return (
        f"{nodeid}: virtual time needs an async test and a function-scoped anyio_backend "
        "fixture (anyio's default is module-scoped, and a clock cannot be shared between "
        "tests); define one in conftest.py:\n\n"
        '    @pytest.fixture(params=["asyncio", "trio"])\n'
        "    def anyio_backend(request):\n"
        "        return request.param\n"
    )


# -- hooks ----------------------------------------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(
    fixturedef: pytest.FixtureDef[Any], request: Any
) -> Generator[None, Any, Any]:
    """Give a marked test's ``anyio_backend`` a fresh virtual clock."""
    value = yield
    if fixturedef.argname != "anyio_backend":
        return value
    item = request.node
    marker = item.get_closest_marker(_VIRTUAL_TIME)
    if marker is None and not _wants_clock(item):
        return value
    if fixturedef.scope != "function":
        return value  # refused with an explanation in pytest_runtest_setup
    from flowgraph.testing import VirtualClock

    name, options = _backend_and_options(value)
    threshold = 0.0 if marker is None else marker.kwargs.get("autojump_threshold", 0.0)
    clock = VirtualClock(name, autojump_threshold=threshold)
    item.stash[_CLOCK_KEY] = clock
    clock_name, clock_options = clock.anyio_backend
    virtual = (clock_name, {**options, **clock_options})
    assert fixturedef.cached_result is not None
    # The cache is what later requests of anyio_backend (anyio's plugin among them) read.
    fixturedef.cached_result = (virtual, fixturedef.cached_result[1], None)
    return virtual


def _wants_clock(item: Any) -> bool:
    return "virtual_clock" in getattr(item, "fixturenames", ())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    """Refuse a virtual-time test that would silently run in real time."""
    yield
    wanted = item.get_closest_marker(_VIRTUAL_TIME) is not None or _wants_clock(item)
    if wanted and _CLOCK_KEY not in item.stash:
        pytest.fail(_no_clock_message(item.nodeid), pytrace=False)


def _backend_and_options(value: object) -> tuple[str, dict[str, Any]]:
    if isinstance(value, str):
        return value, {}
    if (
        isinstance(value, tuple)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], dict)
    ):
        return value[0], value[1]
    raise TypeError(f"anyio_backend must be a name or a (name, options) tuple (got {value!r})")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Name the fault seed in the report of a failed test that used one."""
    report = yield
    seed = item.stash.get(_SEED_KEY, None)
    if report.failed and seed is not None:
        line = f"flowgraph fault seed: {seed} (rerun with --flowgraph-seed={seed})"
        longrepr: Any = report.longrepr
        if hasattr(longrepr, "addsection"):
            longrepr.addsection("flowgraph", line)
        else:
            report.sections.append(("flowgraph", line))
    return report
